"""Failures through the Python API: each gives a clear result, never a hang or a traceback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ssp import AddressInUseError, FolderError, SSPClient, SSPError, SSPServer

from conftest import HOST, SECRET, free_port, pull, statuses_of, write_file


def test_wrong_secret_connect_returns_false_with_auth_failed(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "secret-data.txt", b"must not leak")
    server = serve(src)

    result = pull(dst, server.port, secret="not the secret")

    assert result.ok is False
    assert "AUTH_FAILED" in statuses_of(result), result.statuses
    assert "AUTHENTICATED" not in statuses_of(result)
    assert result.client.last_error
    assert not (dst / "secret-data.txt").exists()
    assert not result.client.get_client_status()["authenticated"]


def test_wrong_secret_then_right_secret_works(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    server = serve(src)

    assert pull(dst, server.port, secret="wrong").ok is False
    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert (dst / "a.txt").read_bytes() == b"a"


def test_no_server_connect_returns_false_with_connection_error(tmp_path):
    port = free_port()  # nothing listens there

    result = pull(tmp_path / "client", port)

    assert result.ok is False
    assert "CONNECTION_ERROR" in statuses_of(result), result.statuses
    assert result.client.last_error


def test_sync_alone_against_no_server_returns_false(tmp_path):
    client = SSPClient(SECRET, tmp_path / "client", server_host=HOST, server_port=free_port())
    assert asyncio.run(client.sync()) is False
    assert client.last_error


def test_port_in_use_names_the_port(tmp_path):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = SSPServer(SECRET, tmp_path / "server", host=HOST, port=port)

        with pytest.raises(AddressInUseError) as caught:
            asyncio.run(server.start())

    assert str(port) in str(caught.value)
    assert isinstance(caught.value, SSPError)


def test_server_folder_that_is_a_file_is_refused(tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("I am a file")
    server = SSPServer(SECRET, not_a_folder, host=HOST, port=0)

    with pytest.raises(FolderError):
        asyncio.run(server.start())
    assert not_a_folder.read_text() == "I am a file"


def test_stop_before_start_is_harmless(tmp_path):
    server = SSPServer(SECRET, tmp_path / "server", host=HOST, port=0)
    asyncio.run(server.stop())
    assert server.get_server_status()["running"] is False
