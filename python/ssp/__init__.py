"""SSP (SmartSync Protocol): authenticated, encrypted folder sync with a Rust engine.

A drop-in for the original pure-Python SSP::

    from ssp import SSPServer, SSPClient

    server = SSPServer("secret", "/srv/share", host="0.0.0.0", port=8888)
    asyncio.run(server.start())                 # serves until server.stop()

    client = SSPClient("secret", "~/share", server_host="server.example", server_port=8888)
    ok = asyncio.run(client.sync())             # connects, authenticates, pulls

The engine lives in the native module ``ssp._native``; this package wraps it.
"""

from typing import TYPE_CHECKING, Any

from ssp._native import __version__, scan_folder, validate_path
from ssp.errors import (
    AddressInUseError,
    AuthError,
    ConfigError,
    DiskError,
    FolderError,
    PathError,
    ProtocolError,
    SSPConnectionError,
    SSPError,
)

if TYPE_CHECKING:
    from ssp.client import SSPClient
    from ssp.protocol import (
        CHUNK_SIZE,
        METADATA_DIR,
        PROTOCOL_VERSION,
        FileInfo,
        MessageType,
        SSPMessage,
        SSPProtocol,
    )
    from ssp.server import SSPServer

# Imported on first use (PEP 562), so that `ssp-client` does not pay for asyncio at start-up.
_LAZY = {
    "SSPClient": "ssp.client",
    "SSPServer": "ssp.server",
    "CHUNK_SIZE": "ssp.protocol",
    "METADATA_DIR": "ssp.protocol",
    "PROTOCOL_VERSION": "ssp.protocol",
    "FileInfo": "ssp.protocol",
    "MessageType": "ssp.protocol",
    "SSPMessage": "ssp.protocol",
    "SSPProtocol": "ssp.protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CHUNK_SIZE",
    "METADATA_DIR",
    "PROTOCOL_VERSION",
    "AddressInUseError",
    "AuthError",
    "ConfigError",
    "DiskError",
    "FileInfo",
    "FolderError",
    "MessageType",
    "PathError",
    "ProtocolError",
    "SSPClient",
    "SSPConnectionError",
    "SSPError",
    "SSPMessage",
    "SSPProtocol",
    "SSPServer",
    "__version__",
    "scan_folder",
    "validate_path",
]
