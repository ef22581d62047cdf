"""Compatibility module for the original SSP's imports.

``from ssp_protocol import SSPProtocol, SSPMessage, MessageType, CHUNK_SIZE`` keeps working.
"""

from ssp.protocol import (
    CHUNK_SIZE,
    PROTOCOL_VERSION,
    FileInfo,
    MessageType,
    SSPMessage,
    SSPProtocol,
)

__all__ = [
    "CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "FileInfo",
    "MessageType",
    "SSPMessage",
    "SSPProtocol",
]
