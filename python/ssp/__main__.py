"""``python -m ssp server|client [options] [SECRET] FOLDER [HOST] [PORT]``."""

import sys

from ssp.cli import main

sys.exit(main())
