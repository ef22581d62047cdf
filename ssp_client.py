"""The original SSP's ``python ssp_client.py SECRET FOLDER [HOST] [PORT]``, kept for its users.

Runs ``ssp-client`` from the installed ``ssp`` package (``pip install .`` first). Imported from
this folder it offers the original's ``SSPClient``, like the installed ``ssp_client`` module.
"""

import sys

try:
    from ssp.cli import client_main
    from ssp.client import SSPClient
except ImportError as exc:  # run from a checkout without the package installed
    sys.exit(f"ssp-client: error: the ssp package is not installed ({exc}); run: pip install .")

__all__ = ["SSPClient"]

if __name__ == "__main__":
    sys.exit(client_main(prog="ssp-client"))
