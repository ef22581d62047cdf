"""A folder's conflicts, kept versions and last sync's report, as the page shows them.

The engine answers with dicts (``_native._ConflictCopy``, ``_Version``, ``_SyncReport``); this
turns them into immutable rows with every peer-made string (paths, device names, reasons)
already :func:`ssp.text.printable`, so the page cannot show a control character whatever it
does with them. :class:`FolderHistory` does the engine calls for the page (through
:class:`ssp.SSPClient`, which needs no connection for them) and turns failures into one line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssp.client import SSPClient
from ssp.text import printable
from ssp.ui.humanize import UNKNOWN, human_bytes

if TYPE_CHECKING:
    from ssp._native import _Keep

__all__ = [
    "KEEP_CHOICES",
    "ConflictRow",
    "FolderHistory",
    "NotSynced",
    "VersionRow",
    "conflict_rows",
    "human_time",
    "not_synced_rows",
    "version_rows",
]

KEEP_CHOICES: tuple[tuple[_Keep, str], ...] = (
    ("original", "Keep this"),
    ("copy", "Keep that"),
    ("both", "Keep both"),
)
"""The page's three resolutions, in button order: the file at the original name (this), the
conflict copy (that), or both."""

WHOLE_FOLDER = "(the whole folder)"
"""Shown for a report entry with an empty path (it concerns the folder, e.g. a read-only
server)."""


def human_time(ns: int | None) -> str:
    """``2024-05-31 14:02:03`` in local time, from nanoseconds since the epoch."""
    if ns is None:
        return UNKNOWN
    try:
        return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return UNKNOWN


@dataclass(frozen=True)
class Side:
    """One version of a conflicted file: what the page says about it."""

    path: str
    size: str
    time: str
    device: str

    def describe(self) -> str:
        return f"{self.size} · {self.time} · device {self.device}"


@dataclass(frozen=True)
class ConflictRow:
    """A conflict copy in the folder now and the file at the original name."""

    copy: str
    """The copy's name as the engine knows it (passed back to resolve; never shown raw)."""
    this: Side
    """The version at the original name (``deleted`` when the original was removed since)."""
    that: Side
    """The conflict copy's version."""
    original_deleted: bool


@dataclass(frozen=True)
class VersionRow:
    """A version kept in ``.ssp/versions``."""

    path: str
    """The path it had (engine text, for restore)."""
    shown_path: str
    kept: str
    modified: str
    size: str
    archived_s: float
    """When it was kept, unix seconds (what ``restore(at=...)`` takes)."""


@dataclass(frozen=True)
class NotSynced:
    """An entry the last sync did not sync (or failed), and why."""

    path: str
    reason: str
    failed: bool


def _device(value: Any) -> str:
    return printable(value) if value else UNKNOWN


def conflict_rows(copies: Sequence[Mapping[str, Any]]) -> list[ConflictRow]:
    """Rows for ``SSPClient.get_conflicts()``'s answer, in its order."""
    rows = []
    for c in copies:
        deleted = c.get("size") is None
        rows.append(
            ConflictRow(
                copy=str(c["copy"]),
                this=Side(
                    path=printable(c["path"]),
                    size="deleted" if deleted else human_bytes(c.get("size")),
                    time=human_time(c.get("mtime_ns")),
                    device=_device(c.get("device")),
                ),
                that=Side(
                    path=printable(c["copy"]),
                    size=human_bytes(c.get("copy_size")),
                    time=human_time(c.get("copy_mtime_ns")),
                    device=_device(c.get("copy_device")),
                ),
                original_deleted=deleted,
            )
        )
    return rows


def version_rows(versions: Sequence[Mapping[str, Any]]) -> list[VersionRow]:
    """Rows for ``SSPClient.list_versions()``'s answer (newest first, as given)."""
    return [
        VersionRow(
            path=str(v["path"]),
            shown_path=printable(v["path"]),
            kept=human_time(v.get("archived_ns")),
            modified=human_time(v.get("mtime_ns")),
            size=human_bytes(v.get("size")),
            archived_s=int(v.get("archived_ns") or 0) / 1e9,
        )
        for v in versions
    ]


def not_synced_rows(report: Mapping[str, Any]) -> list[NotSynced]:
    """The last sync's entries not synced, then its failures, each with its reason."""
    rows = []
    for key, failed in (("skipped", False), ("failed", True)):
        for entry in report.get(key) or ():
            path = str(entry.get("path") or "")
            rows.append(
                NotSynced(
                    path=printable(path) if path else WHOLE_FOLDER,
                    reason=printable(entry.get("reason") or ""),
                    failed=failed,
                )
            )
    return rows


class FolderHistory:
    """Conflicts and versions of one folder, for the page: each call opens the folder's model
    (shared with a sync running in this process) and gives rows, or raises nothing and returns
    an error line instead."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _client(self) -> SSPClient:
        # No connection is made: the secret and address are never used by these calls.
        return SSPClient("-", self.folder)

    def _run(self, call: Any) -> Any:
        return asyncio.run(call)

    def conflicts(self) -> tuple[list[ConflictRow], str | None]:
        """The conflict copies in the folder, or an error line."""
        if not self.folder.is_dir():
            return [], None
        try:
            return conflict_rows(self._run(self._client().get_conflicts())), None
        except Exception as exc:
            return [], f"Cannot list conflicts in {self.folder}: {printable(exc)}"

    def resolve(self, copy: str, keep: _Keep) -> tuple[bool, str]:
        """Resolve ``copy`` by ``keep``; whether it was, and one line saying what or why not."""
        try:
            self._run(self._client().resolve_conflict(copy, keep))
        except Exception as exc:
            return False, f"Could not resolve {printable(copy)}: {printable(exc)}"
        done = {
            "original": "kept the file at its name; the copy went to versions",
            "copy": "the copy took the name; the other version went to versions",
            "both": "kept both; the copy was renamed",
        }[keep]
        return True, f"Resolved {printable(copy)}: {done}. The next sync carries it."

    def versions(self) -> tuple[list[VersionRow], str | None]:
        """Every version kept in the folder (newest first), or an error line."""
        if not self.folder.is_dir():
            return [], None
        try:
            return version_rows(self._run(self._client().list_versions())), None
        except Exception as exc:
            return [], f"Cannot list versions in {self.folder}: {printable(exc)}"

    def restore(self, path: str, at: float | None = None) -> tuple[bool, str]:
        """Restore ``path`` as kept at ``at``; whether it was, and one line saying what or why
        not."""
        try:
            version = self._run(self._client().restore(path, at))
        except Exception as exc:
            return False, f"Could not restore {printable(path)}: {printable(exc)}"
        return True, (
            f"Restored {printable(version['path'])} as kept at "
            f"{human_time(version['archived_ns'])}. The next sync carries it."
        )
