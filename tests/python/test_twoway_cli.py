"""Two-way sync on the command line: --mode, the summary of conflicts and entries not synced
(exit 23), --list-versions / --restore on the local folder, ssp-server --read-only, the
mass-deletion guard and --keep-versions."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest

from conftest import (
    HANG_S,
    SECRET,
    cli_env,
    client_command,
    one_error_line,
    run_client,
    snapshot,
    write_file,
)

PARTIAL = 23


def local(folder, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
    """``ssp-client [SECRET] FOLDER ARGS``: the local commands, no server."""
    command = [*client_command("console"), *([secret] if secret else []), str(folder), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=HANG_S, check=False
    )


# (mode, server-only file reaches the client, client-only file reaches the server)
MODES = [("two-way", True, True), ("pull", True, False), ("push", False, True)]


@pytest.mark.parametrize(("mode", "to_client", "to_server"), MODES)
def test_cli_mode_flag(tmp_path, cli_server, mode, to_client, to_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "from-server.txt", b"s")
    write_file(dst, "from-client.txt", b"c")
    server = cli_server(src)

    done = run_client(dst, server.port, extra=("--mode", mode))

    assert done.returncode == 0, done.stderr
    assert ("from-server.txt" in snapshot(dst)) is to_client
    assert ("from-client.txt" in snapshot(src)) is to_server
    sent = ", 1 sent" in done.stdout
    assert sent is to_server, done.stdout


def test_cli_summary_names_each_conflict_with_its_copy(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "notes.txt", b"original")
    server = cli_server(src)
    assert run_client(dst, server.port).returncode == 0
    write_file(src, "notes.txt", b"server version")
    write_file(dst, "notes.txt", b"client version, longer")

    done = run_client(dst, server.port)

    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if "conflict" in line]
    assert line.startswith("ssp-client: conflict: notes.txt changed on both sides")
    assert "notes.sync-conflict-" in line


def test_cli_names_every_entry_not_synced_escaped_and_exits_23(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    dst.mkdir()
    # An outside symlink whose name carries an escape sequence: named, reason given, escaped.
    os.symlink("/etc/passwd", dst / "evil\x1b[2Jname")
    server = cli_server(src)

    done = run_client(dst, server.port)

    assert done.returncode == PARTIAL, (done.stdout, done.stderr)
    assert "\x1b" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if "not synced" in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ssp-client: not synced: evil\\u{1b}[2Jname: ")
    assert "symlink" in lines[0]
    # The rest was synced all the same.
    assert "a.txt" in snapshot(dst)
    assert "synced 1 files" in done.stdout


def test_cli_list_versions_and_restore_work_on_the_folder_alone(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"first draft")
    server = cli_server(src)
    assert run_client(dst, server.port).returncode == 0
    write_file(src, "doc.txt", b"second draft, longer")
    assert run_client(dst, server.port).returncode == 0
    server.kill()  # nothing below needs it

    listed = local(dst, "--list-versions")
    by_path = local(dst, "--list-versions", "doc.txt", secret=SECRET)
    none = local(dst, "--list-versions", "other.txt")

    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    kept, size, path = line.split()
    assert (size, path) == (str(len(b"first draft")), "doc.txt")
    assert dt.datetime.fromisoformat(kept).tzinfo is not None
    assert by_path.stdout == listed.stdout
    assert none.returncode == 0 and none.stdout == ""
    assert "no versions kept of other.txt" in none.stderr

    # --at takes the listed time (ISO) or unix seconds; before the first version: nothing.
    too_early = local(dst, "--restore", "doc.txt", "--at", "2000-01-01T00:00")
    assert too_early.returncode == 1
    assert (dst / "doc.txt").read_bytes() == b"second draft, longer"
    restored = local(dst, "--restore", "doc.txt", "--at", kept)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("ssp-client: restored doc.txt")
    assert (dst / "doc.txt").read_bytes() == b"first draft"
    again = local(
        dst,
        "--restore",
        "doc.txt",
        "--at",
        str(dt.datetime.fromisoformat(kept).timestamp() + 3600 * 24),
    )
    assert again.returncode == 0, again.stderr
    # The newest version now is the draft replaced by the first restore.
    assert (dst / "doc.txt").read_bytes() == b"second draft, longer"


def test_cli_local_commands_refuse_a_missing_folder_and_bad_times(tmp_path):
    missing = local(tmp_path / "nowhere", "--list-versions")
    assert missing.returncode == 1
    assert "does not exist" in one_error_line(missing.stderr, "ssp-client")
    assert not (tmp_path / "nowhere").exists()
    for args in (
        ["--restore", "a.txt", "--at", "yesterday"],
        ["--at", "0"],
        ["--list-versions", "--restore", "a.txt"],
        ["--mode", "mirror"],
        ["--keep-versions", "-1"],
    ):
        done = local(tmp_path, *args, secret=SECRET)
        assert done.returncode == 2, (args, done.stderr)
        assert "usage:" in done.stderr


def test_cli_read_only_server_refuses_a_push(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "served.txt", b"s")
    write_file(dst, "mine.txt", b"m")
    server = cli_server(src, extra=("--read-only",))

    pushed = run_client(dst, server.port, extra=("--mode", "push"))
    two_way = run_client(dst, server.port)

    assert pushed.returncode == 1
    assert "read-only" in one_error_line(pushed.stderr, "ssp-client")
    assert "mine.txt" not in snapshot(src)
    # Two-way only receives, and says the folder's own changes were not sent.
    assert two_way.returncode == PARTIAL, two_way.stderr
    assert "served.txt" in snapshot(dst)
    assert "not synced: (the whole folder): the server is read-only" in two_way.stderr


def test_cli_mass_deletion_guard_and_its_confirmation(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i in range(3):
        write_file(src, f"f{i}.txt", b"x")
    server = cli_server(src)
    assert run_client(dst, server.port).returncode == 0
    for i in range(3):
        (dst / f"f{i}.txt").unlink()

    guarded = run_client(dst, server.port)
    assert guarded.returncode == 1
    assert "--allow-mass-delete" in one_error_line(guarded.stderr, "ssp-client")
    assert len(snapshot(src)) == 3

    confirmed = run_client(dst, server.port, extra=("--allow-mass-delete",))
    assert confirmed.returncode == 0, confirmed.stderr
    assert snapshot(src) == {}
    assert ", 3 deleted" not in confirmed.stdout  # deleted on the server, not here


def test_cli_keep_versions_0_keeps_nothing(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"first draft")
    server = cli_server(src, extra=("--keep-versions", "0"))
    assert run_client(dst, server.port, extra=("--keep-versions", "0")).returncode == 0
    write_file(src, "doc.txt", b"second draft, longer")
    assert run_client(dst, server.port, extra=("--keep-versions", "0")).returncode == 0

    listed = local(dst, "--list-versions")

    assert listed.returncode == 0 and listed.stdout == ""
