"""Process exit: give the engine's threads a moment to finish touching Python objects.

When an awaited native call completes, an engine thread hands the result to the event loop and
then releases its references to Python objects. If the script ends right after (``asyncio.run``
returns and the interpreter finalizes at once), that thread can race finalization and crash the
process. An exit hook that waits briefly, only in processes that used the engine, closes that
window. The command-line tools skip finalization altogether (``os._exit``).
"""

from __future__ import annotations

import atexit
import threading
import time

__all__ = ["SETTLE_S", "engine_used"]

SETTLE_S = 0.05
"""How long the exit hook waits; engine threads need microseconds, this is a wide margin."""

_used = threading.Event()


def engine_used() -> None:
    """Note that this process created engine handles (so the exit hook must wait)."""
    _used.set()


@atexit.register
def _let_engine_threads_settle() -> None:
    if _used.is_set():
        time.sleep(SETTLE_S)
