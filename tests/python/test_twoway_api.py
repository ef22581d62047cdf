"""Two-way sync through the Python API: modes, conflicts (seen, reported, resolved), versions
(listed, restored), entries not synced, the read-only server and the mass-deletion guard."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from ssp import SSPClient, _native
from ssp.client import DEFAULT_VERSIONS_KEEP_DAYS, STATUSES, SYNC_MODES
from ssp.errors import ConfigError, FolderError, PathError

from conftest import HOST, SECRET, pull, snapshot, statuses_of, write_file


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def files(root: Path) -> set[str]:
    return set(snapshot(root))


def native_sync(folder: Path, port: int, **kwargs: object) -> dict:
    """One sync with the native client, raising the engine's exception class."""
    client = _native.NativeClient(SECRET, str(folder), HOST, port, **kwargs)  # type: ignore[arg-type]
    return client.pull_blocking()


def test_the_engine_is_the_one_home_of_modes_statuses_and_the_versions_default():
    assert SYNC_MODES == ("two-way", "pull", "push")
    assert "CONFLICT" in STATUSES
    assert STATUSES[0] == "CONNECTING"
    assert len(set(STATUSES)) == len(STATUSES)
    assert DEFAULT_VERSIONS_KEEP_DAYS == 30
    client = SSPClient(SECRET, "/nonexistent")
    assert client.mode == "two-way"
    assert client.keep_versions_days == 30


def test_an_unknown_mode_or_a_negative_keep_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="two-way, pull, push"):
        SSPClient(SECRET, tmp_path, mode="mirror")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_versions_days"):
        SSPClient(SECRET, tmp_path, keep_versions_days=-1)


# (mode, server-only file reaches the client, client-only file reaches the server)
MODES = [
    ("two-way", True, True),
    ("pull", True, False),
    ("push", False, True),
]


@pytest.mark.parametrize(("mode", "to_client", "to_server"), MODES)
def test_each_mode_moves_what_it_says(tmp_path, serve, mode, to_client, to_server):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "from-server.txt", b"s")
    write_file(dst, "from-client.txt", b"c")
    server = serve(src)

    result = pull(dst, server.port, mode=mode)

    assert result.ok, result.client.last_error
    assert ("from-server.txt" in files(dst)) is to_client
    assert ("from-client.txt" in files(src)) is to_server
    assert result.statuses[0][0] in STATUSES
    assert any(mode in details for status, details in result.statuses if status == "SYNC_STARTED")


def test_deletions_propagate_and_the_old_content_is_kept_in_versions(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "keep.txt", b"k")
    write_file(src, "gone.txt", b"precious")
    server = serve(src)
    assert pull(dst, server.port).ok
    (src / "gone.txt").unlink()

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    assert files(dst) == {"keep.txt"}
    assert result.client.get_sync_stats()["files_deleted"] == 1
    versions = asyncio.run(result.client.list_versions("gone.txt"))
    assert [v["path"] for v in versions] == ["gone.txt"]
    assert versions[0]["size"] == len(b"precious")


def make_conflict(tmp_path: Path, serve) -> tuple[Path, Path, int]:
    """A file synced once, then changed on both sides: the next sync is a conflict."""
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "notes.txt", b"original")
    server = serve(src)
    assert pull(dst, server.port).ok
    write_file(src, "notes.txt", b"server version")
    write_file(dst, "notes.txt", b"client version, longer")
    return src, dst, server.port


