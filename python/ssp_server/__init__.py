"""Compatibility module: ``from ssp_server import SSPServer`` as with the original SSP.

``python -m ssp_server SECRET FOLDER [HOST] [PORT]`` runs ``ssp-server``.
"""

from ssp.cli import server_main as main
from ssp.server import SSPServer

__all__ = ["SSPServer", "main"]
