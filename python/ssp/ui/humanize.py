"""Sizes, rates and durations written for people (``1.5 MiB``, ``12 MiB/s``, ``3 min 05 s``)."""

from __future__ import annotations

import math

__all__ = ["UNKNOWN", "human_bytes", "human_duration", "human_rate"]

UNKNOWN = "n/a"
"""Shown for a figure that is not known yet."""

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(count: float | None) -> str:
    """``0 B``, ``999 B``, ``1.5 KiB``, ``512 MiB``: one decimal below 100, none above."""
    if count is None or not math.isfinite(count):
        return UNKNOWN
    sign = "-" if count < 0 else ""
    value = float(abs(count))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    # 1023.95 KiB would print as "1024.0 KiB": round first, then decide the unit.
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    text = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{sign}{text} {_UNITS[unit]}"


def human_rate(bytes_per_s: float | None) -> str:
    """A transfer rate: ``human_bytes`` per second (:data:`UNKNOWN` when unknown)."""
    if bytes_per_s is None or not math.isfinite(bytes_per_s):
        return UNKNOWN
    return f"{human_bytes(max(bytes_per_s, 0.0))}/s"


def human_duration(seconds: float | None) -> str:
    """``0.42 s``, ``12 s``, ``3 min 05 s``, ``2 h 03 min`` (:data:`UNKNOWN` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return UNKNOWN
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
