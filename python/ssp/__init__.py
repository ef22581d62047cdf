"""SSP (SmartSync Protocol): authenticated, encrypted folder sync with a Rust engine.

A drop-in for the original pure-Python SSP::

    from ssp import SSPServer, SSPClient

    server = SSPServer("secret", "/srv/share", host="0.0.0.0", port=8888)
    asyncio.run(server.start())                 # serves until server.stop()

    client = SSPClient("secret", "~/share", server_host="server.example", server_port=8888)
    ok = asyncio.run(client.sync())             # connects, authenticates, pulls

The engine lives in the native module ``ssp._native``; this package wraps it.
"""

from ssp._native import __version__, scan_folder, validate_path
from ssp.client import SSPClient
from ssp.errors import (
    AddressInUseError,
    AuthError,
    DiskError,
    FolderError,
    PathError,
    ProtocolError,
    SSPConnectionError,
    SSPError,
)
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

__all__ = [
    "CHUNK_SIZE",
    "METADATA_DIR",
    "PROTOCOL_VERSION",
    "AddressInUseError",
    "AuthError",
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
