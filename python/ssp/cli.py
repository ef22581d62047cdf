"""Command line: ``ssp-server`` and ``ssp-client`` (the original's positional form, kept).

    ssp-server [options] SECRET FOLDER [HOST] [PORT]
    ssp-client [options] SECRET FOLDER [HOST] [PORT]

SECRET may instead come from ``--secret-file PATH`` or the ``SSP_SECRET`` environment variable,
so it need not appear in the process list; then the positionals are ``FOLDER [HOST] [PORT]``
(four positionals still mean ``SECRET FOLDER HOST PORT``).

``ssp-client --list-versions [PATH]`` and ``--restore PATH [--at TIME]`` work on the local
folder without connecting (SECRET may then be left out: ``ssp-client FOLDER --list-versions``).

Exit status: 0 on success, 1 on failure (one line ``ssp-xxx: error: <reason>`` on stderr),
2 on a usage error, 23 when the sync finished but some entries were not synced or failed
(rsync's "partial transfer"; each is named on stderr), 130 when interrupted. Start-up is kept
lean (benchmarks time the client): heavy imports such as tqdm happen only when needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["client_main", "main", "server_main"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8888


PARTIAL_EXIT = 23
"""Exit status when a sync finished but some entries were not synced (rsync's code)."""


class Settings(NamedTuple):
    secret: str
    folder: str
    host: str
    port: int
    chunk_size: int | None
    verbose: int
    quiet: bool
    # Client only (defaults for the server).
    mode: str = "two-way"
    allow_mass_delete: bool = False
    # Both: days to keep versions (0: off); None: the engine's default.
    keep_versions: float | None = None
    read_only: bool = False
    # The local commands: list versions (of this path, "" for all) or restore this path.
    list_versions: str | None = None
    restore: str | None = None
    at: float | None = None


def _parse_size(text: str) -> int:
    """Parse ``65536``, ``64K``/``64KiB`` or ``1M``/``1MiB`` into bytes."""
    units = {"": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}
    raw = text.strip().upper()
    digits = raw.rstrip("KMIB")
    try:
        value = int(digits) * units[raw[len(digits) :]]
    except (KeyError, ValueError):
        message = f"invalid size: {text!r} (try 65536, 256K or 1M)"
        raise argparse.ArgumentTypeError(message) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _parse_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of days: {text!r} (0 turns it off)")
    return days


def _parse_time(text: str) -> float:
    """Unix seconds from ``1717171717(.5)`` or an ISO date-time (local time unless it says)."""
    import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        message = f"invalid time: {text!r} (try 2024-05-31T14:00 or unix seconds)"
        raise argparse.ArgumentTypeError(message) from None


def _build_parser(prog: str, role: str) -> argparse.ArgumentParser:
    from ssp._native import DEFAULT_VERSIONS_KEEP_DAYS, SYNC_MODES

    what = (
        "Serve FOLDER to SSP clients that know SECRET."
        if role == "server"
        else "Sync FOLDER with an SSP server's (two-way by default; see --mode)."
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [options] [SECRET] FOLDER [HOST] [PORT]",
        description=what,
        epilog=(
            "SECRET may be replaced by --secret-file PATH or the SSP_SECRET environment variable "
            "(then give FOLDER [HOST] [PORT]). HOST defaults to localhost, PORT to 8888"
            + (" (0 picks a free port)." if role == "server" else ".")
        ),
    )
    parser.add_argument("args", nargs="*", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--chunk-size",
        type=_parse_size,
        metavar="BYTES",
        help="payload bytes per FILE_CHUNK frame (e.g. 262144, 256K, 1M); default: engine's",
    )
    parser.add_argument(
        "--secret-file",
        metavar="PATH",
        help="read the shared secret from PATH (first line) instead of the command line",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log debug messages to stderr"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--keep-versions",
        type=_parse_days,
        metavar="DAYS",
        help="keep files a sync replaces or deletes in FOLDER/.ssp/versions for DAYS "
        f"(default {DEFAULT_VERSIONS_KEEP_DAYS}; 0 turns versioning off)",
    )
    if role == "server":
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="take no changes from clients (push-mode clients are refused)",
        )
        return parser
    parser.add_argument(
        "--mode",
        choices=SYNC_MODES,
        default=SYNC_MODES[0],
        help="two-way (default): both ways; pull: only take the server's changes; "
        "push: only send ours",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="sync even when every file of a folder is gone (off: the sync stops, "
        "since an unmounted drive or a wrong path looks like that)",
    )
    parser.add_argument(
        "--list-versions",
        nargs="?",
        const="",
        metavar="PATH",
        help="list the versions kept of PATH (of every path without one) and exit; no "
        "connection, no SECRET needed: ssp-client FOLDER --list-versions [PATH]",
    )
    parser.add_argument(
        "--restore",
        metavar="PATH",
        help="put back the newest version kept of PATH (see --at) and exit; no connection",
    )
    parser.add_argument(
        "--at",
        type=_parse_time,
        metavar="TIME",
        help="with --restore: the version kept at TIME or just before (ISO date-time, "
        "local unless it has an offset, or unix seconds)",
    )
    return parser


