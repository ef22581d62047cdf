"""``python -m ssp_server``: the same as ``ssp-server``."""

import sys

from ssp.cli import server_main

sys.exit(server_main(prog="ssp-server"))
