"""The exceptions SSP raises: one per kind of failure, all subclasses of :class:`SSPError`.

They are defined by the native engine (``ssp._native``) so that errors raised in Rust and
errors raised by the Python wrappers are the same classes.
"""

from ssp._native import (
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

__all__ = [
    "AddressInUseError",
    "AuthError",
    "ConfigError",
    "DiskError",
    "FolderError",
    "PathError",
    "ProtocolError",
    "SSPConnectionError",
    "SSPError",
]
