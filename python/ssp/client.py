"""The SSP client: syncs a folder with a server's, two-way by default (wraps
``_native.NativeClient``).

The engine reports status and progress from its own threads. Each call that takes callbacks
(:meth:`SSPClient.connect`, :meth:`SSPClient.sync`) captures the event loop awaiting it and
re-schedules the user's callbacks onto that loop with ``call_soon_threadsafe``, so callbacks run
on the caller's thread and never race it. A callback that raises is logged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ssp import _native
from ssp.text import printable

if TYPE_CHECKING:
    from ssp._native import _ConflictCopy, _Keep, _SyncMode, _SyncReport, _Version

__all__ = [
    "DEFAULT_VERSIONS_KEEP_DAYS",
    "STATUSES",
    "SYNC_MODES",
    "ProgressCallback",
    "SSPClient",
    "StatusCallback",
]

logger = logging.getLogger("ssp.client")

ProgressCallback = Callable[[dict[str, Any]], Any]
StatusCallback = Callable[[str, str], Any]
EngineListener = Callable[[str, dict[str, Any]], None]

STATUSES = _native.STATUSES
"""Every status string the client reports (the original's vocabulary plus ``AUTH_FAILED`` and
``CONFLICT``), from the engine."""
SYNC_MODES = _native.SYNC_MODES
"""The modes a client syncs in: ``two-way`` (the default), ``pull``, ``push``."""
DEFAULT_VERSIONS_KEEP_DAYS: int = _native.DEFAULT_VERSIONS_KEEP_DAYS
"""Days a file replaced or deleted by a sync is kept in ``.ssp/versions/`` by default."""


class SSPClient:
    """Sync ``sync_folder`` with ``server_host:server_port``'s folder using ``shared_secret``.

    ``mode``: ``"two-way"`` (the default), ``"pull"`` (apply the server's changes, deletions
    included, send nothing) or ``"push"`` (its mirror). Changes on both sides are conflicts:
    both versions survive, the losing one as ``name.sync-conflict-...`` (see
    :meth:`get_conflicts`). ``allow_mass_delete``: let a sync go on when every file is gone
    (off: the sync fails with :class:`ssp.errors.FolderError`). ``keep_versions_days``: how
    long files a sync replaces or deletes stay in ``.ssp/versions/`` (``0`` or ``None``: off).
    """

    def __init__(
        self,
        shared_secret: str,
        sync_folder: str | Path,
        server_host: str = "localhost",
        server_port: int = 8888,
        chunk_size: int | None = None,
        *,
        mode: _SyncMode = "two-way",
        allow_mass_delete: bool = False,
        keep_versions_days: float | None = DEFAULT_VERSIONS_KEEP_DAYS,
    ) -> None:
        self.shared_secret = shared_secret
        self.sync_folder = Path(sync_folder).expanduser()
        self.server_host = server_host
        self.server_port = server_port
        self.chunk_size = chunk_size
        self.mode: _SyncMode = mode
        self.allow_mass_delete = allow_mass_delete
        self.keep_versions_days = keep_versions_days
        self.progress_callback: ProgressCallback | None = None
        self.status_callback: StatusCallback | None = None
        self.last_error: str | None = None
        """Why the last connect() or sync() failed, or None if it succeeded."""
        self.last_status: str | None = None
        """The last status delivered to the status callback."""
        self._native = _native.NativeClient(
            shared_secret,
            str(self.sync_folder),
            server_host,
            server_port,
            chunk_size,
            mode=mode,
            allow_mass_delete=allow_mass_delete,
            keep_versions_days=keep_versions_days,
        )
        # Stats returned by the last completed sync (the native snapshot covers the current one).
        self._last_sync_stats: dict[str, Any] = {}
        # Statuses delivered during the current call, so the wrapper does not repeat the engine.
        self._seen: set[str] = set()

    # -- callbacks -------------------------------------------------------------------------

    def set_progress_callback(self, callback: ProgressCallback | None) -> None:
        """Call ``callback(progress_dict)`` at a bounded rate during :meth:`sync`."""
        self.progress_callback = callback

    def set_status_callback(self, callback: StatusCallback | None) -> None:
        """Call ``callback(status, details)`` on every status change."""
        self.status_callback = callback

    def _engine_listener(self, loop: asyncio.AbstractEventLoop) -> EngineListener:
        """Return the ``on_event`` given to the engine: it only hops onto ``loop``."""

        def on_event(kind: str, payload: dict[str, Any]) -> None:
            # A closed loop (RuntimeError) means nobody waits for these events any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, kind, payload)

        return on_event

    def _dispatch(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "status":
            # Details may quote the server (an ERROR's message): one printable line from here on,
            # for callbacks and logs alike (see ssp.text).
            details = printable(payload.get("details", ""))
            self._emit_status(str(payload.get("status", "")), details)
        elif kind == "progress":
            self._emit_progress(dict(payload))
        else:
            logger.debug("ignoring engine event %r: %r", kind, payload)

    def _emit_status(self, status: str, details: str = "") -> None:
        self._seen.add(status)
        self.last_status = status
        logger.debug("status %s %s", status, details)
        callback = self.status_callback
        if callback is None:
            return
        try:
            callback(status, details)
        except Exception:
            logger.exception("status callback raised (ignored)")

    def _emit_progress(self, progress: dict[str, Any]) -> None:
        callback = self.progress_callback
        if callback is None:
            return
        try:
            callback(progress)
        except Exception:
            logger.exception("progress callback raised (ignored)")

    @staticmethod
    async def _drain() -> None:
        # Events the engine sent before its future resolved are already queued on this loop;
        # yielding once lets them run before the caller sees the result.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    # -- operations ------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect and authenticate. True once authenticated; False (never an exception) when
        the server is unreachable, refuses, speaks another version or does not share the
        secret. The reason is kept in :attr:`last_error`."""
        loop = asyncio.get_running_loop()
        self._seen = set()
        self.last_error = None
        try:
            await self._native.connect(self._engine_listener(loop))
        except _native.AuthError as exc:
            await self._fail(exc, "AUTH_FAILED")
            return False
        except (_native.SSPError, OSError) as exc:
            await self._fail(exc, "CONNECTION_ERROR")
            return False
        await self._drain()
        if "AUTHENTICATED" not in self._seen:
            self._emit_status("AUTHENTICATED", f"{self.server_host}:{self.server_port}")
        return True

    async def sync(self) -> bool:
        """Sync with the server's folder in :attr:`mode` (connecting first if needed).

        True after a complete sync (entries it could not sync are listed by
        :meth:`get_last_report`); False on failure, with status ``SYNC_ERROR`` and the reason in
        :attr:`last_error` (another sync using the folder, the mass-deletion guard, a push to
        a read-only server, ...). Each conflict is reported with status ``CONFLICT``."""
        authenticated = self._native.status().get("authenticated", False)
        if not authenticated and not await self.connect():
            return False
        loop = asyncio.get_running_loop()
        self._seen = set()
        self.last_error = None
        try:
            stats = await self._native.sync(self._engine_listener(loop))
        except (_native.SSPError, OSError) as exc:
            await self._fail(exc, "SYNC_ERROR")
            return False
        await self._drain()
        self._last_sync_stats = dict(stats)
        if "SYNC_COMPLETED" not in self._seen:
            self._emit_status("SYNC_COMPLETED", "")
        return True

    async def _fail(self, exc: BaseException, status: str) -> None:
        self.last_error = printable(exc) or type(exc).__name__
        logger.debug("%s: %s", status, self.last_error)
        await self._drain()
        # The engine usually reported the failure itself; report it only if it did not.
        if status in self._seen or (status == "CONNECTION_ERROR" and "AUTH_FAILED" in self._seen):
            return
        self._emit_status(status, self.last_error)

    def cancel_sync(self) -> None:
        """Ask a running :meth:`sync` to stop; it then returns False. Safe from any thread."""
        self._native.cancel()

    async def disconnect(self) -> None:
        """Close the connection (idempotent)."""
        was_connected = bool(self._native.status().get("connected", False))
        try:
            await self._native.disconnect()
        except (_native.SSPError, OSError) as exc:
            logger.debug("disconnect: %s", exc)
        if was_connected:
            self._emit_status("DISCONNECTED", "")

    # -- conflicts and versions (the local folder: no connection needed) --------------------

    async def get_conflicts(self) -> list[_ConflictCopy]:
        """The conflict copies in the folder now, each with both versions' size, mtime (ns)
        and device: ``path`` (the original) and ``size, mtime_ns, device``; ``copy`` and
        ``copy_size, copy_mtime_ns, copy_device``."""
        copies = await self._native.conflicts()
        # The engine lists the copies its store knew at the last scan; one resolved since (or
        # removed by hand) is gone from the disk already and must not be offered again.
        root = self.sync_folder
        return await asyncio.to_thread(
            lambda: [c for c in copies if os.path.lexists(root / c["copy"])]
        )

    async def resolve_conflict(self, copy: str, keep: _Keep) -> None:
        """Resolve the conflict copy ``copy``: ``keep="original"`` (the file at the original
        name stays), ``"copy"`` (the copy's content takes the name) or ``"both"`` (the copy is
        renamed so it is no longer a conflict). What goes is kept in versions; the next sync
        carries the result. Raises ``ValueError`` or :class:`ssp.errors.PathError`."""
        await self._native.resolve(copy, keep)

    async def list_versions(self, path: str | None = None) -> list[_Version]:
        """Versions kept of ``path`` (of every path when ``None``), newest first: ``path,
        stored, archived_ns, size, mtime_ns``."""
        return list(await self._native.versions(path))

    async def restore(self, path: str, at: float | None = None) -> _Version:
        """Put back the version of ``path`` kept at ``at`` (unix seconds; the newest at or
        before it, the newest when ``None``); the current file goes into versions first.
        Returns the version restored. Raises :class:`ssp.errors.SSPError` if none is kept."""
        return await self._native.restore(path, at)

    def get_last_report(self) -> _SyncReport:
        """What the last sync left to look at: ``conflicts`` (path, copy, winner, local and
        remote size/mtime/device), ``skipped`` and ``failed`` (path, reason), ``warnings``."""
        return self._native.report()

    # -- snapshots -------------------------------------------------------------------------

    # Attributes the original client exposed, now read from the engine.
    @property
    def connected(self) -> bool:
        return bool(self._native.status().get("connected", False))

    @property
    def authenticated(self) -> bool:
        return bool(self._native.status().get("authenticated", False))

    @property
    def sync_in_progress(self) -> bool:
        return bool(self._native.status().get("sync_in_progress", False))

    @property
    def sync_stats(self) -> dict[str, Any]:
        return self.get_sync_stats()

    def get_sync_stats(self) -> dict[str, Any]:
        """Transfer figures of the current or last sync (``files_received, bytes_received,
        files_sent, bytes_sent, sync_start_time, sync_duration, ...``); both times are ``0``
        before the first sync, as in the original."""
        # The engine's snapshot carries every key with its default (0 for both times before
        # any sync, as the original reported): the defaults live there alone.
        stats = dict(self._last_sync_stats)
        try:
            stats.update(self._native.status().get("stats") or {})
        except Exception:
            logger.debug("native status() failed", exc_info=True)
        return stats

    def get_client_status(self) -> dict[str, Any]:
        """Snapshot: ``connected, authenticated, sync_in_progress, server_host, server_port,
        sync_folder, stats, pending_requests`` (plus ``last_status``, ``last_error``)."""
        try:
            status = dict(self._native.status())
        except Exception:
            logger.debug("native status() failed", exc_info=True)
            status = {}
        status.update(
            connected=bool(status.get("connected", False)),
            authenticated=bool(status.get("authenticated", False)),
            sync_in_progress=bool(status.get("sync_in_progress", False)),
            server_host=self.server_host,
            server_port=self.server_port,
            sync_folder=str(self.sync_folder),
            pending_requests=int(status.get("pending_requests", 0) or 0),
            stats=self.get_sync_stats(),
            last_status=self.last_status,
            last_error=self.last_error,
        )
        return status

    # Convenience for scripts: ``async with SSPClient(...) as c: await c.sync()``.
    async def __aenter__(self) -> SSPClient:  # noqa: PYI034
        if not await self.connect():
            raise _native.SSPConnectionError(self.last_error or "connection failed")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()
