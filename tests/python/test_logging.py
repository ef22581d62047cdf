"""The engine's logs reach Python's logging under ``ssp.*``; the CLI's -v shows them."""

from __future__ import annotations

import logging

from conftest import assert_synced, payload, pull, run_client, write_file

WRAPPER_LOGGERS = {"ssp.client", "ssp.server", "ssp.cli"}


def test_engine_logs_arrive_under_ssp_loggers(tmp_path, serve, caplog):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.bin", payload(100_000))
    server = serve(src)

    with caplog.at_level(logging.DEBUG):
        result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    engine = {r.name for r in caplog.records if r.name.startswith("ssp.")} - WRAPPER_LOGGERS
    assert engine, sorted({r.name for r in caplog.records})
    assert all(name.startswith("ssp.") for name in engine)


def test_cli_verbose_prints_engine_logs(tmp_path, cli_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    server = cli_server(src)

    quiet = run_client(tmp_path / "quiet", server.port)
    verbose = run_client(dst, server.port, extra=("-v",))

    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert verbose.returncode == 0, verbose.stderr
    assert " ssp." in verbose.stderr, verbose.stderr
    assert_synced(src, dst)
