"""What the page shows of a sync folder: its files with size and modified time, and totals.

Listing walks the folder with ``os.scandir`` (no hashing) and skips SSP's metadata folder, so it
is cheap enough to run on every refresh; a huge folder is cut at ``limit`` rows, but the totals
still count every file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ssp.protocol import METADATA_DIR

__all__ = [
    "DEFAULT_LIMIT",
    "FileRow",
    "FolderListing",
    "ensure_folder",
    "filter_rows",
    "list_folder",
]

DEFAULT_LIMIT = 5000
"""Rows kept for the table; beyond that only the totals grow."""


@dataclass(frozen=True)
class FileRow:
    """One file: its ``/``-separated path inside the folder, size in bytes, mtime (epoch s)."""

    path: str
    size: int
    modified: float


@dataclass(frozen=True)
class FolderListing:
    """The files of ``folder`` (sorted by path, at most ``limit``) and totals over all files."""

    folder: str
    exists: bool
    files: tuple[FileRow, ...]
    total_files: int
    total_bytes: int
    truncated: bool
    error: str | None = None

    @property
    def average_size(self) -> float | None:
        """Mean file size in bytes, or None for an empty folder."""
        return self.total_bytes / self.total_files if self.total_files else None


def list_folder(folder: str | Path, limit: int = DEFAULT_LIMIT) -> FolderListing:
    """List every regular file under ``folder`` except SSP's metadata folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return FolderListing(str(root), False, (), 0, 0, False)
    rows: list[FileRow] = []
    total_files = total_bytes = 0
    error: str | None = None
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if not (current == root and entry.name == METADATA_DIR):
                            stack.append(Path(entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while listing
                    total_files += 1
                    total_bytes += st.st_size
                    if len(rows) < limit:
                        rel = Path(entry.path).relative_to(root).as_posix()
                        rows.append(FileRow(rel, st.st_size, st.st_mtime))
        except OSError as exc:
            error = f"cannot read {current}: {exc.strerror or exc}"
    rows.sort(key=lambda row: row.path)
    return FolderListing(
        str(root), True, tuple(rows), total_files, total_bytes, total_files > len(rows), error
    )


def filter_rows(rows: tuple[FileRow, ...], query: str) -> tuple[FileRow, ...]:
    """Rows whose path contains every word of ``query`` (case-insensitive); all if empty."""
    words = query.casefold().split()
    if not words:
        return rows
    return tuple(row for row in rows if all(word in row.path.casefold() for word in words))


def ensure_folder(folder: str | Path) -> str | None:
    """Create ``folder`` if missing; None when it is a usable folder, else why not (one line)."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{path} exists and is not a folder: choose another sync folder."
    except OSError as exc:
        return f"Cannot create {path}: {exc.strerror or exc}. Choose a folder you can write to."
    if not path.is_dir():
        return f"{path} is not a folder: choose another sync folder."
    return None