def test_a_conflict_is_reported_listed_and_both_versions_survive(tmp_path, serve):
    src, dst, port = make_conflict(tmp_path, serve)

    result = pull(dst, port)

    assert result.ok, result.client.last_error
    client = result.client
    assert statuses_of(result).count("CONFLICT") == 1
    conflict_details = dict(result.statuses)["CONFLICT"]
    assert "notes.txt" in conflict_details and "sync-conflict" in conflict_details
    assert client.get_sync_stats()["conflicts"] == 1
    report = client.get_last_report()
    assert [c["path"] for c in report["conflicts"]] == ["notes.txt"]
    reported = report["conflicts"][0]
    assert reported["winner"] in ("local", "remote")
    assert {reported["local"]["size"], reported["remote"]["size"]} == {14, 22}

    # The copy is made on the side whose version lost; the next round brings it here (it
    # syncs like any file), and both folders agree.
    assert pull(dst, port).ok
    assert snapshot(src) == snapshot(dst)
    copies = asyncio.run(client.get_conflicts())
    assert len(copies) == 1
    copy = copies[0]
    assert copy["path"] == "notes.txt"
    assert copy["copy"] == reported["copy"]
    assert copy["copy"].startswith("notes.sync-conflict-") and copy["copy"].endswith(".txt")
    # Both versions' size, time and device are there for the page.
    assert {copy["size"], copy["copy_size"]} == {14, 22}
    assert copy["mtime_ns"] and copy["copy_mtime_ns"]
    assert copy["device"] and copy["copy_device"]
    contents = {read(dst, "notes.txt"), read(dst, copy["copy"])}
    assert contents == {"server version", "client version, longer"}


# (keep, what is left at notes.txt: the original's or the copy's content, copy still there)
RESOLUTIONS = [
    ("original", "original", False),
    ("copy", "copy", False),
    ("both", "original", True),
]


@pytest.mark.parametrize(("keep", "at_name", "copy_left"), RESOLUTIONS)
def test_resolving_a_conflict_keeps_what_was_asked_and_syncs_it(
    tmp_path, serve, keep, at_name, copy_left
):
    src, dst, port = make_conflict(tmp_path, serve)
    assert pull(dst, port).ok
    client = pull(dst, port).client  # the second round brings the copy here, wherever made
    [conflict] = asyncio.run(client.get_conflicts())
    original, copied = read(dst, "notes.txt"), read(dst, conflict["copy"])

    asyncio.run(client.resolve_conflict(conflict["copy"], keep))

    assert read(dst, "notes.txt") == (original if at_name == "original" else copied)
    assert (dst / conflict["copy"]).exists() is False
    left = files(dst) - {"notes.txt"}
    if copy_left:
        # Renamed so it is no longer a conflict copy, its content intact.
        [renamed] = left
        assert "sync-conflict" not in renamed and read(dst, renamed) == copied
    else:
        assert left == set()
    assert asyncio.run(client.get_conflicts()) == []
    # Nothing is lost: what went is in versions.
    if not copy_left:
        kept = asyncio.run(client.list_versions())
        assert kept, "the version that went was not kept"
    # The resolution reaches the server.
    assert pull(dst, port).ok
    assert snapshot(src) == snapshot(dst)


def test_resolve_refuses_a_bad_keep_and_a_name_that_is_no_conflict_copy(tmp_path):
    client = SSPClient(SECRET, tmp_path)
    with pytest.raises(ValueError, match="original"):
        asyncio.run(client.resolve_conflict("a.sync-conflict-20240101-000000-ABCDEFG.txt", "x"))  # type: ignore[arg-type]
    with pytest.raises(PathError):
        asyncio.run(client.resolve_conflict("plain.txt", "both"))


def test_a_replaced_file_is_listed_in_versions_and_restored(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"first draft")
    server = serve(src)
    assert pull(dst, server.port).ok
    write_file(src, "doc.txt", b"second draft, longer")
    client = pull(dst, server.port).client
    assert read(dst, "doc.txt") == "second draft, longer"

    versions = asyncio.run(client.list_versions())

    assert [(v["path"], v["size"]) for v in versions] == [("doc.txt", len(b"first draft"))]
    kept = versions[0]
    assert abs(kept["archived_ns"] / 1e9 - time.time()) < 300
    assert kept["stored"]
    restored = asyncio.run(client.restore("doc.txt", at=kept["archived_ns"] / 1e9))
    assert restored["path"] == "doc.txt"
    assert read(dst, "doc.txt") == "first draft"
    # The replaced current file went into versions in its turn; the restore syncs on.
    assert len(asyncio.run(client.list_versions("doc.txt"))) == 2
    assert pull(dst, server.port).ok
    assert read(src, "doc.txt") == "first draft"


