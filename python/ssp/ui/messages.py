"""Engine errors as one actionable line each: what went wrong and what to do about it.

The engine's own messages already name the cause (``address 127.0.0.1:8888 is already in use``);
these add the next step in the page's terms (which field to change). No traceback ever reaches
the page: an unexpected exception becomes its class name and message.
"""

from __future__ import annotations

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

__all__ = ["explain", "explain_client_failure"]


def explain(exc: BaseException, *, host: str, port: int, folder: str) -> str:
    """One line for ``exc``, raised while serving or syncing ``folder`` with ``host:port``."""
    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, AddressInUseError):
        return (
            f"Port {port} on {host} is already in use (another SSP server or another program "
            f"listens there). Stop that program, or choose another port in the sidebar."
        )
    if isinstance(exc, AuthError):
        return _auth_failed(host, port)
    if isinstance(exc, FolderError):
        return f"Cannot use the folder {folder}: {reason}. Choose a folder you can write to."
    if isinstance(exc, DiskError):
        return f"Disk error in {folder}: {reason}. Check free space and permissions."
    if isinstance(exc, PathError):
        return f"Refused an unsafe path: {reason}."
    if isinstance(exc, ProtocolError):
        return (
            f"The peer at {host}:{port} does not speak this SSP version ({reason}). "
            f"Run the same SSP version on both sides."
        )
    if isinstance(exc, SSPConnectionError):
        return _unreachable(host, port, reason)
    if isinstance(exc, PermissionError):
        return f"Permission denied: {reason}. Use a port above 1024 or a folder you own."
    if isinstance(exc, (SSPError, OSError)):
        return f"{reason[:1].upper()}{reason[1:]}."
    return f"Unexpected error ({type(exc).__name__}): {reason}"


def explain_client_failure(status: str | None, reason: str | None, *, host: str, port: int) -> str:
    """One line for a sync that ended with engine status ``status`` and ``reason``.

    :class:`ssp.SSPClient` reports failures as statuses (it never raises from ``connect()`` or
    ``sync()``), so this maps the status the way :func:`explain` maps exception classes.
    """
    text = (reason or "").strip()
    if status == "AUTH_FAILED":
        return _auth_failed(host, port)
    if status == "CONNECTION_ERROR" and "peer reported" in text:
        # It was reached and said no: its words (shown as text, see ssp.text) say why.
        return f"The server at {host}:{port} ended the sync: {text}."
    if status == "CONNECTION_ERROR":
        return _unreachable(host, port, text or "connection failed")
    return f"Sync failed: {text or 'unknown error'}."


def _auth_failed(host: str, port: int) -> str:
    return (
        f"Authentication failed: the server at {host}:{port} does not share this secret. "
        f"Check that the shared secret in the sidebar is the same on both machines."
    )


def _unreachable(host: str, port: int, reason: str) -> str:
    return (
        f"Cannot reach an SSP server at {host}:{port} ({reason}). Is the server started, "
        f"and are the host and port right?"
    )
