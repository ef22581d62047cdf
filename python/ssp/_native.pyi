"""Typed interface of the native SSP engine (``ssp._native``, built from ``src/bindings``).

The engine runs on its own process-wide tokio runtime. Every awaitable returned here may be
awaited from any asyncio event loop in any thread; the GIL is released while the engine works.
Python callers normally use :class:`ssp.SSPServer` / :class:`ssp.SSPClient`, which wrap these.
"""

from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypedDict, final

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SECRET",
    "MAX_CHUNK_SIZE",
    "MAX_PEER_TEXT_CHARS",
    "METADATA_DIR",
    "MIN_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "SHORT_SECRET_CHARS",
    "AddressInUseError",
    "AuthError",
    "ConfigError",
    "DiskError",
    "FolderError",
    "NativeClient",
    "NativeServer",
    "PathError",
    "ProtocolError",
    "SSPConnectionError",
    "SSPError",
    "__version__",
    "printable",
    "scan_folder",
    "tune_allocator_for_transfers",
    "validate_path",
]

__version__: str
PROTOCOL_VERSION: int
"""Version of the wire protocol this engine speaks (2)."""
DEFAULT_CHUNK_SIZE: int
"""Default payload bytes per FILE_CHUNK frame."""
MIN_CHUNK_SIZE: int
MAX_CHUNK_SIZE: int
METADATA_DIR: str
"""Name of the per-folder metadata directory (never synced)."""
DEFAULT_SECRET: str
"""The secret a fresh installation starts with (``default_secret_key``); a server refuses to
listen beyond loopback with it."""
SHORT_SECRET_CHARS: int
"""Secrets with fewer characters than this are warned about (an online attacker may guess them)."""
MAX_PEER_TEXT_CHARS: int
"""The most characters of a peer's text the engine keeps (see :func:`printable`)."""

class SSPError(Exception):
    """Base class of every error the engine raises."""

class AuthError(SSPError):
    """The peer does not share our secret (or the handshake was tampered with)."""

class ProtocolError(SSPError):
    """The peer broke the protocol: bad frame, version mismatch, forged message."""

class PathError(SSPError):
    """A path was rejected: absolute, ``..``, NUL, backslash or inside the metadata folder."""

class AddressInUseError(SSPError):
    """The server's port is already taken by another program."""

class FolderError(SSPError):
    """The sync folder is missing, not a folder, or unreadable/unwritable."""

class SSPConnectionError(SSPError):
    """The connection could not be made or was lost (refused, reset, timeout)."""

class DiskError(SSPError):
    """A local disk operation failed (full disk, permission denied, ...)."""

class ConfigError(SSPError):
    """The configuration is unsafe or unusable: an empty secret, or the default secret on an
    address beyond loopback. Nothing was started."""

def scan_folder(folder: str) -> List[Tuple[str, int, str, float, bool]]:
    """Scan ``folder`` (using and refreshing its hash cache) and return
    ``[(relative_path, size, blake3_hex, mtime_seconds, executable), ...]`` sorted by path."""

def tune_allocator_for_transfers() -> bool:
    """Keep freed transfer buffers in this process instead of returning them to the kernel
    (glibc only; process-wide, so only the CLI calls it). True if anything was changed."""

def printable(text: str, max_chars: int = ...) -> str:
    """``text`` as one line safe to show people: control, bidi and line-separator characters
    written as ``\\u{..}``, cut to ``max_chars`` characters (an ellipsis included). The engine's
    own rule for a peer's words."""

def validate_path(path: str) -> str:
    """Return ``path`` if it is an acceptable relative sync path, else raise :class:`PathError`."""

@final
class NativeServer:
    def __new__(
        cls,
        shared_secret: str,
        sync_folder: str,
        host: str = "localhost",
        port: int = 8888,
        chunk_size: int = 524288,
    ) -> NativeServer: ...
    def bind(self) -> Awaitable[int]:
        """Create the folder if missing, bind the listener and return the bound port.

        Raises :class:`AddressInUseError` (naming the port) or :class:`FolderError`."""
    def serve(self) -> Awaitable[None]:
        """Accept and serve clients until :meth:`stop`; requires :meth:`bind` first."""
    def stop(self) -> Awaitable[None]:
        """Stop accepting, close every session and wait until all are gone. Idempotent."""
    def status(self) -> Dict[str, Any]:
        """Snapshot: ``running, host, port, active_connections, sync_folder, clients,
        stats={total_connections, active_connections, files_sent, bytes_sent, sync_sessions,
        files_received, bytes_received, uptime_s, auth_failures, refused_connections}``."""

class _SyncStats(TypedDict):
    """A client's transfer figures (``SyncStats`` in ``src/sync/client.rs``): the original SSP's
    keys first, then whole-sync totals. Counters are cumulative over the client's syncs."""

    files_received: int
    bytes_received: int
    files_sent: int
    bytes_sent: int
    sync_start_time: float
    """Unix time the last sync started; ``0.0`` before the first (never ``None``: the original's
    page compares it with ``0``)."""
    sync_duration: float
    """Seconds the last sync took; ``0.0`` before the first finishes."""
    files_total: int
    bytes_total: int
    files_unchanged: int
    files_failed: int
    syncs_completed: int
    last_error: Optional[str]

@final
class NativeClient:
    def __new__(
        cls,
        shared_secret: str,
        sync_folder: str,
        server_host: str = "localhost",
        server_port: int = 8888,
        chunk_size: Optional[int] = None,
    ) -> NativeClient: ...
    def connect(
        self, on_event: Optional[Callable[[str, Dict[str, Any]], None]] = None
    ) -> Awaitable[None]:
        """Connect, negotiate the version and authenticate.

        Raises :class:`AuthError`, :class:`SSPConnectionError` or :class:`ProtocolError`.
        ``on_event(kind, payload)`` is called from an engine thread with kind ``"status"``
        (payload ``{"status": str, "details": str}``)."""
    def sync(
        self, on_event: Optional[Callable[[str, Dict[str, Any]], None]] = None
    ) -> Awaitable[_SyncStats]:
        """Pull every new or changed file of the server's folder; return the sync stats.

        ``on_event`` receives ``("status", {...})`` and, at most ~10 times a second,
        ``("progress", {...})`` with keys ``phase, files_to_request, files_received, file_path,
        chunk_index, total_chunks, progress, files_done, files_total, bytes_done, bytes_total,
        rate_bps, eta_s``. It is called from an engine thread: the Python wrapper re-schedules it
        onto the caller's event loop."""
    def pull_blocking(
        self, on_event: Optional[Callable[[str, Dict[str, Any]], None]] = None
    ) -> _SyncStats:
        """Connect if needed, sync and disconnect, blocking the calling thread (GIL released);
        return the sync stats or raise like :meth:`sync`. A pending signal (Ctrl-C) cancels
        the sync and is raised (``KeyboardInterrupt``). ``on_event`` is called directly from
        engine threads. For programs without an event loop, such as the command line."""
    def cancel(self) -> None:
        """Ask a running sync to stop; it then raises :class:`SSPError` ("sync cancelled")."""
    def disconnect(self) -> Awaitable[None]: ...
    def status(self) -> Dict[str, Any]:
        """Snapshot: ``connected, authenticated, sync_in_progress, server_host, server_port,
        sync_folder, pending_requests, stats}``, ``stats`` being a :class:`_SyncStats`."""
