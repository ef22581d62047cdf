"""Protocol vocabulary kept from the original SSP: constants, message names, file records.

The wire format itself (framing, PAKE handshake, encryption) lives in the native engine; see
``docs/protocol.md``. What stays here is what scripts and UIs written for the original use:
:data:`PROTOCOL_VERSION`, :data:`CHUNK_SIZE`, :class:`MessageType`, :class:`FileInfo`,
:class:`SSPMessage` (an informational JSON form of a message) and :class:`SSPProtocol`, whose
``_scan_folder()`` lists a folder the way the original UI expects.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ssp import _native

__all__ = [
    "CHUNK_SIZE",
    "METADATA_DIR",
    "PROTOCOL_VERSION",
    "FileInfo",
    "MessageType",
    "SSPMessage",
    "SSPProtocol",
]

PROTOCOL_VERSION: int = _native.PROTOCOL_VERSION
"""Version of the wire protocol spoken by this build (negotiated in HELLO)."""

CHUNK_SIZE: int = _native.DEFAULT_CHUNK_SIZE
"""Default payload bytes per FILE_CHUNK frame (the original used 4 KiB)."""

METADATA_DIR: str = _native.METADATA_DIR
"""Per-folder metadata directory (hash cache); never synced."""


class MessageType(Enum):
    """Names of the protocol messages; the value is the name as it appears on the wire."""

    HELLO = "HELLO"
    AUTH = "AUTH"
    FILE_INDEX = "FILE_INDEX"
    FILE_REQUEST = "FILE_REQUEST"
    FILE_CHUNK = "FILE_CHUNK"
    ACK = "ACK"
    SYNC_COMPLETE = "SYNC_COMPLETE"
    ERROR = "ERROR"
    HEARTBEAT = "HEARTBEAT"


@dataclass
class FileInfo:
    """One file of a sync folder as the index describes it."""

    path: str
    """Relative, ``/``-separated path inside the sync folder."""
    size: int
    """Size in bytes."""
    hash: str
    """Hex content hash (BLAKE3 in protocol v2)."""
    modified_time: float
    """Modification time, seconds since the epoch."""
    executable: bool = False
    """Whether the owner-executable bit is set (kept by sync)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileInfo:
        return cls(
            path=data["path"],
            size=int(data["size"]),
            hash=data["hash"],
            modified_time=float(data["modified_time"]),
            executable=bool(data.get("executable", False)),
        )


@dataclass
class SSPMessage:
    """A protocol message in the original's JSON shape, for logging and display.

    The native engine builds and parses the real frames; this class only keeps the original's
    ``to_dict``/``from_dict``/``to_json`` helpers working for code that used them.
    """

    type: MessageType
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "payload": self.payload, "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSPMessage:
        return cls(
            type=MessageType(data["type"]),
            payload=dict(data.get("payload") or {}),
            timestamp=float(data.get("timestamp", time.time())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> SSPMessage:
        return cls.from_dict(json.loads(text))


class SSPProtocol:
    """What both ends share: the secret and the sync folder.

    Kept for the original API; the handshake and transfers are done by the native engine.
    """

    def __init__(self, shared_secret: str, sync_folder: str | Path) -> None:
        self.shared_secret = shared_secret
        self.sync_folder = Path(sync_folder).expanduser()
        # The original created the folder on construction; its UI relies on that.
        self.sync_folder.mkdir(parents=True, exist_ok=True)

    def create_message(self, msg_type: MessageType, payload: dict[str, Any]) -> SSPMessage:
        """Build an informational :class:`SSPMessage` (not sent anywhere)."""
        return SSPMessage(type=msg_type, payload=dict(payload))

    def _scan_folder(self) -> dict[str, FileInfo]:
        """Return ``{relative_path: FileInfo}`` for every file of the sync folder.

        Uses the engine's scanner, so unchanged files are not re-hashed (their hashes come
        from the cache in :data:`METADATA_DIR`). A folder that does not exist is empty.
        """
        if not self.sync_folder.is_dir():
            return {}
        return {
            rel: FileInfo(rel, size, digest, mtime, executable)
            for rel, size, digest, mtime, executable in _native.scan_folder(str(self.sync_folder))
        }

    def scan_folder(self) -> dict[str, FileInfo]:
        """Public name of :meth:`_scan_folder`."""
        return self._scan_folder()