def _secret_file_problem(path: str, mode: int) -> str | None:
    """Why a secret file with permission bits ``mode`` must not be used, or None.

    As ssh refuses a private key that others can read: a secret the group or others can read
    (or replace) is no secret. Windows has no such bits; its ACLs are not checked here.
    """
    if os.name == "nt" or not mode & 0o077:
        return None
    return (
        f"secret file {path} is accessible by others (mode {mode & 0o777:04o}); "
        f"run: chmod 600 {path}"
    )


def _read_secret_file(parser: argparse.ArgumentParser, path: str, prog: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            # The mode of the file actually opened, not of whatever the path names later.
            problem = _secret_file_problem(path, os.fstat(handle.fileno()).st_mode)
            if problem:
                raise SystemExit(_fail(prog, problem))
            secret = handle.readline().rstrip("\r\n")
    except OSError as exc:
        parser.error(f"cannot read secret file {path}: {exc.strerror or exc}")
    if not secret:
        parser.error(f"secret file {path} is empty")
    return secret


def _parse(argv: Sequence[str] | None, prog: str, role: str) -> Settings:
    parser = _build_parser(prog, role)
    ns = parser.parse_intermixed_args(argv)
    if ns.version:
        from ssp._native import PROTOCOL_VERSION, __version__

        print(f"{prog} {__version__} (protocol {PROTOCOL_VERSION})")
        raise SystemExit(0)
    positional: list[str] = list(ns.args)
    if role == "client" and ns.list_versions and not positional:
        # `ssp-client --list-versions FOLDER`: the optional PATH took the folder's place.
        positional, ns.list_versions = [ns.list_versions], ""
    local = role == "client" and (ns.list_versions is not None or ns.restore is not None)
    if role == "client" and ns.at is not None and ns.restore is None:
        parser.error("--at needs --restore PATH")
    if role == "client" and ns.list_versions is not None and ns.restore is not None:
        parser.error("--list-versions and --restore go one at a time")
    secret: str | None = None
    if ns.secret_file:
        if len(positional) == 4:
            parser.error("SECRET given both on the command line and by --secret-file")
        secret = _read_secret_file(parser, ns.secret_file, prog)
    elif os.environ.get("SSP_SECRET"):
        secret = os.environ["SSP_SECRET"]
    if local and secret is None and len(positional) == 1:
        secret = ""  # the local commands need no secret: the one positional is FOLDER
    elif secret is None or len(positional) == 4:
        if not positional:
            parser.error("missing SECRET and FOLDER")
        secret = positional.pop(0)
    if not secret and not local:
        parser.error("the secret must not be empty")
    if not positional:
        parser.error("missing FOLDER")
    if len(positional) > 3:
        parser.error(f"too many arguments: {' '.join(positional[3:])}")
    if ns.chunk_size is not None:
        from ssp._native import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

        if not MIN_CHUNK_SIZE <= ns.chunk_size <= MAX_CHUNK_SIZE:
            parser.error(
                f"--chunk-size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
            )
    folder = positional[0]
    host = positional[1] if len(positional) > 1 else DEFAULT_HOST
    port = DEFAULT_PORT
    if len(positional) > 2:
        lowest = 0 if role == "server" else 1
        try:
            port = int(positional[2])
        except ValueError:
            port = -1
        if not lowest <= port <= 65535:
            parser.error(f"invalid PORT {positional[2]!r} (expected {lowest}..65535)")
    return Settings(
        secret=secret,
        folder=os.path.expanduser(folder),
        host=host,
        port=port,
        chunk_size=ns.chunk_size,
        verbose=ns.verbose,
        quiet=ns.quiet,
        keep_versions=ns.keep_versions,
        **(
            {"read_only": ns.read_only}
            if role == "server"
            else {
                "mode": ns.mode,
                "allow_mass_delete": ns.allow_mass_delete,
                "list_versions": ns.list_versions,
                "restore": ns.restore,
                "at": ns.at,
            }
        ),
    )


def _setup_logging(settings: Settings, default_level: int) -> None:
    """Route Python logging (which carries the engine's tracing logs, under ``ssp.*``) to stderr.

    Must run before the engine logs anything: pyo3-log caches the levels it sees.
    """
    if settings.verbose:
        level = logging.DEBUG
    elif settings.quiet:
        level = logging.CRITICAL
    else:
        level = default_level
    from ssp.text import PrintableFormatter

    handler = logging.StreamHandler(sys.stderr)
    # One line per record with control characters escaped: peer text cannot forge lines.
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _one_line(text: object) -> str:
    """``text`` as one printable line: it may carry a peer's words (an ERROR frame's message),
    which must not reach the terminal with its escape sequences."""
    from ssp.text import printable

    return printable(" ".join(str(text).split())) or "unknown error"


def _fail(prog: str, reason: object, code: int = 1) -> int:
    print(f"{prog}: error: {_one_line(reason)}", file=sys.stderr, flush=True)
    return code


def _human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover


# -- server ------------------------------------------------------------------------------


def _check_server_folder(folder: str) -> str | None:
    """Reason the server cannot use ``folder``, or None. A missing folder is fine (created)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"sync folder {folder} exists but is not a folder"
    if os.path.isdir(folder) and not os.access(folder, os.R_OK | os.X_OK):
        return f"sync folder {folder} is not readable"
    return None


async def _serve(settings: Settings, prog: str) -> int:
    import asyncio
    import signal

    from ssp.errors import AddressInUseError, SSPError
    from ssp.server import SSPServer

    kwargs: dict[str, Any] = {"read_only": settings.read_only}
    if settings.chunk_size is not None:
        kwargs["chunk_size"] = settings.chunk_size
    if settings.keep_versions is not None:
        kwargs["keep_versions_days"] = settings.keep_versions
    server = SSPServer(settings.secret, settings.folder, settings.host, settings.port, **kwargs)
    try:
        port = await server.bind()
    except AddressInUseError as exc:
        message = str(exc)
        if str(settings.port) not in message:
            message = f"port {settings.port} is already in use ({message})"
        return _fail(prog, message)
    except (SSPError, OSError) as exc:
        return _fail(prog, exc)

    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Future[None]] = []

    def request_stop() -> None:
        if not stopping:
            logging.getLogger("ssp.cli").info("stopping")
            stopping.append(asyncio.ensure_future(server.stop()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, request_stop)
        except (NotImplementedError, RuntimeError):  # e.g. Windows: fall back to signal.signal
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(request_stop))

    if not settings.quiet:
        # The first line's form is fixed (scripts read the port from it).
        print(f"{prog}: serving {settings.folder} on {settings.host}:{port}", flush=True)
        if settings.read_only:
            print(f"{prog}: read-only: changes from clients are refused", flush=True)
    try:
        await server.start()
    except (SSPError, OSError) as exc:
        return _fail(prog, exc)
    if stopping:
        await stopping[0]
    return 0


def server_main(argv: Sequence[str] | None = None, prog: str = "ssp-server") -> int:
    """``ssp-server [options] SECRET FOLDER [HOST] [PORT]``: serve until SIGINT/SIGTERM.

    Returns the exit status when given ``argv``; with ``argv=None`` (a console script) it reads
    ``sys.argv`` and exits the process with that status.
    """
    return _server(argv, prog)


def _server(argv: Sequence[str] | None, prog: str) -> int:
    settings = _parse(argv, prog, "server")
    _setup_logging(settings, logging.WARNING)
    problem = _check_server_folder(settings.folder)
    if problem:
        return _fail(prog, problem)
    import asyncio

    from ssp._native import tune_allocator_for_transfers

    tune_allocator_for_transfers()  # our own process: keep transfer buffers (see its doc)

    try:
        return asyncio.run(_serve(settings, prog))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


# -- client ------------------------------------------------------------------------------


class _ProgressBar:
    """A tqdm bar over the sync's bytes, with files done/total and the engine's rate and ETA."""

    def __init__(self) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        try:
            size = os.get_terminal_size(sys.stderr.fileno())
            sized = size.columns > 0 and size.lines > 0
        except (OSError, ValueError):
            sized = False
        # tqdm draws nothing on a terminal that reports no size (0x0): give it one.
        self._bar = tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="ssp",
            file=sys.stderr,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            leave=True,
        )

    def update(self, progress: dict[str, Any]) -> None:
        total = int(progress.get("bytes_total") or 0)
        done = int(progress.get("bytes_done") or 0)
        if self._bar.total != total:
            self._bar.total = total
        files = f"{progress.get('files_done', 0)}/{progress.get('files_total', 0)} files"
        self._bar.set_postfix_str(files, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _native_client(settings: Settings) -> Any:
    from ssp._native import NativeClient

    kwargs: dict[str, Any] = {
        "mode": settings.mode,
        "allow_mass_delete": settings.allow_mass_delete,
    }
    if settings.keep_versions is not None:
        kwargs["keep_versions_days"] = settings.keep_versions
    s = settings
    return NativeClient(s.secret, s.folder, s.host, s.port, s.chunk_size, **kwargs)


def _print_report(prog: str, report: dict[str, Any], quiet: bool) -> bool:
    """Name the last sync's conflicts (stdout, part of the summary) and every entry not synced
    or failed, with its reason (stderr, always). True if any entry was not synced or failed."""
    from ssp.text import printable

    def where(path: str) -> str:
        return printable(path) if path else "(the whole folder)"

    if not quiet:
        for conflict in report.get("conflicts", []):
            print(
                f"{prog}: conflict: {printable(conflict['path'])} changed on both sides; "
                f"the other version is kept as {printable(conflict['copy'])}",
                flush=True,
            )
    partial = False
    for label, key in (("not synced", "skipped"), ("failed", "failed")):
        for entry in report.get(key, []):
            partial = True
            print(
                f"{prog}: {label}: {where(entry['path'])}: {printable(entry['reason'])}",
                file=sys.stderr,
                flush=True,
            )
    return partial


def _pull(settings: Settings, prog: str, show_bar: bool) -> int:
    """One sync through the engine's blocking call: no asyncio to import or run."""
    import time

    from ssp._native import SSPError

    try:
        client = _native_client(settings)
    except (SSPError, ValueError) as exc:
        return _fail(prog, exc)
    bar = _ProgressBar() if show_bar else None

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if bar is not None and kind == "progress":
            bar.update(payload)

    started = time.monotonic()
    try:
        stats = client.pull_blocking(on_event)
    except SSPError as exc:
        if bar is not None:
            bar.close()
            bar = None
        # Changes that failed end the sync with an error, yet the rest was synced: name each
        # and exit as a partial transfer, not as a failed sync.
        report = client.report()
        if report["failed"]:
            _print_report(prog, report, settings.quiet)
            _fail(prog, exc)
            return PARTIAL_EXIT
        return _fail(prog, exc)
    finally:
        if bar is not None:
            bar.close()
    if not settings.quiet:
        seconds = time.monotonic() - started
        files = int(stats.get("files_received", 0) or 0)
        size = int(stats.get("bytes_received", 0) or 0)
        sent = int(stats.get("files_sent", 0) or 0)
        deleted = int(stats.get("files_deleted", 0) or 0)
        more = "".join(
            f", {count} {what}" for count, what in ((sent, "sent"), (deleted, "deleted")) if count
        )
        print(
            f"{prog}: synced {files} files, {size} bytes ({_human_bytes(size)}){more} "
            f"in {seconds:.2f} s from {settings.host}:{settings.port}",
            flush=True,
        )
    if _print_report(prog, client.report(), settings.quiet):
        return PARTIAL_EXIT
    return 0


def _when(ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _local(settings: Settings, prog: str) -> int:
    """``--list-versions`` and ``--restore``: the local folder's versions, no connection."""
    import asyncio

    from ssp._native import SSPError
    from ssp.text import printable

    if not os.path.isdir(settings.folder):
        return _fail(prog, f"sync folder {settings.folder} does not exist")
    try:
        client = _native_client(settings)
    except (SSPError, ValueError) as exc:
        return _fail(prog, exc)

    async def run() -> Any:
        if settings.restore is not None:
            return await client.restore(settings.restore, settings.at)
        return await client.versions(settings.list_versions or None)

    try:
        result = asyncio.run(run())
    except SSPError as exc:
        return _fail(prog, exc)
    if settings.restore is not None:
        if not settings.quiet:
            print(
                f"{prog}: restored {printable(result['path'])} as it was at "
                f"{_when(result['mtime_ns'])} (kept {_when(result['archived_ns'])})",
                flush=True,
            )
        return 0
    if not result and not settings.quiet:
        what = printable(settings.list_versions) if settings.list_versions else "any path"
        print(f"{prog}: no versions kept of {what}", file=sys.stderr, flush=True)
    for version in result:
        # One line each: kept at, size, path (the time is what --restore --at takes).
        print(
            f"{_when(version['archived_ns'])}  {version['size']:>12}  {printable(version['path'])}",
            flush=True,
        )
    return 0


def client_main(argv: Sequence[str] | None = None, prog: str = "ssp-client") -> int:
    """``ssp-client [options] SECRET FOLDER [HOST] [PORT]``: one complete sync, then exit.

    Returns the exit status when given ``argv``; with ``argv=None`` (a console script) it reads
    ``sys.argv`` and exits the process with that status.
    """
    return _client(argv, prog)


def _client(argv: Sequence[str] | None, prog: str) -> int:
    settings = _parse(argv, prog, "client")
    # The client's failure is reported as one line; engine logs only with -v.
    _setup_logging(settings, logging.CRITICAL)
    if settings.list_versions is not None or settings.restore is not None:
        return _local(settings, prog)
    from ssp._native import tune_allocator_for_transfers

    tune_allocator_for_transfers()  # our own process: keep transfer buffers (see its doc)
    show_bar = not settings.quiet and sys.stderr.isatty()
    try:
        return _pull(settings, prog, show_bar)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", 130)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssp server|client ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"server": server_main, "client": client_main}
    if not args or args[0] not in commands:
        print(
            "usage: python -m ssp {server,client} [options] [SECRET] FOLDER [HOST] [PORT]\n"
            "       (see python -m ssp server --help)",
            file=sys.stderr,
        )
        return 2 if not args or args[0] not in ("-h", "--help") else 0
    command = args.pop(0)
    return commands[command](args, prog=f"python -m ssp {command}")
