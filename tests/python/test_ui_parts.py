"""The web UI's engine side (``ssp.ui``) without Streamlit: formatting, folder listing, error
messages, the log buffer, and the controller running a real server and client."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import pytest

from ssp import (
    METADATA_DIR,
    AddressInUseError,
    AuthError,
    DiskError,
    FolderError,
    ProtocolError,
    SSPConnectionError,
)
from ssp.ui import (
    ClientSettings,
    Controller,
    LogBuffer,
    ServerSettings,
    SyncSnapshot,
    explain,
    filter_rows,
    human_bytes,
    human_duration,
    human_rate,
    list_folder,
)
from ssp.ui.controller import outline, rates
from ssp.ui.folder import FileRow, ensure_folder
from ssp.ui.humanize import UNKNOWN
from ssp.ui.messages import explain_client_failure

from conftest import HOST, SECRET, assert_synced, payload, write_file

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# Bounds a hang, never a speed.
HANG_S = 120


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (KIB, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (100 * KIB, "100 KiB"),
        (MIB - 1, "1.0 MiB"),  # rounds up into the next unit, not "1024.0 KiB"
        (5 * GIB, "5.0 GiB"),
        (3 * (1 << 40), "3.0 TiB"),
        (-2048, "-2.0 KiB"),
        (None, UNKNOWN),
        (float("nan"), UNKNOWN),
    ],
)
def test_human_bytes(count, text):
    assert human_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.00 s"),
        (0.42, "0.42 s"),
        (3.25, "3.2 s"),
        (12.4, "12 s"),
        (59.6, "1 min 00 s"),
        (185, "3 min 05 s"),
        (2 * 3600 + 3 * 60 + 9, "2 h 03 min"),
        (None, UNKNOWN),
        (-1, UNKNOWN),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_human_rate():
    assert human_rate(1.5 * MIB) == "1.5 MiB/s"
    assert human_rate(-5) == "0 B/s"
    assert human_rate(None) == UNKNOWN


# -- folders -------------------------------------------------------------------------------


def test_list_folder_lists_files_with_sizes_and_skips_metadata(tmp_path):
    write_file(tmp_path, "b/deep/two.bin", b"22", mtime=1_600_000_000)
    write_file(tmp_path, "a.txt", b"1")
    write_file(tmp_path, f"{METADATA_DIR}/cache", b"metadata, never listed")
    write_file(tmp_path, f"sub/{METADATA_DIR}/kept", b"333")  # only the top one is SSP's
    os.symlink(tmp_path / "a.txt", tmp_path / "link")  # not a regular file

    listing = list_folder(tmp_path)

    assert listing.exists and listing.error is None
    assert [row.path for row in listing.files] == [
        "a.txt",
        "b/deep/two.bin",
        f"sub/{METADATA_DIR}/kept",
    ]
    assert (listing.total_files, listing.total_bytes) == (3, 6)
    assert listing.files[1] == FileRow("b/deep/two.bin", 2, 1_600_000_000.0)
    assert listing.average_size == 2
    assert not listing.truncated


def test_list_folder_cuts_rows_but_counts_everything(tmp_path):
    for i in range(7):
        write_file(tmp_path, f"f{i}", b"x" * i)
    listing = list_folder(tmp_path, limit=3)
    assert len(listing.files) == 3 and listing.truncated
    assert (listing.total_files, listing.total_bytes) == (7, 21)


def test_list_folder_of_a_missing_folder(tmp_path):
    listing = list_folder(tmp_path / "nope")
    assert not listing.exists and listing.files == () and listing.average_size is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["docs/Report.pdf", "photos/cat.jpg", "photos/dog.png"]),
        ("photos", ["photos/cat.jpg", "photos/dog.png"]),
        ("REPORT", ["docs/Report.pdf"]),
        ("photos png", ["photos/dog.png"]),
        ("nothing", []),
    ],
)
def test_filter_rows(query, expected):
    rows = tuple(
        FileRow(p, 1, 0.0) for p in ("docs/Report.pdf", "photos/cat.jpg", "photos/dog.png")
    )
    assert [row.path for row in filter_rows(rows, query)] == expected


def test_ensure_folder_creates_it_or_says_why_not(tmp_path):
    assert ensure_folder(tmp_path / "new" / "deeper") is None
    assert (tmp_path / "new" / "deeper").is_dir()
    write_file(tmp_path, "file", b"")
    message = ensure_folder(tmp_path / "file")
    assert message is not None and "not a folder" in message


# -- error messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "must_say"),
    [
        (AddressInUseError("address in use"), ["Port 8888", "already in use", "another port"]),
        (AuthError("nope"), ["Authentication failed", "secret"]),
        (FolderError("cannot be created"), ["/srv/share", "cannot be created"]),
        (DiskError("no space"), ["Disk error", "free space"]),
        (ProtocolError("version 9"), ["same SSP version"]),
        (SSPConnectionError("refused"), ["Cannot reach", "server.lan:8888", "refused"]),
        (PermissionError(13, "Permission denied"), ["Permission denied"]),
        (RuntimeError("boom"), ["RuntimeError", "boom"]),
    ],
)
def test_explain_gives_one_actionable_line(exc, must_say):
    text = explain(exc, host="server.lan", port=8888, folder="/srv/share")
    assert "\n" not in text and "Traceback" not in text
    for part in must_say:
        assert part in text


@pytest.mark.parametrize(
    ("status", "must_say"),
    [
        ("AUTH_FAILED", "check that the shared secret"),
        ("CONNECTION_ERROR", "is the server started"),
        ("SYNC_ERROR", "sync failed: reason"),
        (None, "sync failed: reason"),
    ],
)
def test_explain_client_failure(status, must_say):
    text = explain_client_failure(status, "reason", host="h", port=1)
    assert must_say in text.lower()


# -- logs and throughput -------------------------------------------------------------------


def test_log_buffer_splits_by_side_bounds_lines_and_hides_tracebacks():
    buffer = LogBuffer(capacity=4)
    logger = logging.getLogger("ssp.test_ui")
    logger.addHandler(buffer)
    logger.setLevel(logging.INFO)
    try:
        for name, message in [
            ("ssp.sync.server", "served"),
            ("ssp.sync.pull", "pulled"),
            ("ssp.fs", "scanned"),
        ]:
            record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
            buffer.handle(record)
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(buffer)

    server_lines = buffer.lines("server")
    client_lines = buffer.lines("client")
    assert [line.split(": ", 1)[1] for line in server_lines] == [
        "served",
        "scanned",
        "it failed (ValueError: bad value)",
    ]
    assert [line.split(": ", 1)[1] for line in client_lines] == [
        "pulled",
        "scanned",
        "it failed (ValueError: bad value)",
    ]
    assert "Traceback" not in "\n".join(server_lines)
    assert buffer.lines("server", last=1) == server_lines[-1:]

    for i in range(10):
        buffer.handle(logging.LogRecord("ssp.fs", logging.INFO, __file__, 1, f"m{i}", None, None))
    assert len(buffer.lines("server")) == 4  # bounded


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], []),
        ([(0.0, 0)], []),
        ([(0.0, 0), (0.5, 100), (1.5, 300)], [(0.0, 100.0), (1.0, 200.0)]),
        ([(0.0, 0), (0.01, 5000)], [(0.0, 5000.0)]),  # a short burst: what moved that second
        ([(0.0, 100), (1.0, 0)], [(0.0, 0.0), (1.0, 0.0)]),  # a counter that restarted
        ([(0.0, 0), (0.5, 10), (3.2, 20)], [(0.0, 10.0), (1.0, 0.0), (2.0, 0.0), (3.0, 10.0)]),
        ([(0.0, 0), (1e6, 1)], [(1e6 - 3599 + i, 0.0) for i in range(3599)] + [(1e6, 1.0)]),
    ],
    ids=["none", "one", "two-bins", "burst", "restart", "idle-gap", "capped"],
)
def test_rates(samples, expected):
    assert rates(samples) == expected


def test_outline_draws_bins_as_steps_from_zero_to_zero():
    assert outline([]) == []
    assert outline([(10.0, 5.0)]) == [(10.0, 0.0), (10.0, 5.0), (11.0, 5.0), (11.0, 0.0)]
    assert outline([(0.0, 1.0), (1.0, 2.0)]) == [
        (0.0, 0.0),
        (0.0, 1.0),
        (1.0, 1.0),
        (1.0, 2.0),
        (2.0, 2.0),
        (2.0, 0.0),
    ]


def test_sync_snapshot_fractions():
    assert SyncSnapshot().fraction == 0.0
    half = SyncSnapshot(
        state="syncing", bytes_done=50, bytes_total=100, chunk_index=1, total_chunks=4
    )
    assert (half.fraction, half.file_fraction) == (0.5, 0.25)
    by_files = SyncSnapshot(state="syncing", files_done=1, files_total=4)
    assert by_files.fraction == 0.25
    assert SyncSnapshot(state="completed").fraction == 1.0  # an empty sync is complete too


# -- the controller, with a real server and client -----------------------------------------


@pytest.fixture
def controller():
    ctl = Controller()
    yield ctl
    ctl.close()


def wait_for(predicate, what: str):
    deadline = time.monotonic() + HANG_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def server_settings(folder: Path, secret: str = SECRET, port: int = 0) -> ServerSettings:
    return ServerSettings(secret=secret, folder=folder, host=HOST, port=port, chunk_size=64 * KIB)


def client_settings(folder: Path, port: int, secret: str = SECRET) -> ClientSettings:
    return ClientSettings(secret=secret, folder=folder, host=HOST, port=port)


def test_controller_serves_syncs_and_reports(tmp_path, controller):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "big.bin", payload(3 * MIB + 5))
    write_file(src, "dir/small.txt", b"hello")

    assert controller.server.start(server_settings(src))
    server = controller.server.snapshot()
    assert server.state == "running" and server.port > 0 and server.error is None
    assert not controller.server.start(server_settings(src)), "a second start must be refused"

    assert controller.sync.start(client_settings(dst, server.port))
    wait_for(lambda: not controller.sync.snapshot().active, "the sync to end")
    sync = controller.sync.snapshot()
    assert sync.state == "completed", sync.error
    assert sync.fraction == 1.0 and sync.error is None
    assert (sync.files_received, sync.bytes_received) == (2, 3 * MIB + 10)
    assert sync.status == "DISCONNECTED" and sync.duration_s is not None
    assert_synced(src, dst)

    wait_for(lambda: controller.server.snapshot().files_sent == 2, "the server's stats")
    server = controller.server.snapshot()
    assert (server.bytes_sent, server.sync_sessions, server.total_connections) == (
        3 * MIB + 10,
        1,
        1,
    )
    assert server.files_per_session == 2.0
    wait_for(
        lambda: any(p.series == "client received" for p in controller.throughput()),
        "a throughput point",
    )

    client_log = "\n".join(controller.logs.lines("client"))
    server_log = "\n".join(controller.logs.lines("server"))
    assert "SYNC_COMPLETED" in client_log and f"listening on {HOST}:" in server_log

    controller.server.stop()
    assert controller.server.snapshot().state == "stopped"
    assert controller.server.snapshot().files_sent == 2, "stats stay visible once stopped"


def test_controller_reports_a_port_in_use(tmp_path, controller):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert not controller.server.start(server_settings(tmp_path, port=port))
    snap = controller.server.snapshot()
    assert snap.state == "stopped"
    assert snap.error is not None and f"Port {port}" in snap.error and "in use" in snap.error


def test_controller_reports_a_wrong_secret(tmp_path, controller):
    assert controller.server.start(server_settings(tmp_path / "server"))
    port = controller.server.snapshot().port
    assert controller.sync.start(client_settings(tmp_path / "client", port, secret="wrong"))
    wait_for(lambda: not controller.sync.snapshot().active, "the sync to end")
    snap = controller.sync.snapshot()
    assert snap.state == "failed"
    assert snap.error is not None and "Authentication failed" in snap.error
    assert controller.server.snapshot().auth_failures == 1


def test_controller_reports_an_unreachable_server(tmp_path, controller):
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert controller.sync.start(client_settings(tmp_path, port))
        wait_for(lambda: not controller.sync.snapshot().active, "the sync to end")
    snap = controller.sync.snapshot()
    assert snap.state == "failed"
    assert snap.error is not None and f"Cannot reach an SSP server at {HOST}:{port}" in snap.error


def test_controller_refuses_an_empty_secret(tmp_path, controller):
    assert not controller.server.start(server_settings(tmp_path, secret=""))
    assert "shared secret" in (controller.server.snapshot().error or "")
    assert not controller.sync.start(client_settings(tmp_path, 1, secret=""))
    assert "shared secret" in (controller.sync.snapshot().error or "")


def test_controller_stop_sync_cancels_and_the_next_sync_completes(tmp_path, controller):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "huge.bin", payload(128 * MIB))
    assert controller.server.start(server_settings(src))
    port = controller.server.snapshot().port

    assert controller.sync.start(client_settings(dst, port))
    wait_for(lambda: controller.sync.snapshot().bytes_done > 0, "the first bytes")
    controller.sync.cancel()
    wait_for(lambda: not controller.sync.snapshot().active, "the sync to end")
    snap = controller.sync.snapshot()
    assert snap.state == "cancelled", "the sync finished before Stop Sync took effect"
    assert snap.error is None
    assert not (dst / "huge.bin").exists()

    assert controller.sync.start(client_settings(dst, port))
    wait_for(lambda: not controller.sync.snapshot().active, "the second sync to end")
    assert controller.sync.snapshot().state == "completed"
    assert_synced(src, dst)
