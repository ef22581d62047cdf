"""The web page's engine room: runs the server and the client, records what the page shows.

The page (``streamlit_app.py``) never touches the engine. It calls :class:`Controller` to start
or stop things and reads immutable snapshots (:class:`ServerSnapshot`, :class:`SyncSnapshot`,
log lines, throughput points) on every refresh. The engine side writes them:

- The server runs ``asyncio.run(...)`` in its own thread, around ``SSPServer.start()``; that
  loop also samples the server's stats twice a second for the throughput chart. Stopping calls
  ``SSPServer.stop()`` from the page's thread, which the API supports.
- Each sync runs ``connect(); sync(); disconnect()`` with ``asyncio.run`` in its own thread;
  the client's callbacks run on that thread and store the latest progress under a lock.
- A :class:`LogBuffer` on the ``ssp`` logger keeps the last lines of the engine's log.

One controller serves the whole Streamlit process (:func:`shared_controller`): the server owns a
port, which is a property of the machine, not of a browser tab, so a reloaded page or a second
tab shows (and can stop) the server that is already running instead of tripping over its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ssp.client import SSPClient
from ssp.server import SSPServer
from ssp.text import LOG_LINE_MAX_CHARS, printable
from ssp.ui.history import FolderHistory, NotSynced, not_synced_rows
from ssp.ui.messages import explain, explain_client_failure

if TYPE_CHECKING:
    from ssp._native import _SyncMode

__all__ = [
    "ClientSettings",
    "Controller",
    "LogBuffer",
    "ServerSettings",
    "ServerSnapshot",
    "SyncSnapshot",
    "ThroughputPoint",
    "close_shared_controller",
    "outline",
    "rates",
    "shared_controller",
]

server_log = logging.getLogger("ssp.ui.server")
client_log = logging.getLogger("ssp.ui.client")

LOG_LINES_KEPT = 1000
"""Log lines the buffer keeps (server and client together)."""
SAMPLE_INTERVAL_S = 0.5
"""How often the server's byte counters and the client's progress are sampled for the chart."""
SAMPLES_KEPT = 1200
"""Samples kept per series: ten minutes at ``SAMPLE_INTERVAL_S``."""
RATE_BIN_S = 1.0
"""Width of the throughput chart's time bins."""
RATE_BINS_KEPT = 3600
"""The most bins :func:`rates` returns (an hour of one-second bins)."""
START_TIMEOUT_S = 15.0
"""How long Start Server waits for the port to be bound before giving up."""
STOP_TIMEOUT_S = 30.0
"""How long stopping waits for the engine's threads to end."""

# Engine loggers by side; a logger in neither list (fs, index, net) shows in both logs.
CLIENT_LOGGERS = ("ssp.client", "ssp.sync.client", "ssp.sync.pull", "ssp.ui.client")
SERVER_LOGGERS = ("ssp.server", "ssp.sync.server", "ssp.sync.session", "ssp.ui.server")

Role = Literal["server", "client"]
ServerState = Literal["stopped", "starting", "running", "stopping"]
SyncState = Literal["idle", "connecting", "syncing", "completed", "failed", "cancelled"]
NO_SECRET = "Enter a shared secret in the sidebar (the same on server and client)."
FAILURE_STATUSES = ("AUTH_FAILED", "CONNECTION_ERROR", "SYNC_ERROR", "SERVER_ERROR")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


