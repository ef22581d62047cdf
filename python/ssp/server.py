"""The SSP server: serves a folder to authenticated clients (wraps ``_native.NativeServer``).

Every awaitable method is a real ``async def`` that calls into the engine only once an event
loop runs, so ``asyncio.run(server.start())`` works. The wrapper keeps no loop-bound state: one
thread may run ``asyncio.run(server.start())`` while another runs ``asyncio.run(server.stop())``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from ssp import _native
from ssp.protocol import CHUNK_SIZE

__all__ = ["DEFAULT_SECRET", "SHORT_SECRET_CHARS", "SSPServer"]

logger = logging.getLogger("ssp.server")

DEFAULT_SECRET: str = _native.DEFAULT_SECRET
"""The original SSP's default secret, which anyone who knows SSP knows: the engine refuses to
listen beyond loopback with it (or anywhere with an empty secret) and raises
:class:`ssp.errors.ConfigError`."""
SHORT_SECRET_CHARS: int = _native.SHORT_SECRET_CHARS
"""Secrets shorter than this many characters are warned about (the engine warns in its log)."""


class SSPServer:
    """Serve ``sync_folder`` on ``host:port`` to clients that know ``shared_secret``.

    ``await start()`` binds and then serves until :meth:`stop` is awaited (from any thread or
    loop). ``port=0`` picks a free port; :attr:`port` holds the real one once bound.
    """

    def __init__(
        self,
        shared_secret: str,
        sync_folder: str | Path,
        host: str = "localhost",
        port: int = 8888,
        chunk_size: int = CHUNK_SIZE,
        *,
        read_only: bool = False,
        keep_versions_days: float | None = _native.DEFAULT_VERSIONS_KEEP_DAYS,
    ) -> None:
        self.shared_secret = shared_secret
        self.sync_folder = Path(sync_folder).expanduser()
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.read_only = read_only
        self.keep_versions_days = keep_versions_days
        # Port asked for at construction; a restart after stop() asks for it again.
        self._requested_port = port
        # Guards the fields below, which threads other than the serving one read or write.
        self._lock = threading.Lock()
        self._native = self._new_native()
        self._bound = False
        # Set by stop(): a start() that has not reached serve() yet must not begin serving.
        self._stop_requested = False
        # True once stop() went through; the next start() needs a fresh native server.
        self._stopped = False
        # Set while listening, so other threads can wait for the port (see wait_started()).
        self._listening = threading.Event()
        self._serving = False

    def _new_native(self) -> _native.NativeServer:
        return _native.NativeServer(
            self.shared_secret,
            str(self.sync_folder),
            self.host,
            self._requested_port,
            self.chunk_size,
            read_only=self.read_only,
            keep_versions_days=self.keep_versions_days,
        )

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._listening.is_set()

    @property
    def clients(self) -> list[str]:
        """Connected clients as ``"ip:port"`` strings."""
        return list(self.get_server_status()["clients"])

    async def bind(self) -> int:
        """Create the folder if missing and bind the listener; return the bound port.

        Raises :class:`ssp.errors.AddressInUseError`, :class:`ssp.errors.FolderError`, or
        :class:`ssp.errors.ConfigError` for an empty secret, or the default one beyond loopback.
        """
        with self._lock:
            if self._stopped:
                self._native = self._new_native()
                self._stopped = False
                self._bound = False
            if self._bound:
                return self.port
            native = self._native
        port = await native.bind()
        with self._lock:
            self._bound = True
            self.port = port
        return port

    async def start(self) -> None:
        """Bind (if not done yet) and serve clients until :meth:`stop` is called."""
        with self._lock:
            self._stop_requested = False
        await self.bind()
        with self._lock:
            native = self._native
            abort = self._stop_requested
            if not abort:
                self._serving = True
                self._listening.set()
        if abort:
            # stop() came while we were binding: release the port and return, as if served.
            await native.stop()
            with self._lock:
                self._stopped = True
                self._bound = False
            return
        try:
            await native.serve()
        finally:
            with self._lock:
                self._serving = False
                self._listening.clear()
                self._stopped = True
                self._bound = False
            logger.info("server on port %d stopped", self.port)

    async def start_background(self) -> int:
        """Bind, then serve in a task of the running loop; return the bound port.

        The task runs until :meth:`stop`. Use it when the caller's loop has other work to do.
        """
        port = await self.bind()
        task = asyncio.ensure_future(self.start())
        # Keep a reference so the task is not garbage-collected while serving.
        self._background_task = task
        await asyncio.sleep(0)
        return port

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the server listens (for callers in another thread); False on timeout."""
        return self._listening.wait(timeout)

    async def stop(self) -> None:
        """Stop accepting, close every session and wait until they are gone. Idempotent.

        Stops a server that is serving or still binding; a ``stop()`` that comes before
        ``start()`` was called has no effect on that later ``start()``.
        """
        with self._lock:
            self._stop_requested = True
            native = self._native
            bound = self._bound
            serving = self._serving
        if bound or serving:
            await native.stop()
        with self._lock:
            self._listening.clear()
            if bound and not self._serving:
                # Bound but never served (bind() or start_background() only): now released.
                self._stopped = True
                self._bound = False

    def get_server_status(self) -> dict[str, Any]:
        """Snapshot: ``running, host, port, active_connections, sync_folder, clients, stats``."""
        try:
            status = dict(self._native.status())
        except Exception:  # the snapshot is informational; never let it break a UI
            logger.debug("native status() failed", exc_info=True)
            status = {}
        stats: dict[str, Any] = dict(status.get("stats") or {})
        for key in (
            "total_connections",
            "active_connections",
            "files_sent",
            "bytes_sent",
            "sync_sessions",
            "files_received",
            "bytes_received",
        ):
            stats.setdefault(key, 0)
        clients: list[str] = list(status.get("clients") or [])
        status.update(
            running=bool(status.get("running", False)) or self.running,
            host=self.host,
            port=self.port,
            active_connections=int(status.get("active_connections", stats["active_connections"])),
            sync_folder=str(self.sync_folder),
            clients=clients,
            stats=stats,
        )
        return status
