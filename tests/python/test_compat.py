"""The original SSP's imports and helpers keep working."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time

import pytest

import ssp
from ssp import _native

from conftest import HOST, REPO, SECRET, cli_env, free_port, payload, write_file


def test_top_level_package_exports():
    from ssp import (  # noqa: F401
        CHUNK_SIZE,
        PROTOCOL_VERSION,
        FileInfo,
        MessageType,
        SSPClient,
        SSPProtocol,
        SSPServer,
    )

    assert PROTOCOL_VERSION == 3  # v3: two-way sync (issue 7); a v2 peer gets a version error
    assert CHUNK_SIZE == _native.DEFAULT_CHUNK_SIZE
    for name in ssp.__all__:
        assert hasattr(ssp, name), name


def test_original_module_names_import():
    from ssp_client import SSPClient
    from ssp_protocol import CHUNK_SIZE, MessageType, SSPMessage, SSPProtocol
    from ssp_server import SSPServer

    assert SSPServer is ssp.SSPServer
    assert SSPClient is ssp.SSPClient
    assert SSPProtocol is ssp.SSPProtocol
    assert SSPMessage is ssp.SSPMessage
    assert MessageType is ssp.MessageType
    assert CHUNK_SIZE == ssp.CHUNK_SIZE


@pytest.mark.parametrize("module", ["ssp_server", "ssp_client", "ssp_protocol"])
def test_compat_modules_are_installed_next_to_ssp(module):
    # They must come from the installed wheel (site-packages), like ssp itself.
    imported = importlib.import_module(module)
    assert imported.__file__ is not None
    assert ssp.__file__ is not None
    from pathlib import Path

    assert Path(imported.__file__).parent.parent == Path(ssp.__file__).parent.parent


def test_errors_share_one_base():
    for name in (
        "AuthError",
        "ProtocolError",
        "PathError",
        "AddressInUseError",
        "FolderError",
        "SSPConnectionError",
        "DiskError",
    ):
        assert issubclass(getattr(ssp, name), ssp.SSPError), name
    assert issubclass(ssp.SSPError, Exception)


def test_message_types_keep_the_original_names():
    names = [
        "HELLO",
        "AUTH",
        "FILE_INDEX",
        "FILE_REQUEST",
        "FILE_CHUNK",
        "ACK",
        "SYNC_COMPLETE",
        "ERROR",
        "HEARTBEAT",
    ]
    for name in names:
        assert ssp.MessageType[name].value == name


def test_message_json_round_trip():
    message = ssp.SSPMessage(ssp.MessageType.FILE_REQUEST, {"path": "a/b.txt"})
    text = message.to_json()
    assert json.loads(text)["type"] == "FILE_REQUEST"
    back = ssp.SSPMessage.from_json(text)
    assert back == message
    assert ssp.SSPMessage.from_dict(message.to_dict()) == message


def test_scan_folder_lists_files_with_file_info(tmp_path):
    write_file(tmp_path, "a.txt", b"hello", mtime=1_600_000_000.5)
    write_file(tmp_path, "sub/dir/b.bin", payload(70_000), executable=True)
    write_file(tmp_path, "ünï/ç.txt", b"")
    protocol = ssp.SSPProtocol("secret", tmp_path)

    index = protocol._scan_folder()

    assert set(index) == {"a.txt", "sub/dir/b.bin", "ünï/ç.txt"}
    info = index["a.txt"]
    assert isinstance(info, ssp.FileInfo)
    assert (info.path, info.size) == ("a.txt", 5)
    assert abs(info.modified_time - 1_600_000_000.5) < 1e-3
    assert isinstance(info.hash, str) and len(info.hash) >= 32
    assert index["sub/dir/b.bin"].size == 70_000
    assert index["sub/dir/b.bin"].executable is True
    assert index["ünï/ç.txt"].size == 0
    assert index["a.txt"].hash != index["ünï/ç.txt"].hash
    # The metadata folder the scan may create is never listed.
    assert not any(p.startswith(ssp.METADATA_DIR) for p in protocol._scan_folder())


def test_scan_folder_sees_changes(tmp_path):
    write_file(tmp_path, "c.txt", b"one", mtime=1_600_000_000)
    protocol = ssp.SSPProtocol("secret", tmp_path)
    before = protocol._scan_folder()["c.txt"].hash
    write_file(tmp_path, "c.txt", b"two", mtime=1_600_000_010)
    after = protocol._scan_folder()["c.txt"].hash
    assert before != after


def test_protocol_creates_its_folder(tmp_path):
    folder = tmp_path / "made" / "by" / "protocol"
    protocol = ssp.SSPProtocol("secret", folder)
    assert folder.is_dir()
    assert protocol._scan_folder() == {}


def test_validate_path_rejects_hostile_paths():
    assert ssp.validate_path("a/b.txt") == "a/b.txt"
    for hostile in ("../escape", "/etc/passwd", "a/../../b", "a\\b", "a\0b"):
        with pytest.raises(ssp.PathError):
            ssp.validate_path(hostile)


@pytest.mark.parametrize("module", ["ssp_server", "ssp_client", "ssp"])
def test_python_m_help(module):
    done = subprocess.run(
        [sys.executable, "-m", module, *(["server"] if module == "ssp" else []), "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "FOLDER" in done.stdout


@pytest.mark.parametrize("role", ["server", "client"])
def test_original_scripts_in_the_repository_folder(role):
    """The original's ``ssp_ROLE.py`` at the top of the checkout: importable from there with
    the same class as the package's, and runnable (``python ssp_ROLE.py --help``)."""
    cls = f"SSP{role.capitalize()}"
    probe = (
        f"import ssp, ssp_{role}; "
        f"assert ssp_{role}.{cls} is ssp.{cls}; print(ssp_{role}.__file__)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=cli_env()
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(REPO / f"ssp_{role}.py")

    helped = subprocess.run(
        [sys.executable, str(REPO / f"ssp_{role}.py"), "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert helped.returncode == 0, helped.stderr
    assert f"ssp-{role}" in helped.stdout and "SECRET" in helped.stdout


def test_original_script_without_the_package_says_how_to_install_it():
    # -S: no site-packages, as in a checkout where `pip install .` was never run.
    ran = subprocess.run(
        [sys.executable, "-S", str(REPO / "ssp_server.py"), "secret", "folder"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert ran.returncode == 1
    lines = ran.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssp-server: error: "), ran.stderr
    assert "pip install ." in lines[0]


def test_the_cli_can_tune_glibc_malloc_for_transfers():
    """ssp-client/ssp-server keep freed transfer buffers (fewer page faults); on glibc the
    setting must take, elsewhere it is a no-op that says so."""
    import platform

    probe = "from ssp import _native; print(_native.tune_allocator_for_transfers())"
    changed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert changed.returncode == 0, changed.stderr
    on_glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert changed.stdout.strip() == str(on_glibc)


def original_page_stats_line(client: ssp.SSPClient) -> str:
    """The original page's client-stats step: it compares both times with ``0`` ("0 means
    never") and formats them; with ``None`` it showed "Error getting client stats: '>' not
    supported between instances of 'NoneType' and 'int'" on every refresh."""
    try:
        stats = client.get_sync_stats()
        last = (
            time.strftime("%H:%M:%S", time.localtime(stats["sync_start_time"]))
            if stats["sync_start_time"] > 0
            else "never"
        )
        took = f"{stats['sync_duration']:.2f} s" if stats["sync_duration"] > 0 else "-"
        return f"files {stats['files_received']}, last sync {last}, took {took}"
    except Exception as exc:
        return f"Error getting client stats: {exc}"


# (case, how the client is used before reading its stats, whether a sync has started)
STATS_CASES = [
    pytest.param("fresh", False, id="never-synced"),
    # Refused before a sync starts: still "never".
    pytest.param("unreachable", False, id="failed-connect"),
    pytest.param("synced", True, id="after-a-sync"),
]


@pytest.mark.parametrize(("case", "synced"), STATS_CASES)
def test_sync_stats_times_are_numbers_zero_until_a_sync(tmp_path, serve, case, synced):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"abc")
    port = serve(src).port if case == "synced" else free_port()
    client = ssp.SSPClient(SECRET, dst, server_host=HOST, server_port=port)
    started = time.time()
    if case != "fresh":

        async def run() -> bool:
            try:
                return await client.sync()
            finally:
                await client.disconnect()

        assert asyncio.run(run()) is synced

    line = original_page_stats_line(client)
    assert not line.startswith("Error"), line
    assert ("last sync never" in line) is not synced, line
    for stats in (client.get_sync_stats(), client.get_client_status()["stats"]):
        for key in ("sync_start_time", "sync_duration"):
            assert isinstance(stats[key], (int, float)), (key, stats[key])
        if synced:
            assert started - 5 <= stats["sync_start_time"] <= time.time()
            assert stats["sync_duration"] >= 0
        else:
            assert stats["sync_start_time"] == 0 and stats["sync_duration"] == 0, stats
