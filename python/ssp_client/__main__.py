"""``python -m ssp_client``: the same as ``ssp-client``."""

import sys

from ssp.cli import client_main

sys.exit(client_main(prog="ssp-client"))
