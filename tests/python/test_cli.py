"""The command line: ssp-server / ssp-client (console scripts and ``python -m ssp_server`` /
``python -m ssp_client``) as subprocesses, as users and the benchmarks run them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from conftest import (
    AWKWARD_NAMES,
    CHUNK_SIZE,
    HANG_S,
    HOST,
    SECRET,
    SIZES,
    assert_synced,
    cli_env,
    client_command,
    free_port,
    one_error_line,
    payload,
    run_client,
    write_file,
)

MIB = 1 << 20
LAUNCHERS = ["console", "module", "script"]


@pytest.mark.parametrize("size", SIZES)
def test_cli_file_of_each_interesting_size(tmp_path, cli_server, size):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, f"file-{size}.bin", payload(size))
    server = cli_server(src)

    done = run_client(dst, server.port)

    assert done.returncode == 0, done.stderr
    assert_synced(src, dst)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_cli_unicode_nested_names_and_summary_line(tmp_path, cli_server, launcher):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i, name in enumerate(AWKWARD_NAMES):
        write_file(src, name, payload(50 + i, seed=i), executable=i % 2 == 0)
    server = cli_server(src, launcher=launcher)

    done = run_client(dst, server.port, launcher=launcher)

    assert done.returncode == 0, done.stderr
    assert_synced(src, dst)
    # Not a terminal: no progress bar, one summary line with files, bytes and seconds.
    assert done.stderr == ""
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1, done.stdout
    assert f"{len(AWKWARD_NAMES)} files" in summary[0]
    assert re.search(r"\d+ bytes .* in \d+\.\d+ s\b", summary[0]), summary[0]


def test_cli_100_mib_file(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "big.bin", payload(100 * MIB))
    server = cli_server(src)

    done = run_client(dst, server.port)

    assert done.returncode == 0, done.stderr
    assert_synced(src, dst)


def test_cli_1000_small_files_then_noop_resync(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i in range(1000):
        write_file(src, f"d{i % 20}/f{i}.txt", payload(i % 50 + 1, seed=i))
    server = cli_server(src)

    first = run_client(dst, server.port)
    second = run_client(dst, server.port)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert_synced(src, dst)
    assert "synced 1000 files" in first.stdout
    assert "synced 0 files" in second.stdout


def test_cli_chunk_size_option(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "f.bin", payload(3 * MIB + 5))
    server = cli_server(src, extra=("--chunk-size", "64K"))

    done = run_client(dst, server.port, extra=("--chunk-size", "131072"))

    assert done.returncode == 0, done.stderr
    assert_synced(src, dst)


def test_cli_secret_from_file_and_from_environment(tmp_path, cli_server):
    src = tmp_path / "server"
    write_file(src, "s.txt", b"secret stuff")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)  # as ssh wants of a key: see test_secrets.py
    server = cli_server(src, secret=None, extra=("--secret-file", str(secret_file)))
    assert SECRET not in " ".join(server.proc.args)

    by_file = run_client(
        tmp_path / "c1", server.port, secret=None, extra=("--secret-file", str(secret_file))
    )
    by_env = run_client(tmp_path / "c2", server.port, secret=None, env=cli_env(SSP_SECRET=SECRET))
    wrong_env = run_client(
        tmp_path / "c3", server.port, secret=None, env=cli_env(SSP_SECRET="wrong")
    )

    assert by_file.returncode == 0, by_file.stderr
    assert by_env.returncode == 0, by_env.stderr
    assert wrong_env.returncode != 0
    assert_synced(src, tmp_path / "c1")
    assert_synced(src, tmp_path / "c2")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_cli_wrong_secret_fails_with_one_line(tmp_path, cli_server, launcher):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "private.txt", b"private")
    server = cli_server(src)

    done = run_client(dst, server.port, secret="guess", launcher=launcher)

    assert done.returncode != 0
    line = one_error_line(done.stderr, "ssp-client")
    assert "auth" in line.lower() or "secret" in line.lower(), line
    assert not (dst / "private.txt").exists()
    # The server shrugs it off and keeps serving.
    assert server.proc.poll() is None
    assert run_client(dst, server.port).returncode == 0


def test_cli_no_server_fails_with_one_line(tmp_path):
    done = run_client(tmp_path / "client", free_port())

    assert done.returncode != 0
    one_error_line(done.stderr, "ssp-client")


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"", "closed the connection during the handshake"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not answer like an SSP server"),
    ],
    ids=["hangs-up", "speaks-http"],
)
def test_cli_pointed_at_something_else_says_so(tmp_path, answer, says):
    """A wrong port is the usual reason for a non-SSP answer: the line names the address."""
    with socket.socket() as other:
        other.bind((HOST, 0))
        other.listen()
        port = other.getsockname()[1]

        def answer_once() -> None:
            conn, _ = other.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(answer)

        responder = threading.Thread(target=answer_once, daemon=True)
        responder.start()
        done = run_client(tmp_path / "client", port)
        responder.join(HANG_S)

    assert done.returncode != 0
    line = one_error_line(done.stderr, "ssp-client")
    assert says in line and f"{HOST}:{port}" in line, line


def test_cli_port_in_use_names_the_port(tmp_path):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ssp_server", SECRET, str(tmp_path / "srv"), HOST, str(port)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )

    assert done.returncode != 0
    line = one_error_line(done.stderr, "ssp-server")
    assert str(port) in line


def test_cli_server_folder_that_is_a_file(tmp_path):
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("x")

    done = subprocess.run(
        [str(sys.executable), "-m", "ssp_server", SECRET, str(not_a_folder), HOST, "0"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )

    assert done.returncode != 0
    line = one_error_line(done.stderr, "ssp-server")
    assert str(not_a_folder) in line


def test_cli_server_creates_missing_folder(tmp_path, cli_server):
    folder = tmp_path / "new" / "folder"
    server = cli_server(folder)
    assert folder.is_dir()
    assert str(folder) in server.line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_server_stops_cleanly_on_signal(tmp_path, cli_server, signum):
    src = tmp_path / "server"
    write_file(src, "x.txt", b"x")
    server = cli_server(src)
    assert run_client(tmp_path / "client", server.port).returncode == 0

    code, stderr = server.terminate(signum)

    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_cli_usage_errors_exit_2(tmp_path):
    for args in (
        [],
        ["only-a-secret"],
        [SECRET, str(tmp_path), HOST, "not-a-port"],
        [SECRET, str(tmp_path), HOST, "70000"],
        ["--chunk-size", "1", SECRET, str(tmp_path)],
        ["--chunk-size", "lots", SECRET, str(tmp_path)],
        ["--secret-file", str(tmp_path / "missing"), str(tmp_path)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ssp_client", *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "usage:" in done.stderr


def test_python_m_ssp_subcommands(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "m.txt", b"via python -m ssp")
    server = cli_server(src)

    done = subprocess.run(
        [sys.executable, "-m", "ssp", "client", SECRET, str(dst), HOST, str(server.port)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert_synced(src, dst)


def test_cli_progress_bar_on_a_terminal(tmp_path, cli_server):
    import fcntl
    import os
    import pty
    import struct
    import termios

    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "bar.bin", payload(32 * MIB))
    server = cli_server(src)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ssp_client", SECRET, str(dst), HOST, str(server.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=cli_env(),
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(300)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    terminal = b"".join(chunks).decode("utf-8", "replace")

    assert code == 0, terminal
    assert_synced(src, dst)
    # tqdm's bar: bytes with a unit, a rate, and the files counter.
    assert "32.0M" in terminal or "32M" in terminal, terminal
    assert "/s" in terminal, terminal
    assert "1/1 files" in terminal, terminal


def test_cli_resync_after_changes_keeps_client_only_files(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "bin/tool.sh", b"#!/bin/sh\n", mtime=1_500_000_000.25, executable=True)
    write_file(src, "doc.txt", b"first", mtime=1_600_000_000.5)
    mine = {"local/only.txt": b"mine", "doc.txt.bak": b"backup"}
    for rel, data in mine.items():
        write_file(dst, rel, data)
    server = cli_server(src)
    assert run_client(dst, server.port).returncode == 0

    write_file(src, "doc.txt", b"second", mtime=1_600_000_100.75)
    write_file(src, "new/file.bin", payload(CHUNK_SIZE + 3))
    (src / "bin/tool.sh").chmod(0o644)
    again = run_client(dst, server.port)

    assert again.returncode == 0, again.stderr
    assert_synced(src, dst, client_only=mine)
    for rel, data in mine.items():
        assert (dst / rel).read_bytes() == data


def test_cli_several_clients_at_once(tmp_path, cli_server):
    src = tmp_path / "server"
    write_file(src, "big.bin", payload(16 * MIB))
    for i in range(30):
        write_file(src, f"small/{i}.txt", payload(i + 1, seed=i))
    server = cli_server(src)
    dsts = [tmp_path / f"client{i}" for i in range(3)]

    procs = [
        subprocess.Popen(
            [*client_command("console"), SECRET, str(d), HOST, str(server.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for d in dsts
    ]
    results = [(p.wait(300), p.stderr.read() if p.stderr else "") for p in procs]

    for proc in procs:
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert [code for code, _ in results] == [0] * len(dsts), results
    for dst in dsts:
        assert_synced(src, dst)


def test_cli_client_interrupted_exits_130_with_one_line(tmp_path):
    """Ctrl-C while the engine blocks (here: a peer that accepts and never answers) stops the
    client at once with one line and status 130, leaving nothing behind."""
    import time

    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen()
        port = silent.getsockname()[1]
        dst = tmp_path / "client"
        proc = subprocess.Popen(
            [*client_command("console"), SECRET, str(dst), HOST, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        peer, _ = silent.accept()  # the client is now waiting for our HELLO
        with peer:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=20)

    assert proc.returncode == 130, stderr
    assert "interrupted" in one_error_line(stderr, "ssp-client")


GIB = 1 << 30


@pytest.mark.skipif(
    os.environ.get("SSP_LARGE_TESTS") != "1",
    reason="soak: set SSP_LARGE_TESTS=1 to sync a 4 GiB + 1 MiB file (writes ~4 GiB to disk)",
)
def test_cli_file_over_4_gib(tmp_path, cli_server):
    """Offsets past 2**32 survive the wire, the writer and the hash check."""
    import hashlib

    src = tmp_path / "server"
    src.mkdir()
    big = src / "big.bin"
    with open(big, "wb") as f:  # sparse, with real data on both sides of the 4 GiB mark
        f.truncate(4 * GIB + MIB)
        for offset in (0, 4 * GIB - 7, 4 * GIB + MIB - 100):
            f.seek(offset)
            f.write(payload(64, seed=offset))
    server = cli_server(src)

    done = run_client(tmp_path / "client", server.port)

    assert done.returncode == 0, done.stderr
    copy = tmp_path / "client" / "big.bin"
    assert copy.stat().st_size == big.stat().st_size

    def digest(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * MIB):
                h.update(block)
        return h.hexdigest()

    assert digest(copy) == digest(big)
