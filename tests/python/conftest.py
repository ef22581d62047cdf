"""Shared fixtures for the end-to-end tests: folders, servers (in a thread or as a subprocess),
clients (through the API or the CLI) and tree comparison.

Every test works in its own ``tmp_path`` over 127.0.0.1 on ports the OS picks (port 0), so tests
can run in any order and leave nothing behind. Timeouts here only stop a hung test; no test
asserts on speed (that is bench/'s job).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import ssp
from ssp import CHUNK_SIZE, METADATA_DIR, SSPClient, SSPServer

SECRET = "correct horse battery staple"
HOST = "127.0.0.1"
BIN_DIR = Path(sys.executable).parent
# The repository's folder (for the original's `python ssp_server.py` scripts at its top).
REPO = Path(__file__).resolve().parents[2]
# A generous bound that only turns a hang into a failure.
HANG_S = 300

# The interesting file sizes, each a boundary of the chunking.
SIZES = [
    pytest.param(0, id="empty"),
    pytest.param(1, id="one-byte"),
    pytest.param(CHUNK_SIZE - 1, id="chunk-minus-1"),
    pytest.param(CHUNK_SIZE, id="one-chunk"),
    pytest.param(CHUNK_SIZE + 1, id="chunk-plus-1"),
    pytest.param(3 * CHUNK_SIZE + 17, id="several-chunks"),
]

# Names that tend to break path handling: non-ASCII, spaces, deep nesting, dots.
AWKWARD_NAMES = [
    "plain.txt",
    "with space/and more spaces.txt",
    "ünïcödé/日本語のファイル.txt",
    "emoji 🎉/party 🥳.bin",
    "a/b/c/d/e/f/g/h/i/j/deep.txt",
    ".hidden/.dotfile",
    "Ελληνικά/файл.dat",
    "name.with.many.dots.tar.gz",
]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible bytes."""
    rng = random.Random(size * 7919 + seed)
    piece = 64 << 20  # randbytes() takes at most INT_MAX bits at once
    return b"".join(rng.randbytes(min(piece, size - at)) for at in range(0, size, piece))


def write_file(
    root: Path, rel: str, data: bytes, mtime: float | None = None, executable: bool = False
) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)
    if mtime is not None:
        ns = int(mtime * 1e9)
        os.utime(path, ns=(ns, ns))
    return path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    size: int
    sha256: str
    mtime_us: int
    executable: bool


