"""Interrupted transfers: killing the server in the middle of a large file never shows a partial
file at the final path, and the next sync completes it byte-identical; temp files that can never
be resumed are cleaned up."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from ssp import SSPClient

from conftest import HOST, SECRET, assert_synced, file_digest, payload, run_client, write_file

MIB = 1 << 20


def test_server_killed_mid_transfer_then_resync_completes(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    big = write_file(src, "nested/big.bin", payload(300 * MIB))
    write_file(src, "small.txt", b"small")
    server = cli_server(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
    seen: dict[str, object] = {"killed_at": None, "partial_visible": False}
    statuses: list[str] = []
    client.set_status_callback(lambda status, _: statuses.append(status))

    def kill_mid_transfer(progress: dict) -> None:
        if seen["killed_at"] is None and 0 < progress["bytes_done"] < progress["bytes_total"]:
            server.proc.send_signal(signal.SIGKILL)
            seen["killed_at"] = progress["bytes_done"]
        # Whatever happens, the final path never holds an incomplete file.
        final = dst / "nested/big.bin"
        if final.exists() and final.stat().st_size != big.stat().st_size:
            seen["partial_visible"] = True

    client.set_progress_callback(kill_mid_transfer)

    async def first_attempt() -> bool:
        try:
            return await client.connect() and await client.sync()
        finally:
            await client.disconnect()

    ok = asyncio.run(first_attempt())

    assert seen["killed_at"] is not None, "the transfer ended before it could be interrupted"
    assert ok is False
    assert "SYNC_ERROR" in statuses or "CONNECTION_ERROR" in statuses, statuses
    assert client.last_error
    final = dst / "nested/big.bin"
    assert not final.exists() or file_digest(final) == file_digest(big)
    assert seen["partial_visible"] is False

    restarted = cli_server(src)
    again = SSPClient(SECRET, dst, server_host=HOST, server_port=restarted.port)

    async def second_attempt() -> bool:
        try:
            return await again.connect() and await again.sync()
        finally:
            await again.disconnect()

    assert asyncio.run(second_attempt()), again.last_error
    assert file_digest(final) == file_digest(big)
    assert_synced(src, dst)


def test_status_after_a_lost_server_is_an_error_not_a_hang(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    server = cli_server(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
    statuses: list[str] = []
    client.set_status_callback(lambda status, _: statuses.append(status))

    async def run() -> bool:
        assert await client.connect()
        server.kill()
        try:
            return await client.sync()
        finally:
            await client.disconnect()

    assert asyncio.run(run()) is False
    assert client.last_error
    assert {"SYNC_ERROR", "CONNECTION_ERROR", "SERVER_ERROR"} & set(statuses), statuses


def test_stale_temp_files_are_removed_however_recent(tmp_path, cli_server):
    """Temp files name the content they hold: one for content no longer wanted is never
    resumed, so a sync deletes it, old or recent (no other process syncs the folder: its store
    is locked), and none remain after a successful sync."""
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"current content")
    stale = write_file(dst, "sub/.ssp-part-" + "0" * 24 + "-" + "1" * 16, b"old partial")
    recent = write_file(dst, ".ssp-part-" + "2" * 24 + "-" + "3" * 16, b"in progress")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    server = cli_server(src)

    done = run_client(dst, server.port)

    assert done.returncode == 0, done.stderr
    assert not stale.exists()
    assert not recent.exists()
    assert_synced(src, dst)
