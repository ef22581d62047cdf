"""The page's conflicts, versions and not-synced parts without Streamlit: rows from engine
answers (escaped), :class:`FolderHistory` on real folders, and the controller's mode, read-only
server and last-sync report."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ssp.ui import ClientSettings, Controller, ServerSettings
from ssp.ui.history import (
    WHOLE_FOLDER,
    FolderHistory,
    conflict_rows,
    human_time,
    not_synced_rows,
    version_rows,
)
from ssp.ui.humanize import UNKNOWN

from conftest import HANG_S, HOST, SECRET, write_file

NS = 1_700_000_000 * 10**9
STAMP = human_time(NS)
COPY = "a.sync-conflict-20231114-221320-ABCDEFG.txt"


def test_human_time():
    assert human_time(None) == UNKNOWN
    assert human_time(NS) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NS / 1e9))
    assert human_time(10**30) == UNKNOWN


# (engine answer, this side shown, that side shown, original deleted)
CONFLICTS = [
    (
        {
            "path": "a.txt",
            "copy": COPY,
            "copy_device": "ABCDEFG",
            "copy_size": 2048,
            "copy_mtime_ns": NS,
            "size": 5,
            "mtime_ns": NS,
            "device": "HIJKLMN",
        },
        f"5 B · {STAMP} · device HIJKLMN",
        f"2.0 KiB · {STAMP} · device ABCDEFG",
        False,
    ),
    # The original was deleted since; its device unknown.
    (
        {
            "path": "a.txt",
            "copy": COPY,
            "copy_device": "ABCDEFG",
            "copy_size": 1,
            "copy_mtime_ns": NS,
            "size": None,
            "mtime_ns": None,
            "device": None,
        },
        f"deleted · {UNKNOWN} · device {UNKNOWN}",
        f"1 B · {STAMP} · device ABCDEFG",
        True,
    ),
]


@pytest.mark.parametrize(("answer", "this", "that", "deleted"), CONFLICTS)
def test_conflict_rows(answer, this, that, deleted):
    [row] = conflict_rows([answer])
    assert row.copy == COPY
    assert (row.this.describe(), row.that.describe(), row.original_deleted) == (
        this,
        that,
        deleted,
    )


def test_rows_escape_peer_text_but_keep_the_engine_name_for_actions():
    evil = "x\x1b[2J\u202e.txt"
    [row] = conflict_rows(
        [
            {
                "path": evil,
                "copy": evil + ".sync-conflict",
                "copy_device": "\x07",
                "copy_size": 0,
                "copy_mtime_ns": NS,
                "size": 0,
                "mtime_ns": NS,
                "device": "D",
            }
        ]
    )
    assert "\x1b" not in row.this.path + row.that.path + row.that.device
    assert "\\u{1b}" in row.this.path and "\\u{202e}" in row.this.path
    assert row.copy == evil + ".sync-conflict", "resolve gets the real name"
    [version] = version_rows([{"path": evil, "archived_ns": NS, "mtime_ns": NS, "size": 3}])
    assert version.path == evil and "\x1b" not in version.shown_path
    assert (version.kept, version.size, version.archived_s) == (STAMP, "3 B", NS / 1e9)


def test_not_synced_rows_skipped_then_failed_and_the_whole_folder():
    report = {
        "conflicts": [],
        "skipped": [
            {"path": "", "reason": "the server is read-only"},
            {"path": "l\nnk", "reason": "outside"},
        ],
        "warnings": [{"path": "con", "reason": "windows"}],
        "failed": [{"path": "f", "reason": "disk full"}],
    }
    rows = not_synced_rows(report)
    assert [(r.path, r.reason, r.failed) for r in rows] == [
        (WHOLE_FOLDER, "the server is read-only", False),
        ("l\\u{a}nk", "outside", False),
        ("f", "disk full", True),
    ]
    assert not_synced_rows({}) == []


@pytest.fixture
def controller():
    ctl = Controller()
    yield ctl
    ctl.close()


def wait_idle(ctl: Controller):
    deadline = time.monotonic() + HANG_S
    while ctl.sync.snapshot().active:
        assert time.monotonic() < deadline, "the sync did not end"
        time.sleep(0.02)
    return ctl.sync.snapshot()


def sync(ctl: Controller, folder: Path, port: int, mode: str = "two-way"):
    assert ctl.sync.start(
        ClientSettings(secret=SECRET, folder=folder, host=HOST, port=port, mode=mode)  # type: ignore[arg-type]
    )
    return wait_idle(ctl)


def serve(ctl: Controller, folder: Path, read_only: bool = False) -> int:
    settings = ServerSettings(
        secret=SECRET, folder=folder, host=HOST, port=0, chunk_size=64 << 10, read_only=read_only
    )
    assert ctl.server.start(settings), ctl.server.snapshot().error
    return ctl.server.snapshot().port


def test_a_conflict_is_listed_and_each_resolution_works_through_the_history(tmp_path, controller):
    src, dst = tmp_path / "server", tmp_path / "client"
    for name in ("keep-this.txt", "keep-that.txt", "keep-both.txt"):
        write_file(src, name, b"original")
    port = serve(controller, src)
    assert sync(controller, dst, port).state == "completed"
    for name in ("keep-this.txt", "keep-that.txt", "keep-both.txt"):
        write_file(src, name, b"server version")
        write_file(dst, name, b"client version, longer")

    first = sync(controller, dst, port)
    assert first.state == "completed", first.error
    assert first.conflicts == 3 and first.mode == "two-way"
    assert sync(controller, dst, port).state == "completed"  # brings the copies here
    history = controller.history(dst)
    rows, error = history.conflicts()
    assert error is None and len(rows) == 3
    by_name = {row.this.path: row for row in rows}

    for name, keep in (
        ("keep-this.txt", "original"),
        ("keep-that.txt", "copy"),
        ("keep-both.txt", "both"),
    ):
        ok, message = history.resolve(by_name[name].copy, keep)  # type: ignore[arg-type]
        assert ok, message
        assert message.startswith("Resolved ")
    assert history.conflicts() == ([], None)
    ok, message = history.resolve("not-a-copy.txt", "original")
    assert not ok and message.startswith("Could not resolve not-a-copy.txt")


def test_versions_are_listed_and_restored_through_the_history(tmp_path, controller):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"first draft")
    port = serve(controller, src)
    assert sync(controller, dst, port).state == "completed"
    write_file(src, "doc.txt", b"second draft, longer")
    assert sync(controller, dst, port).state == "completed"
    history = controller.history(dst)

    [row], error = history.versions()
    assert error is None and (row.path, row.size) == ("doc.txt", "11 B")
    ok, message = history.restore(row.path, row.archived_s)
    assert ok, message
    assert (dst / "doc.txt").read_bytes() == b"first draft"
    ok, message = history.restore("never-there.txt")
    assert not ok and "never-there.txt" in message
    # A folder that does not exist has nothing to list and says no error.
    assert FolderHistory(tmp_path / "nowhere").versions() == ([], None)
    assert FolderHistory(tmp_path / "nowhere").conflicts() == ([], None)


def test_a_read_only_server_refuses_a_push_and_the_two_way_sync_says_what_was_not_sent(
    tmp_path, controller
):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "served.txt", b"s")
    write_file(dst, "mine.txt", b"m")
    port = serve(controller, src, read_only=True)
    assert controller.server.snapshot().read_only

    pushed = sync(controller, dst, port, mode="push")
    assert pushed.state == "failed" and "read-only" in (pushed.error or ""), pushed.error
    two_way = sync(controller, dst, port)
    assert two_way.state == "completed", two_way.error
    assert [row.path for row in two_way.not_synced] == [WHOLE_FOLDER]
    assert "read-only" in two_way.not_synced[0].reason
    assert not (src / "mine.txt").exists()