class LogBuffer(logging.Handler):
    """A logging handler that keeps the last ``capacity`` lines, tagged server or client.

    ``emit`` runs on whatever thread logs (engine threads included); it only appends to a
    bounded deque, whose ``append`` is atomic, so readers copy it without further locking.
    Exceptions attached to records are shown as one line (class: message), never a traceback.
    """

    def __init__(self, capacity: int = LOG_LINES_KEPT) -> None:
        super().__init__(logging.INFO)
        self._lines: deque[tuple[str, str]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message = f"{message} ({type(exc).__name__}: {exc})"
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            # One line each, control characters escaped: a peer's text cannot forge a line.
            line = printable(
                f"{stamp} {record.levelname:<7} {record.name}: {message}", LOG_LINE_MAX_CHARS
            )
        except Exception:
            self.handleError(record)
            return
        if _under(record.name, CLIENT_LOGGERS):
            role = "client"
        elif _under(record.name, SERVER_LOGGERS):
            role = "server"
        else:
            role = "both"
        self._lines.append((role, line))

    def lines(self, role: Role, last: int = 200) -> list[str]:
        """The last ``last`` lines for ``role`` (oldest first)."""
        picked = [line for tag, line in list(self._lines) if tag in (role, "both")]
        return picked[-last:] if last > 0 else []


# -- settings and snapshots ----------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """What Start Server needs, as entered in the sidebar."""

    secret: str
    folder: Path
    host: str
    port: int
    chunk_size: int
    read_only: bool = False
    """Take no changes from clients."""


@dataclass(frozen=True)
class ClientSettings:
    """What Start Sync needs: the server to sync with, the folder to sync and how."""

    secret: str
    folder: Path
    host: str
    port: int
    chunk_size: int | None = None
    mode: _SyncMode = "two-way"


@dataclass(frozen=True)
class ServerSnapshot:
    """The server as the page shows it, read at one instant."""

    state: ServerState
    host: str = ""
    port: int = 0
    folder: str = ""
    active_connections: int = 0
    total_connections: int = 0
    files_sent: int = 0
    bytes_sent: int = 0
    sync_sessions: int = 0
    auth_failures: int = 0
    clients: tuple[str, ...] = ()
    uptime_s: float | None = None
    error: str | None = None
    """Why the last start failed or the server stopped on its own, as one actionable line."""
    read_only: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def files_per_session(self) -> float | None:
        """Average files sent per sync session (None before the first session)."""
        return self.files_sent / self.sync_sessions if self.sync_sessions else None


@dataclass(frozen=True)
class SyncSnapshot:
    """The client's current or last sync, read at one instant."""

    state: SyncState = "idle"
    host: str = ""
    port: int = 0
    folder: str = ""
    status: str | None = None
    """The last engine status (``CONNECTING`` … ``SYNC_COMPLETED``, ``AUTH_FAILED`` …)."""
    details: str = ""
    file_path: str | None = None
    chunk_index: int = 0
    total_chunks: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    rate_bps: float | None = None
    eta_s: float | None = None
    files_received: int = 0
    bytes_received: int = 0
    files_unchanged: int = 0
    files_sent: int = 0
    files_deleted: int = 0
    conflicts: int = 0
    """Conflicts the last sync found (listed by :meth:`Controller.history`)."""
    not_synced: tuple[NotSynced, ...] = ()
    """Entries the last sync did not sync, then the changes that failed, each with why."""
    mode: str = "two-way"
    pending_requests: int = 0
    duration_s: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    """Why the sync failed, as one actionable line."""

    @property
    def active(self) -> bool:
        return self.state in ("connecting", "syncing")

    @property
    def fraction(self) -> float:
        """Whole-sync progress in [0, 1]: by bytes, else by files; 1 once completed."""
        if self.state == "completed":
            return 1.0
        if self.bytes_total > 0:
            return min(self.bytes_done / self.bytes_total, 1.0)
        if self.files_total > 0:
            return min(self.files_done / self.files_total, 1.0)
        return 0.0

    @property
    def file_fraction(self) -> float:
        """Progress through the current file's chunks in [0, 1]."""
        if self.state == "completed":
            return 1.0
        if self.total_chunks > 0:
            return min(self.chunk_index / self.total_chunks, 1.0)
        return 0.0

    @property
    def average_rate(self) -> float | None:
        """Bytes received per second over the sync (None until it has a duration)."""
        if self.duration_s and self.duration_s > 0:
            return self.bytes_received / self.duration_s
        return None


@dataclass(frozen=True)
class ThroughputPoint:
    """One point of the throughput chart: at ``time`` (epoch s), ``series`` moved that rate."""

    time: float
    series: str
    bytes_per_s: float


def rates(
    samples: Sequence[tuple[float, int]], bin_s: float = RATE_BIN_S
) -> list[tuple[float, float]]:
    """Bytes per second in ``bin_s``-wide time bins, from ``(time, cumulative_bytes)`` samples.

    Each increase counts in the bin of the sample that saw it; bins without one are 0, so idle
    time shows as idle. Binning puts the server (sampled on a timer) and the client (sampled on
    progress) on one scale: a 30 ms burst reads as what it moved in that second, not a spike.
    A counter that goes down (a restarted server) counts as no transfer, never a negative rate.
    At most ``RATE_BINS_KEPT`` bins (the latest) are returned.
    """
    if len(samples) < 2:
        return []
    moved: dict[int, int] = {}
    for (t0, b0), (t1, b1) in zip(samples, samples[1:]):
        if t1 >= t0:
            key = int(t1 // bin_s)
            moved[key] = moved.get(key, 0) + max(b1 - b0, 0)
    last = int(samples[-1][0] // bin_s)
    first = max(int(samples[0][0] // bin_s), last - RATE_BINS_KEPT + 1)
    return [(key * bin_s, moved.get(key, 0) / bin_s) for key in range(first, last + 1)]


def outline(
    bins: Sequence[tuple[float, float]], bin_s: float = RATE_BIN_S
) -> list[tuple[float, float]]:
    """The corners of ``bins`` drawn as steps from 0 back to 0, for a plain line chart.

    A sync that fits in one bin is then a visible bar rather than a lone, invisible point.
    """
    if not bins:
        return []
    points = [(bins[0][0], 0.0)]
    for start, rate in bins:
        points += [(start, rate), (start + bin_s, rate)]
    points.append((bins[-1][0] + bin_s, 0.0))
    return points


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# -- the server ----------------------------------------------------------------------------


class ServerRunner:
    """One :class:`SSPServer` at a time, served in a background thread."""

    def __init__(self) -> None:
        # Guards every field below; held only for quick reads and writes, never across I/O.
        self._lock = threading.Lock()
        self._server: SSPServer | None = None
        self._thread: threading.Thread | None = None
        self._settings: ServerSettings | None = None
        # Set by stop() until the thread has ended, so the page can say "stopping".
        self._stopping = False
        self._error: str | None = None
        self._started_at: float | None = None
        # The last status read by the serving loop: what the page shows once stopped.
        self._last_status: dict[str, Any] = {}
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES_KEPT)

    def start(self, settings: ServerSettings, timeout: float = START_TIMEOUT_S) -> bool:
        """Bind and serve in the background; True once listening.

        False if a server already runs, or on failure: the reason is then in the snapshot's
        ``error`` (port in use, folder unusable, ...).
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._error = None
            self._settings = settings
            self._last_status = {}
            # A failed start must not keep showing the previous server's port.
            self._server = None
            self._thread = None
        if not settings.secret:
            with self._lock:
                self._error = NO_SECRET
            return False
        try:
            server = SSPServer(
                settings.secret,
                settings.folder,
                host=settings.host,
                port=settings.port,
                chunk_size=settings.chunk_size,
                read_only=settings.read_only,
            )
        except Exception as exc:
            self._record_failure(exc, settings)
            return False
        thread = threading.Thread(
            target=self._serve, args=(server, settings), name="ssp-ui-server", daemon=True
        )
        with self._lock:
            self._server = server
            self._thread = thread
            self._started_at = None
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.wait_started(0.05):
            if not thread.is_alive():
                return False  # the thread recorded why
            if time.monotonic() > deadline:
                self.stop()
                with self._lock:
                    self._error = (
                        f"The server did not start listening on {settings.host}:{settings.port} "
                        f"within {timeout:.0f} s. Check the host name."
                    )
                return False
        with self._lock:
            self._started_at = time.time()
        return True  # the engine logs where it listens

    def _serve(self, server: SSPServer, settings: ServerSettings) -> None:
        async def serve_and_sample() -> None:
            task = asyncio.ensure_future(server.start())
            while True:
                done, _ = await asyncio.wait({task}, timeout=SAMPLE_INTERVAL_S)
                self._sample(server)
                if done:
                    task.result()
                    return

        try:
            asyncio.run(serve_and_sample())
        except BaseException as exc:  # everything ends up on the page, nothing in a traceback
            self._record_failure(exc, settings)
        else:
            server_log.info("server on port %d stopped", server.port)

    def _sample(self, server: SSPServer) -> None:
        status = server.get_server_status()
        bytes_sent = _int(status["stats"].get("bytes_sent"))
        with self._lock:
            self._last_status = status
            self._samples.append((time.time(), bytes_sent))

    def _record_failure(self, exc: BaseException, settings: ServerSettings) -> None:
        message = explain(exc, host=settings.host, port=settings.port, folder=str(settings.folder))
        server_log.error("%s", message)
        with self._lock:
            self._error = message

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop serving and wait for the thread to end (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            if server is None or thread is None or not thread.is_alive():
                return
            self._stopping = True
        try:
            asyncio.run(server.stop())
            thread.join(timeout)
        except Exception as exc:
            settings = self._settings
            if settings is not None:
                self._record_failure(exc, settings)
        finally:
            with self._lock:
                self._stopping = False

    def samples(self) -> list[tuple[float, int]]:
        """``(time, bytes_sent)`` samples, oldest first."""
        with self._lock:
            return list(self._samples)

    def snapshot(self) -> ServerSnapshot:
        with self._lock:
            server, thread, settings = self._server, self._thread, self._settings
            stopping, error, started_at = self._stopping, self._error, self._started_at
            status = self._last_status
        alive = thread is not None and thread.is_alive()
        state: ServerState
        if not alive:
            state = "stopped"
        elif stopping:
            state = "stopping"
        elif server is not None and server.running:
            state = "running"
        else:
            state = "starting"
        if server is not None and state == "running":
            status = server.get_server_status()  # fresher than the last sample
        stats: dict[str, Any] = dict(status.get("stats") or {})
        return ServerSnapshot(
            state=state,
            host=settings.host if settings else "",
            port=server.port if server is not None else (settings.port if settings else 0),
            folder=str(settings.folder) if settings else "",
            active_connections=_int(status.get("active_connections")) if alive else 0,
            total_connections=_int(stats.get("total_connections")),
            files_sent=_int(stats.get("files_sent")),
            bytes_sent=_int(stats.get("bytes_sent")),
            sync_sessions=_int(stats.get("sync_sessions")),
            auth_failures=_int(stats.get("auth_failures")),
            clients=tuple(str(c) for c in status.get("clients") or ()) if alive else (),
            uptime_s=time.time() - started_at if started_at and state == "running" else None,
            error=error,
            read_only=settings.read_only if settings else False,
        )


# -- the client ----------------------------------------------------------------------------


class SyncRunner:
    """One sync at a time: connect, sync, disconnect, in a background thread."""

    def __init__(self) -> None:
        # Guards every field below; the client's callbacks take it on the sync thread.
        self._lock = threading.Lock()
        self._client: SSPClient | None = None
        self._thread: threading.Thread | None = None
        self._snapshot = SyncSnapshot()
        self._cancel = threading.Event()
        # The failure status the engine reported (DISCONNECTED follows it, so keep it apart).
        self._failure_status: str | None = None
        # Cumulative bytes of earlier syncs, so the chart's counter never goes back.
        self._bytes_base = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES_KEPT)
        self._last_sample = 0.0

    def start(self, settings: ClientSettings) -> bool:
        """Start a sync in the background; False if one is running or the client can't start
        (the reason is then in the snapshot's ``error``)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._bytes_base += self._snapshot.bytes_done
            self._snapshot = SyncSnapshot(
                state="connecting",
                host=settings.host,
                port=settings.port,
                folder=str(settings.folder),
                started_at=time.time(),
                mode=settings.mode,
            )
            self._failure_status = None
            self._cancel.clear()
        if not settings.secret:
            self._finish(state="failed", error=NO_SECRET)
            return False
        try:
            client = SSPClient(
                settings.secret,
                settings.folder,
                server_host=settings.host,
                server_port=settings.port,
                chunk_size=settings.chunk_size,
                mode=settings.mode,
            )
        except Exception as exc:
            self._finish(state="failed", error=self._explain(exc, settings))
            return False
        client.set_status_callback(self._on_status)
        client.set_progress_callback(self._on_progress)
        thread = threading.Thread(
            target=self._run, args=(client, settings), name="ssp-ui-sync", daemon=True
        )
        with self._lock:
            self._client = client
            self._thread = thread
        client_log.info(
            "%s sync of %s with %s:%d started",
            settings.mode,
            settings.folder,
            settings.host,
            settings.port,
        )
        thread.start()
        return True

    @staticmethod
    def _explain(exc: BaseException, settings: ClientSettings) -> str:
        return explain(exc, host=settings.host, port=settings.port, folder=str(settings.folder))

    def _run(self, client: SSPClient, settings: ClientSettings) -> None:
        async def pull() -> bool:
            try:
                if not await client.connect():
                    return False
                if self._cancel.is_set():
                    return False
                return await client.sync()
            finally:
                await client.disconnect()

        try:
            ok = asyncio.run(pull())
            error = None
        except BaseException as exc:
            ok, error = False, self._explain(exc, settings)
        stats = client.get_sync_stats()
        report = client.get_last_report()
        with self._lock:
            failure = self._failure_status
        if ok:
            state: SyncState = "completed"
        elif self._cancel.is_set():
            state = "cancelled"
        else:
            state = "failed"
            if error is None:
                error = explain_client_failure(
                    failure, client.last_error, host=settings.host, port=settings.port
                )
        self._finish(state=state, error=error, stats=stats, report=report)
        if state == "failed":
            client_log.warning("%s", error)
        else:
            client_log.info("sync %s", state)

    def _finish(
        self,
        *,
        state: SyncState,
        error: str | None,
        stats: dict[str, Any] | None = None,
        report: Any = None,
    ) -> None:
        stats = stats or {}
        not_synced = tuple(not_synced_rows(report or {}))
        with self._lock:
            snap = self._snapshot
            snap = replace(
                snap,
                state=state,
                error=error,
                files_received=_int(stats.get("files_received", snap.files_received)),
                bytes_received=_int(stats.get("bytes_received", snap.bytes_received)),
                files_unchanged=_int(stats.get("files_unchanged", snap.files_unchanged)),
                files_sent=_int(stats.get("files_sent", snap.files_sent)),
                files_deleted=_int(stats.get("files_deleted", snap.files_deleted)),
                conflicts=len((report or {}).get("conflicts") or ()),
                not_synced=not_synced,
                duration_s=_float(stats.get("sync_duration")) or snap.duration_s,
                pending_requests=0,
                finished_at=time.time(),
            )
            if state == "completed":
                snap = replace(
                    snap,
                    bytes_done=max(snap.bytes_done, snap.bytes_total),
                    files_done=max(snap.files_done, snap.files_total),
                    eta_s=0.0,
                )
            self._snapshot = snap
            self._samples.append((time.time(), self._bytes_base + snap.bytes_done))

    # Callbacks: they run on the sync thread's event loop (SSPClient's guarantee).

    def _on_status(self, status: str, details: str) -> None:
        client_log.info("%s %s", status, details)
        with self._lock:
            snap = replace(self._snapshot, status=status, details=details)
            if status == "SYNC_STARTED":
                snap = replace(snap, state="syncing")
                self._samples.append((time.time(), self._bytes_base))
            if status in FAILURE_STATUSES:
                self._failure_status = status
            self._snapshot = snap

    def _on_progress(self, progress: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            snap = replace(
                self._snapshot,
                state="syncing",
                file_path=str(progress.get("file_path") or "") or None,
                chunk_index=_int(progress.get("chunk_index")),
                total_chunks=_int(progress.get("total_chunks")),
                files_done=_int(progress.get("files_done")),
                files_total=_int(progress.get("files_total")),
                bytes_done=_int(progress.get("bytes_done")),
                bytes_total=_int(progress.get("bytes_total")),
                rate_bps=_float(progress.get("rate_bps")),
                eta_s=_float(progress.get("eta_s")),
            )
            self._snapshot = snap
            if now - self._last_sample >= SAMPLE_INTERVAL_S / 2:
                self._last_sample = now
                self._samples.append((now, self._bytes_base + snap.bytes_done))

    def cancel(self) -> None:
        """Ask the running sync to stop (Stop Sync); it ends as ``cancelled``."""
        with self._lock:
            client, thread = self._client, self._thread
        if client is None or thread is None or not thread.is_alive():
            return
        self._cancel.set()
        client_log.info("stopping the sync")
        client.cancel_sync()

    def join(self, timeout: float = STOP_TIMEOUT_S) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def samples(self) -> list[tuple[float, int]]:
        """``(time, cumulative bytes received)`` samples, oldest first."""
        with self._lock:
            return list(self._samples)

    def snapshot(self) -> SyncSnapshot:
        with self._lock:
            snap, client, thread = self._snapshot, self._client, self._thread
        if client is not None and thread is not None and thread.is_alive() and snap.active:
            status = client.get_client_status()
            stats: dict[str, Any] = status.get("stats") or {}
            snap = replace(
                snap,
                pending_requests=_int(status.get("pending_requests")),
                files_received=_int(stats.get("files_received")),
                bytes_received=_int(stats.get("bytes_received")),
                duration_s=time.time() - snap.started_at if snap.started_at else None,
            )
        return snap


# -- the controller ------------------------------------------------------------------------


class Controller:
    """The server, the client and the log buffer of one web app."""

    def __init__(self) -> None:
        self.logs = LogBuffer()
        self.server = ServerRunner()
        self.sync = SyncRunner()
        ssp_logger = logging.getLogger("ssp")
        # INFO reaches the page's logs; a level set lower elsewhere (DEBUG) is kept.
        if ssp_logger.getEffectiveLevel() > logging.INFO:
            ssp_logger.setLevel(logging.INFO)
        ssp_logger.addHandler(self.logs)

    @staticmethod
    def history(folder: Path) -> FolderHistory:
        """Conflicts and kept versions of ``folder`` (resolve, restore): local, no server."""
        return FolderHistory(folder)

    def throughput(self, window_s: float = 300.0) -> list[ThroughputPoint]:
        """Server send and client receive rates over the last ``window_s`` seconds."""
        since = time.time() - window_s
        points: list[ThroughputPoint] = []
        for series, samples in (
            ("server sent", self.server.samples()),
            ("client received", self.sync.samples()),
        ):
            recent = [sample for sample in samples if sample[0] >= since]
            points.extend(ThroughputPoint(t, series, rate) for t, rate in outline(rates(recent)))
        return points

    def close(self) -> None:
        """Stop the sync and the server and detach the log handler."""
        self.sync.cancel()
        self.sync.join()
        self.server.stop()
        logging.getLogger("ssp").removeHandler(self.logs)


_shared: Controller | None = None
_shared_lock = threading.Lock()


def shared_controller() -> Controller:
    """The process-wide controller, created on first use (see the module doc for why)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Controller()
        return _shared


def close_shared_controller() -> None:
    """Stop and forget the process-wide controller (tests; the next call makes a new one)."""
    global _shared
    with _shared_lock:
        controller, _shared = _shared, None
    if controller is not None:
        with contextlib.suppress(Exception):
            controller.close()
