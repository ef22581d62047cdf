"""Threads and callbacks: the original app's start-in-one-thread/stop-from-another pattern, and
progress/status callbacks delivered on the awaiting loop's thread without breaking the sync."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from ssp import SSPClient, SSPServer

from conftest import (
    HOST,
    SECRET,
    ServerThread,
    assert_synced,
    payload,
    pull,
    statuses_of,
    write_file,
)

MIB = 1 << 20

PROGRESS_KEYS = {
    "phase",
    "files_to_request",
    "files_received",
    "file_path",
    "chunk_index",
    "total_chunks",
    "progress",
    "files_done",
    "files_total",
    "bytes_done",
    "bytes_total",
    "rate_bps",
    "eta_s",
}
WHOLE_SYNC_KEYS = {"files_done", "files_total", "bytes_done", "bytes_total", "rate_bps", "eta_s"}


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def test_start_in_one_thread_stop_from_another(tmp_path):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"hello")
    server = SSPServer(SECRET, src, host=HOST, port=0)
    outcome: dict[str, object] = {}

    def serve() -> None:
        try:
            asyncio.run(server.start())  # start() before any loop runs: the original's call
            outcome["returned"] = True
        except BaseException as exc:
            outcome["error"] = exc

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    assert server.wait_started(60), outcome
    assert server.get_server_status()["running"]
    port = server.port
    assert port != 0

    assert pull(dst, port).ok
    stopper = threading.Thread(target=lambda: asyncio.run(server.stop()))
    stopper.start()
    stopper.join(60)
    serving.join(60)

    assert not stopper.is_alive() and not serving.is_alive()
    assert outcome == {"returned": True}
    assert server.get_server_status()["running"] is False
    assert port_is_free(port)
    assert_synced(src, dst)


def test_server_restarts_after_stop(tmp_path):
    src = tmp_path / "server"
    write_file(src, "a.txt", b"again")
    runner = ServerThread(src).start()
    assert pull(tmp_path / "c1", runner.port).ok
    runner.stop()

    again = ServerThread(src)
    again.server = runner.server  # the same SSPServer object, started a second time
    again.start()
    try:
        assert pull(tmp_path / "c2", again.port).ok
    finally:
        again.stop()
    assert_synced(src, tmp_path / "c2")


def test_start_background_in_the_callers_loop(tmp_path):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "bg.txt", b"background")

    async def run() -> bool:
        server = SSPServer(SECRET, src, host=HOST, port=0)
        port = await server.start_background()
        client = SSPClient(SECRET, dst, server_host=HOST, server_port=port)
        try:
            return await client.sync()
        finally:
            await client.disconnect()
            await server.stop()

    assert asyncio.run(run())
    assert_synced(src, dst)


def test_progress_and_status_callbacks_are_received(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "big.bin", payload(16 * MIB))
    for i in range(10):
        write_file(src, f"small/{i}.txt", payload(10 + i, seed=i))
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    statuses = statuses_of(result)
    for expected in ("AUTHENTICATED", "SYNC_STARTED", "SYNC_COMPLETED"):
        assert expected in statuses, statuses
    assert statuses.index("AUTHENTICATED") < statuses.index("SYNC_STARTED")
    assert statuses.index("SYNC_STARTED") < statuses.index("SYNC_COMPLETED")
    assert all(isinstance(details, str) for _, details in result.statuses)

    assert result.progress, "no progress callback"
    assert any(set(p) >= PROGRESS_KEYS for p in result.progress), result.progress[0]
    for progress in result.progress:
        assert set(progress) >= WHOLE_SYNC_KEYS, progress
        assert 0 <= progress["bytes_done"] <= progress["bytes_total"]
    final = result.progress[-1]
    assert final["bytes_done"] == final["bytes_total"] == total
    assert final["files_done"] == final["files_total"] == 11
    # Throttled: a bounded number of callbacks, not one per chunk.
    assert len(result.progress) < 16 * MIB // 4096


def test_callbacks_run_on_the_thread_of_the_awaiting_loop(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "data.bin", payload(4 * MIB))
    server = serve(src)
    threads: set[int] = set()
    loop_thread: dict[str, int] = {}

    def run_in_thread() -> None:
        loop_thread["id"] = threading.get_ident()
        client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
        client.set_status_callback(lambda *_: threads.add(threading.get_ident()))
        client.set_progress_callback(lambda _: threads.add(threading.get_ident()))

        async def run() -> bool:
            try:
                return await client.connect() and await client.sync()
            finally:
                await client.disconnect()

        loop_thread["ok"] = asyncio.run(run())

    worker = threading.Thread(target=run_in_thread)
    worker.start()
    worker.join(300)

    assert loop_thread.get("ok") is True
    assert threads == {loop_thread["id"]}


def test_raising_callbacks_are_logged_and_do_not_break_the_sync(tmp_path, serve, caplog):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "data.bin", payload(2 * MIB))
    write_file(src, "other.txt", b"other")
    server = serve(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
    calls = {"status": 0, "progress": 0}

    def bad_status(status: str, details: str) -> None:
        calls["status"] += 1
        raise RuntimeError("status callback bug")

    def bad_progress(progress: dict) -> None:
        calls["progress"] += 1
        raise ValueError("progress callback bug")

    client.set_status_callback(bad_status)
    client.set_progress_callback(bad_progress)

    async def run() -> bool:
        try:
            return await client.connect() and await client.sync()
        finally:
            await client.disconnect()

    with caplog.at_level(logging.ERROR, logger="ssp.client"):
        assert asyncio.run(run())

    assert_synced(src, dst)
    assert calls["status"] >= 3 and calls["progress"] >= 1
    logged = [r for r in caplog.records if r.name == "ssp.client" and r.exc_info]
    assert any("status callback bug" in str(r.exc_info[1]) for r in logged)
    assert any("progress callback bug" in str(r.exc_info[1]) for r in logged)


def test_cancel_sync_stops_it_and_leaves_no_partial_file(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "huge.bin", payload(128 * MIB))
    server = serve(src)
    client = SSPClient(SECRET, dst, server_host=HOST, server_port=server.port)
    statuses: list[str] = []
    client.set_status_callback(lambda status, _: statuses.append(status))

    def cancel_once_started(progress: dict) -> None:
        if 0 < progress["bytes_done"] < progress["bytes_total"]:
            client.cancel_sync()

    client.set_progress_callback(cancel_once_started)

    async def run() -> bool:
        try:
            assert await client.connect()
            return await client.sync()
        finally:
            await client.disconnect()

    ok = asyncio.run(run())

    assert ok is False, "the sync finished before the cancel took effect"
    assert "SYNC_ERROR" in statuses, statuses
    assert "cancel" in (client.last_error or "").lower(), client.last_error
    assert not (dst / "huge.bin").exists()

    # The next sync completes the file.
    again = pull(dst, server.port)
    assert again.ok, again.client.last_error
    assert_synced(src, dst)


def test_clients_in_several_threads_each_with_its_own_loop(tmp_path, serve):
    src = tmp_path / "server"
    write_file(src, "shared.bin", payload(4 * MIB))
    for i in range(20):
        write_file(src, f"f/{i}.txt", payload(i + 5, seed=i))
    server = serve(src)
    results: dict[int, object] = {}

    def worker(n: int) -> None:
        result = pull(tmp_path / f"client{n}", server.port)
        results[n] = (result.ok, result.client.last_error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert sorted(results) == [0, 1, 2, 3], results
    for n, (ok, error) in results.items():
        assert ok, (n, error)
        assert_synced(src, tmp_path / f"client{n}")
