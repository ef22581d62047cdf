"""Pulling a folder through the Python API (SSPServer in a thread, SSPClient in asyncio.run)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ssp import SSPClient

from conftest import (
    AWKWARD_NAMES,
    HOST,
    SECRET,
    SIZES,
    assert_synced,
    payload,
    pull,
    statuses_of,
    write_file,
)

MIB = 1 << 20


@pytest.mark.parametrize("size", SIZES)
def test_file_of_each_interesting_size_arrives_identical(tmp_path, serve, size):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, f"file-{size}.bin", payload(size))
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)
    assert (dst / f"file-{size}.bin").stat().st_size == size


def test_all_interesting_sizes_in_one_sync(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    sizes = [param.values[0] for param in SIZES]
    for size in sizes:
        write_file(src, f"sizes/{size}.bin", payload(size, seed=1))
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)
    stats = result.client.get_sync_stats()
    assert stats["files_received"] == len(sizes)
    assert stats["bytes_received"] >= sum(sizes)


def test_100_mib_file(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "big/100MiB.bin", payload(100 * MIB))
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)


def test_1000_small_files(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i in range(1000):
        write_file(src, f"dir{i % 10:02d}/small-{i:04d}.txt", payload(i % 97 + 1, seed=i))
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)
    assert result.client.get_sync_stats()["files_received"] == 1000


def test_unicode_and_nested_names(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i, name in enumerate(AWKWARD_NAMES):
        write_file(src, name, payload(100 + i, seed=i))
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)


def test_mtime_and_executable_bit_are_kept(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(
        src, "bin/run.sh", b"#!/bin/sh\necho hi\n", mtime=1_500_000_000.123456, executable=True
    )
    write_file(src, "data/plain.txt", b"plain\n", mtime=1_600_000_000.654321, executable=False)
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst)
    assert os.access(dst / "bin/run.sh", os.X_OK)
    assert not (dst / "data/plain.txt").stat().st_mode & 0o111
    assert abs((dst / "bin/run.sh").stat().st_mtime - 1_500_000_000.123456) < 1e-5


def test_files_only_the_client_has_are_left_alone(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "shared.txt", b"from the server")
    mine = {"mine.txt": b"client only", "notes/todo.md": b"- keep me"}
    for rel, data in mine.items():
        write_file(dst, rel, data)
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert_synced(src, dst, client_only=mine)
    for rel, data in mine.items():
        assert (dst / rel).read_bytes() == data


def test_resync_after_changes_on_the_server(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "same.txt", b"unchanged")
    write_file(src, "edit.txt", b"version 1", mtime=1_600_000_000)
    write_file(src, "grow.bin", payload(1000))
    server = serve(src)
    assert pull(dst, server.port).ok

    # Same size, different content; a grown file; a new file; a new mode.
    write_file(src, "edit.txt", b"version 2", mtime=1_600_000_100)
    write_file(src, "grow.bin", payload(5000))
    write_file(src, "new/added.txt", b"new")
    (src / "same.txt").chmod(0o755)
    second = pull(dst, server.port)

    assert second.ok, second.client.last_error
    assert_synced(src, dst)
    assert (dst / "edit.txt").read_bytes() == b"version 2"


def test_resync_of_an_unchanged_tree_transfers_nothing(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i in range(20):
        write_file(src, f"f{i}.txt", payload(300, seed=i))
    server = serve(src)
    assert pull(dst, server.port).ok

    second = pull(dst, server.port)

    assert second.ok, second.client.last_error
    assert_synced(src, dst)
    assert second.client.get_sync_stats()["files_received"] == 0


def test_a_client_edit_is_never_replaced_by_the_servers_older_file(tmp_path, serve):
    # One-way pull used to put the server's copy back over a newer local edit, losing it. Now
    # the edit is the newer version: two-way sends it, and the server's old one is kept.
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"server version")
    server = serve(src)
    assert pull(dst, server.port).ok
    write_file(dst, "doc.txt", b"local edit!!!!")

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert (dst / "doc.txt").read_bytes() == b"local edit!!!!"
    assert (src / "doc.txt").read_bytes() == b"local edit!!!!"
    assert any((src / ".ssp" / "versions").rglob("doc*.txt")), "the server's old version is kept"


def test_several_clients_sync_from_one_server_at_once(tmp_path, serve):
    src = tmp_path / "server"
    write_file(src, "big.bin", payload(8 * (1 << 20)))
    for i in range(50):
        write_file(src, f"many/{i}.txt", payload(i + 1, seed=i))
    server = serve(src)
    dsts = [tmp_path / f"client{i}" for i in range(4)]

    async def all_at_once() -> list[bool]:
        clients = [SSPClient(SECRET, d, server_host=HOST, server_port=server.port) for d in dsts]

        async def one(client: SSPClient) -> bool:
            try:
                return await client.connect() and await client.sync()
            finally:
                await client.disconnect()

        return await asyncio.gather(*(one(c) for c in clients))

    assert asyncio.run(all_at_once()) == [True] * len(dsts)
    for dst in dsts:
        assert_synced(src, dst)
    stats = server.server.get_server_status()["stats"]
    assert stats["total_connections"] >= len(dsts)
    assert stats["files_sent"] >= len(dsts) * 51


def test_sync_without_connect_connects_first(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    server = serve(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)

    async def run() -> bool:
        try:
            return await client.sync()
        finally:
            await client.disconnect()

    assert asyncio.run(run())
    assert_synced(src, dst)


def test_status_snapshots_have_the_documented_keys(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"abc")
    server = serve(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
    seen: dict[str, dict] = {}

    async def run() -> None:
        assert await client.connect()
        seen["connected"] = client.get_client_status()
        seen["server"] = server.server.get_server_status()
        # The original's attributes, kept as read-only properties.
        assert client.connected and client.authenticated and not client.sync_in_progress
        assert server.server.clients and server.server.running
        assert await client.sync()
        seen["synced"] = client.get_client_status()
        await client.disconnect()
        seen["disconnected"] = client.get_client_status()
        assert not client.connected
        assert client.sync_stats["files_received"] == 1

    started = time.time()
    asyncio.run(run())

    connected, synced = seen["connected"], seen["synced"]
    for key in (
        "connected",
        "authenticated",
        "sync_in_progress",
        "server_host",
        "server_port",
        "sync_folder",
        "stats",
        "pending_requests",
    ):
        assert key in connected, key
    assert connected["connected"] and connected["authenticated"]
    assert not synced["sync_in_progress"]
    assert not seen["disconnected"]["connected"]
    stats = client.get_sync_stats()
    for key in (
        "files_received",
        "bytes_received",
        "files_sent",
        "bytes_sent",
        "sync_start_time",
        "sync_duration",
    ):
        assert key in stats, key
    assert stats["files_received"] == 1 and stats["bytes_received"] >= 3
    assert stats["sync_start_time"] >= started - 5
    assert stats["sync_duration"] >= 0

    status = seen["server"]
    for key in ("running", "host", "port", "active_connections", "sync_folder", "clients", "stats"):
        assert key in status, key
    assert status["running"] and status["port"] == server.port
    assert status["active_connections"] >= 1
    assert any(c.startswith("127.0.0.1:") for c in status["clients"]), status["clients"]
    for key in (
        "total_connections",
        "active_connections",
        "files_sent",
        "bytes_sent",
        "sync_sessions",
    ):
        assert key in status["stats"], key


def test_server_creates_a_missing_folder(tmp_path, serve):
    src = tmp_path / "does" / "not" / "exist"
    server = serve(src)
    assert src.is_dir()
    result = pull(tmp_path / "client", server.port)
    assert result.ok, result.client.last_error
    assert "SYNC_COMPLETED" in statuses_of(result)


def test_a_script_using_the_api_exits_cleanly(tmp_path, serve):
    """A plain script (sync, then fall off the end) must exit 0: the engine's threads may not
    touch the interpreter while it finalizes. Several runs, as such races are intermittent."""
    import subprocess
    import sys

    src = tmp_path / "server"
    write_file(src, "a.bin", payload(300_000))
    server = serve(src)
    script = (
        "import asyncio, logging, sys\n"
        "from ssp_client import SSPClient\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "client = SSPClient(sys.argv[1], sys.argv[2], '127.0.0.1', int(sys.argv[3]))\n"
        "client.set_progress_callback(lambda p: None)\n"
        "async def main():\n"
        "    ok = await client.connect() and await client.sync()\n"
        "    await client.disconnect()\n"
        "    return ok\n"
        "assert asyncio.run(main())\n"
    )
    for run in range(12):
        dst = tmp_path / f"client{run}"
        done = subprocess.run(
            [sys.executable, "-c", script, SECRET, str(dst), str(server.port)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (run, done.returncode, done.stderr[-2000:])
        assert_synced(src, dst)
