"""Typed interface of the native SSP engine (``ssp._native``, built from ``src/bindings``).

The engine runs on its own process-wide tokio runtime. Every awaitable returned here may be
awaited from any asyncio event loop in any thread; the GIL is released while the engine works.
Python callers normally use :class:`ssp.SSPServer` / :class:`ssp.SSPClient`, which wrap these.
"""

from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Optional,
    Tuple,
    TypedDict,
    final,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SECRET",
    "DEFAULT_VERSIONS_KEEP_DAYS",
    "MAX_CHUNK_SIZE",
    "MAX_PEER_TEXT_CHARS",
    "METADATA_DIR",
    "MIN_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "SHORT_SECRET_CHARS",
    "STATUSES",
    "SYNC_MODES",
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
"""Version of the wire protocol this engine speaks (3)."""
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
DEFAULT_VERSIONS_KEEP_DAYS: int
"""Days a file replaced or deleted by a sync is kept in ``.ssp/versions/`` unless configured."""

_SyncMode = Literal["two-way", "pull", "push"]
"""What a client's sync moves: both ways (the default), only from the server, only to it."""
SYNC_MODES: Tuple[_SyncMode, ...]
"""Every mode, the default first (the engine's ``SyncMode::ALL``)."""
_Status = Literal[
    "CONNECTING",
    "HANDSHAKE",
    "CONNECTED",
    "AUTHENTICATED",
    "AUTH_FAILED",
    "SYNC_STARTED",
    "SYNC_COMPLETED",
    "SYNC_ERROR",
    "CONFLICT",
    "CONNECTION_ERROR",
    "SERVER_ERROR",
    "DISCONNECTED",
]
"""A status the client reports (the original's vocabulary plus ``AUTH_FAILED`` and ``CONFLICT``)."""
STATUSES: Tuple[_Status, ...]
"""Every status, in the order a sync meets them (the engine's ``Status::ALL``)."""
_Keep = Literal["original", "copy", "both"]
"""How a conflict is resolved: keep the file at the original name, the conflict copy's content
(moved to the original name), or both (the copy renamed so it is no longer a conflict)."""

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
        *,
        read_only: bool = False,
        keep_versions_days: Optional[float] = 30.0,
    ) -> NativeServer:
        """``read_only``: take no changes from clients (a push is refused with
        :class:`ConfigError`; two-way clients only pull). ``keep_versions_days``: how long files
        replaced or deleted by a sync stay in ``.ssp/versions/`` (``None`` or ``0``: not kept)."""
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
    files_deleted: int
    """Files the last sync deleted here (kept in ``.ssp/versions/``)."""
    conflicts: int
    """Conflicts the last sync found (both versions kept; see :meth:`NativeClient.report`)."""
    files_skipped: int
    """Entries the last sync did not sync, on either side (see :meth:`NativeClient.report`)."""
    syncs_completed: int
    last_error: Optional[str]

class _ConflictSide(TypedDict):
    """One side of a conflict the last sync met."""

    size: int
    mtime_ns: int
    device: Optional[str]
    """The short ID of the device that made this version, if known."""
    deleted: bool

class _ConflictReport(TypedDict):
    """A conflict the last sync met: both versions survive, the loser as ``copy``."""

    path: str
    copy: str
    winner: Literal["local", "remote"]
    """Whose version kept the name."""
    local: _ConflictSide
    remote: _ConflictSide

class _PathReason(TypedDict):
    """An entry not synced (or a change that failed) and why. ``path`` is ``""`` for the whole
    folder (a read-only server)."""

    path: str
    reason: str

class _SyncReport(TypedDict):
    """What the last sync left for people to look at."""

    conflicts: List[_ConflictReport]
    skipped: List[_PathReason]
    """Entries not synced: unsupported type, unreadable, unrepresentable name, outside symlink."""
    warnings: List[_PathReason]
    """Entries synced with a caveat (names another common platform cannot hold)."""
    failed: List[_PathReason]
    """Changes that failed (the sync then raised)."""

class _ConflictCopy(TypedDict):
    """A conflict copy in the folder now and the file it is a copy of."""

    path: str
    """The original path."""
    copy: str
    """The conflict copy (``name.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext``)."""
    copy_device: str
    copy_size: int
    copy_mtime_ns: int
    size: Optional[int]
    """Size of the file at the original path; these three are ``None`` if it was deleted."""
    mtime_ns: Optional[int]
    device: Optional[str]

class _Version(TypedDict):
    """A version kept in ``.ssp/versions/``."""

    path: str
    """The path it had in the folder."""
    stored: str
    """Where it is stored, relative to ``.ssp/versions``."""
    archived_ns: int
    """When it was archived (whole seconds), nanoseconds since the epoch."""
    size: int
    mtime_ns: int

@final
class NativeClient:
    def __new__(
        cls,
        shared_secret: str,
        sync_folder: str,
        server_host: str = "localhost",
        server_port: int = 8888,
        chunk_size: Optional[int] = None,
        *,
        mode: _SyncMode = "two-way",
        allow_mass_delete: bool = False,
        keep_versions_days: Optional[float] = 30.0,
    ) -> NativeClient:
        """``mode``: one of :data:`SYNC_MODES` (else ``ValueError``). ``allow_mass_delete``: let a
        sync go on when every file of the folder is gone (off: it raises :class:`FolderError`).
        ``keep_versions_days``: how long files replaced or deleted by a sync stay in
        ``.ssp/versions/`` (``None`` or ``0``: not kept)."""
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
        """Sync with the server in this client's mode; return the sync stats.

        Raises :class:`FolderError` when another sync uses the folder or every file is gone
        (the mass-deletion guard), :class:`ConfigError` when pushing to a read-only server.

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
    def report(self) -> _SyncReport:
        """Conflicts, entries not synced and failures of the last sync (empty before one)."""
    def conflicts(self) -> Awaitable[List[_ConflictCopy]]:
        """The conflict copies in the folder as the last scan saw them. Needs no connection."""
    def resolve(self, copy: str, keep: _Keep) -> Awaitable[None]:
        """Resolve the conflict copy ``copy``; what goes is kept in versions, and the next
        sync carries the result. ``ValueError`` for another ``keep``, :class:`PathError` for a
        name that is not a conflict copy's. Needs no connection."""
    def versions(self, path: Optional[str] = None) -> Awaitable[List[_Version]]:
        """Versions kept of ``path`` (of every path when ``None``), newest first."""
    def restore(self, path: str, at: Optional[float] = None) -> Awaitable[_Version]:
        """Put back the version of ``path`` kept at ``at`` (unix seconds: the newest at or
        before it; the newest when ``None``); the current file goes into versions first.
        Returns the version restored."""