def snapshot(root: Path) -> dict[str, Entry]:
    """Every file under ``root`` except the metadata folder: ``{relative_path: Entry}``."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and METADATA_DIR in dirnames:
            dirnames.remove(METADATA_DIR)
        for name in filenames:
            path = Path(dirpath) / name
            st = path.stat()
            result[path.relative_to(root).as_posix()] = Entry(
                size=st.st_size,
                sha256=file_digest(path),
                mtime_us=st.st_mtime_ns // 1000,
                executable=bool(st.st_mode & 0o100),
            )
    return result


def assert_synced(server_dir: Path, client_dir: Path, client_only: dict | None = None) -> None:
    """The client has every server file byte-identical, with its mtime and exec bit, and only
    the files listed in ``client_only`` besides (no temp files left at visible paths)."""
    expected = snapshot(server_dir)
    actual = snapshot(client_dir)
    extra = set(actual) - set(expected) - set(client_only or {})
    missing = set(expected) - set(actual)
    assert not missing, f"missing on the client: {sorted(missing)[:10]}"
    assert not extra, f"unexpected files on the client: {sorted(extra)[:10]}"
    for rel, entry in expected.items():
        got = actual[rel]
        assert (got.size, got.sha256) == (entry.size, entry.sha256), f"content differs: {rel}"
        assert abs(got.mtime_us - entry.mtime_us) <= 1, f"mtime not kept: {rel}"
        assert got.executable == entry.executable, f"executable bit not kept: {rel}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# -- servers in a thread (Python API) ------------------------------------------------------


class ServerThread:
    """An :class:`SSPServer` run the way the original app runs it: ``asyncio.run(start())`` in
    a background thread, and ``asyncio.run(stop())`` from another thread."""

    def __init__(self, folder: Path, secret: str = SECRET, **kwargs: Any) -> None:
        self.server = SSPServer(secret, folder, host=HOST, port=0, **kwargs)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ssp-test-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.start())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> ServerThread:
        self.thread.start()
        while not self.server.wait_started(0.05):
            if not self.thread.is_alive():
                raise AssertionError(f"server thread died: {self.error!r}")
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run(self.server.stop())
            self.thread.join(HANG_S)
            assert not self.thread.is_alive(), "server thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """``serve(folder, secret=SECRET, **kwargs)`` starts a server thread, stopped at teardown."""
    started: list[ServerThread] = []

    def start(folder: Path, secret: str = SECRET, **kwargs: Any) -> ServerThread:
        server = ServerThread(folder, secret, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class PullResult:
    ok: bool
    client: SSPClient
    statuses: list[tuple[str, str]] = field(default_factory=list)
    progress: list[dict] = field(default_factory=list)


def pull(folder: Path, port: int, secret: str = SECRET, **kwargs: Any) -> PullResult:
    """connect() + sync() + disconnect() in a fresh event loop, recording every callback."""
    client = SSPClient(secret, folder, server_host=HOST, server_port=port, **kwargs)
    result = PullResult(ok=False, client=client)
    client.set_status_callback(lambda status, details: result.statuses.append((status, details)))
    client.set_progress_callback(lambda progress: result.progress.append(dict(progress)))

    async def run() -> bool:
        try:
            return await client.connect() and await client.sync()
        finally:
            await client.disconnect()

    result.ok = asyncio.run(run())
    return result


def statuses_of(result: PullResult) -> list[str]:
    return [status for status, _ in result.statuses]


# -- servers and clients as subprocesses (CLI) ---------------------------------------------

SERVING_LINE = re.compile(r"^ssp-server: serving (?P<folder>.+) on (?P<host>\S+):(?P<port>\d+)$")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSP_SECRET"}
    env.update(extra)
    return env


def _command(role: str, launcher: str) -> list[str]:
    """How users start ``ssp-ROLE``: the console script, ``python -m ssp_ROLE``, or the original
    SSP's ``python ssp_ROLE.py`` from the repository's folder."""
    if launcher == "console":
        return [str(BIN_DIR / f"ssp-{role}")]
    if launcher == "module":
        return [sys.executable, "-m", f"ssp_{role}"]
    assert launcher == "script", launcher
    return [sys.executable, str(REPO / f"ssp_{role}.py")]


def server_command(launcher: str) -> list[str]:
    return _command("server", launcher)


def client_command(launcher: str) -> list[str]:
    return _command("client", launcher)


class ServerProcess:
    """``ssp-server`` as a subprocess; :attr:`port` is read from its "serving" line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env or cli_env(),
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        # Both pipes are drained by threads, so a chatty server never blocks on a full pipe.
        self._stderr: list[str] = []

        def read_stdout() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        def read_stderr() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self._stderr.append(line)

        self._readers = [
            threading.Thread(target=read_stdout, daemon=True),
            threading.Thread(target=read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            line = lines.get(timeout=HANG_S)
        except queue.Empty:
            self.kill()
            raise AssertionError("ssp-server printed nothing") from None
        if line is None:
            self.proc.wait(HANG_S)
            self._close_pipes()
            raise AssertionError(f"ssp-server exited {self.proc.returncode}: {self.stderr}")
        match = SERVING_LINE.match(line.rstrip("\n"))
        assert match, f"unexpected first line: {line!r}"
        self.port = int(match["port"])
        self.line = line.rstrip("\n")

    def terminate(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``signum``, wait for exit; return (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            self.proc.wait(HANG_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("ssp-server did not stop on a signal") from None
        self._close_pipes()
        return self.proc.returncode, self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(HANG_S)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(HANG_S)  # each ends at EOF, once the process is gone
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def cli_server() -> Iterator[Callable[..., ServerProcess]]:
    """``cli_server(folder, secret=SECRET, launcher="console", extra=(), env=None)`` starts
    ``ssp-server SECRET FOLDER 127.0.0.1 0``; every server is killed at teardown."""
    started: list[ServerProcess] = []

    def start(
        folder: Path,
        secret: str | None = SECRET,
        launcher: str = "console",
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        args = [*server_command(launcher), *extra]
        if secret is not None:
            args.append(secret)
        args += [str(folder), HOST, "0"]
        server = ServerProcess(args, env)
        started.append(server)
        return server

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.kill()


def run_client(
    folder: Path,
    port: int,
    secret: str | None = SECRET,
    launcher: str = "console",
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``ssp-client [extra] SECRET FOLDER 127.0.0.1 PORT`` to completion."""
    args = [*client_command(launcher), *extra]
    if secret is not None:
        args.append(secret)
    args += [str(folder), HOST, str(port)]
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        timeout=HANG_S,
    )


def one_error_line(stderr: str, prog: str) -> str:
    """Assert ``stderr`` is exactly one line ``PROG: error: ...`` and return it."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# -- a hostile server ----------------------------------------------------------------------

# What a server can answer HELLO with, before any secret is checked: Markdown that would render
# a link and a remote image, an escape sequence that retitles the terminal (OSC 0 ... BEL), one
# that paints a fake green "synced", and a newline that starts a forged log line.
HOSTILE_TEXT = (
    "[link](http://x) ![img](http://x/i.png) \x1b]0;pwned\x07 \x1b[32msynced\x1b[0m"
    "\n forged authenticated"
)
FRAME_TYPE_ERROR = 8


@contextlib.contextmanager
def error_server(message: str = HOSTILE_TEXT) -> Iterator[int]:
    """A fake SSP server on 127.0.0.1 that answers every HELLO with ``ERROR {"code": "io",
    "message": message}`` (docs/protocol.md: u32 BE length, type byte, JSON) and hangs up;
    yields its port."""
    import json
    import struct

    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()
    body = bytes([FRAME_TYPE_ERROR]) + json.dumps({"code": "io", "message": message}).encode()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:  # the accept timeout: look at `stop` again
                continue
            with conn:
                conn.settimeout(HANG_S)
                with contextlib.suppress(OSError):
                    header = conn.recv(4, socket.MSG_WAITALL)
                    (length,) = struct.unpack(">I", header)
                    conn.recv(min(length, 1 << 16), socket.MSG_WAITALL)  # the client's HELLO
                    conn.sendall(struct.pack(">I", len(body)) + body)

    thread = threading.Thread(target=serve, name="ssp-test-error-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(HANG_S)
        listener.close()


# -- the web page under `streamlit run` ----------------------------------------------------

STREAMLIT_APP = REPO / "streamlit_app.py"
# Bounds the page's start-up, never a speed.
STREAMLIT_START_S = 60


def streamlit_healthy(url: str) -> bool:
    """Whether Streamlit's health endpoint answers (a refused connection: not yet)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Asks ``proc`` to stop with ``sig``; kills it if it has not ended within ``timeout``."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@contextlib.contextmanager
def streamlit_server(
    tmp_path: Path, *extra: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> Iterator[tuple[int, Path]]:
    """``streamlit run streamlit_app.py [extra]`` on a free 127.0.0.1 port, run from ``cwd``
    (the repository, whose ``.streamlit/config.toml`` applies) with ``env`` added to the
    environment; yields (port, log path).

    ``HOME`` is a folder under ``tmp_path``: the page creates ``~/SSP_Sync``. The log must hold
    no traceback when the page stops.
    """
    port = free_port()
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "HOME": str(home), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    log_path = tmp_path / f"streamlit-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(STREAMLIT_APP),
                "--server.port",
                str(port),
                "--server.address",
                HOST,
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                *extra,
            ],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + STREAMLIT_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited {proc.returncode}:\n{log_path.read_text()}")
            if streamlit_healthy(url):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit never became healthy:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield port, log_path
    finally:
        stop_process(proc, signal.SIGTERM, STREAMLIT_START_S)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


__all__ = [
    "AWKWARD_NAMES",
    "CHUNK_SIZE",
    "HOST",
    "HOSTILE_TEXT",
    "REPO",
    "SECRET",
    "SIZES",
    "PullResult",
    "ServerProcess",
    "ServerThread",
    "assert_synced",
    "cli_env",
    "client_command",
    "error_server",
    "file_digest",
    "free_port",
    "one_error_line",
    "payload",
    "pull",
    "run_client",
    "snapshot",
    "ssp",
    "statuses_of",
    "stop_process",
    "streamlit_healthy",
    "streamlit_server",
    "write_file",
]