def test_restore_before_any_version_and_versioning_off(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "doc.txt", b"first draft")
    server = serve(src)
    assert pull(dst, server.port, keep_versions_days=0).ok
    write_file(src, "doc.txt", b"second draft, longer")
    client = pull(dst, server.port, keep_versions_days=None).client

    assert asyncio.run(client.list_versions()) == []
    with pytest.raises(_native.SSPError):
        asyncio.run(client.restore("doc.txt"))
    with pytest.raises(ValueError, match="unix seconds"):
        asyncio.run(client.restore("doc.txt", at=-1.0))


def test_entries_not_synced_are_listed_with_their_reason(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "a.txt", b"a")
    dst.mkdir()
    os.symlink("../../outside", dst / "escape")
    server = serve(src)

    result = pull(dst, server.port)

    assert result.ok, result.client.last_error
    report = result.client.get_last_report()
    assert any(s["path"] == "escape" and "outside" in s["reason"] for s in report["skipped"]), (
        report
    )
    assert result.client.get_sync_stats()["files_skipped"] == len(report["skipped"])
    assert report["failed"] == []


def test_a_read_only_server_refuses_a_push_and_two_way_only_receives(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "served.txt", b"s")
    write_file(dst, "mine.txt", b"m")
    server = serve(src, read_only=True)

    with pytest.raises(ConfigError, match="read-only"):
        native_sync(dst, server.port, mode="push")
    pushed = pull(dst, server.port, mode="push")
    assert not pushed.ok
    assert "read-only" in (pushed.client.last_error or "")

    two_way = pull(dst, server.port)
    assert two_way.ok, two_way.client.last_error
    assert "served.txt" in files(dst)
    assert "mine.txt" not in files(src)
    # Said, not silent: the report names the whole folder as not sent.
    skipped = two_way.client.get_last_report()["skipped"]
    assert any("read-only" in s["reason"] for s in skipped), skipped


def test_every_file_gone_stops_the_sync_unless_confirmed(tmp_path, serve):
    src, dst = tmp_path / "server", tmp_path / "client"
    for i in range(3):
        write_file(src, f"f{i}.txt", b"x")
    server = serve(src)
    assert pull(dst, server.port).ok
    for i in range(3):
        (dst / f"f{i}.txt").unlink()

    with pytest.raises(FolderError, match="allow_mass_delete"):
        native_sync(dst, server.port)
    guarded = pull(dst, server.port)
    assert not guarded.ok
    assert "SYNC_ERROR" in statuses_of(guarded)
    assert len(files(src)) == 3, "nothing was deleted on the server"

    confirmed = pull(dst, server.port, allow_mass_delete=True)
    assert confirmed.ok, confirmed.client.last_error
    assert files(src) == set()
    # ... and the server kept what it deleted.
    assert len(asyncio.run(SSPClient(SECRET, src).list_versions())) == 3


def _stub_literal(name: str) -> tuple[str, ...]:
    """The strings of ``name = Literal[...]`` in the installed ``_native.pyi``."""
    import ast

    stub = Path(_native.__file__).with_name("_native.pyi")
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            assert isinstance(node.value, ast.Subscript)
            elements = node.value.slice
            items = elements.elts if isinstance(elements, ast.Tuple) else [elements]
            return tuple(ast.literal_eval(item) for item in items)
    raise AssertionError(f"{name} not in {stub}")


@pytest.mark.parametrize(
    ("alias", "runtime"),
    [("_SyncMode", SYNC_MODES), ("_Status", STATUSES), ("_Keep", ("original", "copy", "both"))],
)
def test_the_stubs_literals_match_what_the_engine_exports(alias, runtime):
    # stubtest cannot see inside a Literal: a status or mode added in Rust must reach the stub.
    assert _stub_literal(alias) == tuple(runtime)
