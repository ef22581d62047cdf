"""Compatibility module: ``from ssp_client import SSPClient`` as with the original SSP.

``python -m ssp_client SECRET FOLDER [HOST] [PORT]`` runs ``ssp-client``.
"""

from ssp.cli import client_main as main
from ssp.client import SSPClient

__all__ = ["SSPClient", "main"]
