"""``python -m ssp.ui [PAGE.py] [streamlit options]``: the page behind a token per launch.

Like Jupyter: a random token goes to the page in ``SSP_UI_TOKEN`` (the environment, never the
command line, which other users can list) and the one link that opens the page is printed,
``http://localhost:PORT/?token=...``. Other users of this machine, who can reach its loopback
port too, cannot drive the page without it. ``PAGE.py`` defaults to ``streamlit_app.py`` in
the current folder; the options go to ``streamlit run`` unchanged.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence

from ssp.ui.access import TOKEN_ENV, TOKEN_PARAM

__all__ = ["TOKEN_BYTES", "main"]

TOKEN_BYTES = 32
"""Random bytes in a launch's token (URL-safe base64 in the link)."""
DEFAULT_PAGE = "streamlit_app.py"
DEFAULT_UI_PORT = 8501


def _option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``streamlit run PAGE`` with a fresh token and print the link; return its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    page = args.pop(0) if args and args[0].endswith(".py") else DEFAULT_PAGE
    if not os.path.isfile(page):
        print(f"ssp-ui: error: no page at {page} (run from SSP's folder)", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(TOKEN_BYTES)
    port = _option(args, "--server.port") or str(DEFAULT_UI_PORT)
    env = {**os.environ, TOKEN_ENV: token}
    # Headless: Streamlit would open its own address, without the token, in a browser.
    command = [sys.executable, "-m", "streamlit", "run", page, "--server.headless", "true", *args]
    proc = subprocess.Popen(command, env=env)
    # A stop request for the launcher is one for the page: pass SIGTERM on, and SIGINT too
    # when it came from `kill` rather than from a terminal's Ctrl-C (which reaches both).
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    print(f"ssp-ui: open http://localhost:{port}/?{TOKEN_PARAM}={token}", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
