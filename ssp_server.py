"""The original SSP's ``python ssp_server.py SECRET FOLDER [HOST] [PORT]``, kept for its users.

Runs ``ssp-server`` from the installed ``ssp`` package (``pip install .`` first). Imported from
this folder it offers the original's ``SSPServer``, like the installed ``ssp_server`` module.
"""

import sys

try:
    from ssp.cli import server_main
    from ssp.server import SSPServer
except ImportError as exc:  # run from a checkout without the package installed
    sys.exit(f"ssp-server: error: the ssp package is not installed ({exc}); run: pip install .")

__all__ = ["SSPServer"]

if __name__ == "__main__":
    sys.exit(server_main(prog="ssp-server"))
