"""The page itself, run by Streamlit's ``AppTest`` (no browser): the sidebar, the buttons, the
metrics and file list they lead to, and the errors a person sees."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ssp.ui import close_shared_controller

from conftest import HOST, SECRET, assert_synced, payload, write_file

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
# Bounds a hang, never a speed.
HANG_S = 120
RUN_TIMEOUT_S = 30


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page creates its default folder ~/SSP_Sync: keep it out of the real home."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppTest]:
    """The page with a test secret, 127.0.0.1 and a fresh folder; everything stopped after."""
    close_shared_controller()
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S).run()
    assert not at.exception, at.exception
    at.sidebar.text_input(key="secret").input(SECRET)
    at.sidebar.text_input(key="host").input(HOST)
    at.sidebar.text_input(key="folder").input(str(tmp_path / "server"))
    at.run()
    yield at
    close_shared_controller()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def texts(at: AppTest) -> str:
    """Everything the page says in markdown, captions, alerts and progress bars."""
    parts = [e.value for e in (*at.markdown, *at.caption)]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    parts += [str(getattr(e.proto, "text", "")) for e in at.get("progress")]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}"
    return str(found[0])


def rerun_until(at: AppTest, predicate, what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while True:
        at.run()
        assert not at.exception, at.exception
        if predicate(at):
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{texts(at)}"
        time.sleep(0.1)


def start_server(at: AppTest, port: int) -> None:
    at.sidebar.number_input(key="port").set_value(port)
    at.run()
    at.button(key="start_server").click().run()


def test_sidebar_defaults_and_the_default_secret_warning(tmp_path: Path, home: Path):
    close_shared_controller()
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    at.run()
    try:
        assert not at.exception, at.exception
        assert at.sidebar.text_input(key="secret").value == "default_secret_key"
        assert at.sidebar.text_input(key="host").value == "localhost"
        assert at.sidebar.number_input(key="port").value == 8888
        assert at.sidebar.text_input(key="folder").value == "~/SSP_Sync"
        assert (home / "SSP_Sync").is_dir(), "the default sync folder is created"
        assert any("default secret" in w.value for w in at.sidebar.warning)
        assert "Stopped" in texts(at) and "Idle" in texts(at)
        assert [t.label for t in at.tabs] == [
            ":material/dns: Server",
            ":material/laptop: Client",
            ":material/monitoring: Monitoring",
        ]
        # A new sync folder is created.
        at.sidebar.text_input(key="folder").input(str(tmp_path / "made" / "here")).run()
        assert (tmp_path / "made" / "here").is_dir()
        at.sidebar.text_input(key="secret").input("s3cret").run()
        assert not any("default secret" in w.value for w in at.sidebar.warning)
    finally:
        close_shared_controller()


def test_start_server_sync_a_second_folder_list_it_and_stop(app: AppTest, tmp_path: Path):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "report.pdf", payload(2 * 1024 * 1024))
    write_file(src, "notes/todo.txt", b"buy milk\n")
    port = free_port()

    start_server(app, port)
    assert not app.error, [e.value for e in app.error]
    assert f"on `{HOST}:{port}`" in texts(app) and "Running" in texts(app)

    app.text_input(key="client_folder").input(str(dst)).run()
    app.button(key="start_sync").click().run()
    rerun_until(app, lambda at: "Completed" in texts(at), "the sync to complete")
    assert "Sync progress: 100%" in texts(app)
    assert any("Synced 2 file(s) (2.0 MiB)" in s.value for s in app.success)
    assert_synced(src, dst)
    assert metric(app, "Files received") == "2"
    assert metric(app, "Bytes received") == "2.0 MiB"
    rerun_until(app, lambda at: metric(at, "Files sent") == "2", "the server's metrics")
    assert metric(app, "Sync sessions") == "1"
    assert metric(app, "Bytes sent") == "2.0 MiB"

    # The Monitoring tab lists the client's folder, searchably.
    app.radio(key="monitor_folder").set_value("Client folder").run()
    assert metric(app, "Files") == "2"
    table = app.dataframe[-1].value
    assert list(table["file"]) == ["notes/todo.txt", "report.pdf"]
    assert list(table["size"]) == ["9 B", "2.0 MiB"]
    app.text_input(key="file_search").input("todo").run()
    assert list(app.dataframe[-1].value["file"]) == ["notes/todo.txt"]

    app.button(key="stop_server").click().run()
    assert "Stopped" in texts(app)
    assert app.button(key="start_server").disabled is False


def test_a_wrong_secret_shows_the_authentication_error(app: AppTest, tmp_path: Path):
    start_server(app, free_port())
    assert "Running" in texts(app)
    app.sidebar.text_input(key="secret").input("not the server's secret").run()
    app.text_input(key="client_folder").input(str(tmp_path / "client")).run()
    app.button(key="start_sync").click().run()
    rerun_until(app, lambda at: "Failed" in texts(at), "the sync to fail")
    errors = [e.value for e in app.error]
    assert any("Authentication failed" in e and "shared secret" in e for e in errors), errors
    assert not app.exception


def test_a_port_in_use_shows_the_port_error(app: AppTest):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        start_server(app, port)
    errors = [e.value for e in app.error]
    assert any(f"Port {port}" in e and "already in use" in e for e in errors), errors
    assert "Stopped" in texts(app)
    assert not app.exception


def test_the_page_listens_on_localhost_only_by_default():
    """Whoever reaches the page controls the server: the repository's config keeps it local."""
    config = (APP.parent / ".streamlit" / "config.toml").read_text()
    server = config.split("[server]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^address = "(localhost|127\.0\.0\.1)"$', server, re.M), server
    client = config.split("[client]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^showErrorDetails = "(type|none)"$', client, re.M), client


def test_the_first_run_asks_no_questions_in_the_terminal():
    """The README's first command must start the page unattended, not stop at "Email:"."""
    config = (APP.parent / ".streamlit" / "config.toml").read_text()
    server = config.split("[server]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^showEmailPrompt = false$", server, re.M), server


def test_pick_a_mode_see_a_conflict_resolve_it_and_restore_a_version(app: AppTest, tmp_path: Path):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "notes.txt", b"original")
    write_file(src, "doc.txt", b"first draft")
    start_server(app, free_port())
    app.text_input(key="client_folder").input(str(dst)).run()
    mode = app.selectbox(key="sync_mode")
    assert mode.options == [
        "Two-way: send changes made here, take the server's",
        "Pull: take the server's changes (deletions too), send nothing",
        "Push: send changes made here, take nothing",
    ]
    assert mode.value == "two-way"

    def sync() -> None:
        app.button(key="start_sync").click().run()
        rerun_until(app, lambda at: "Completed" in texts(at), "the sync to complete")

    sync()
    assert "No conflicts in the client folder." in texts(app)
    write_file(src, "notes.txt", b"server version")
    write_file(src, "doc.txt", b"second draft, longer")
    write_file(dst, "notes.txt", b"client version, longer")
    sync()
    assert any("1 conflict(s)" in s.value for s in app.success), texts(app)
    sync()  # the copy is made where the version lost; this round brings it here

    rerun_until(app, lambda at: "was changed on two devices" in texts(at), "the conflict")
    page = texts(app)
    assert "**This** (at the name): 22 B" in page or "**This** (at the name): 14 B" in page
    assert "**That** (notes\\.sync\\-conflict\\-" in page and "· device " in page
    app.button(key="resolve_both_0").click().run()
    assert any("kept both" in s.value for s in app.success), texts(app)
    assert "No conflicts in the client folder." in texts(app)
    assert len([p for p in dst.iterdir() if p.name.startswith("notes")]) == 2

    # Versions: the draft the sync replaced, restored with its button.
    assert (dst / "doc.txt").read_bytes() == b"second draft, longer"
    restore = [b for b in app.button if b.label == "Restore"]
    assert restore, texts(app)
    assert "doc\\.txt" in texts(app)
    restore[0].click().run()
    assert any("Restored doc\\.txt" in s.value for s in app.success), texts(app)
    assert (dst / "doc.txt").read_bytes() == b"first draft"

    # Pull mode: a file made here is not sent.
    write_file(dst, "mine.txt", b"m")
    app.selectbox(key="sync_mode").set_value("pull").run()
    sync()
    assert not (src / "mine.txt").exists()
    assert "(pull)" in "".join(s.value for s in app.success)


def test_a_read_only_server_and_the_entries_not_synced(app: AppTest, tmp_path: Path):
    src, dst = tmp_path / "server", tmp_path / "client"
    write_file(src, "served.txt", b"s")
    write_file(dst, "mine.txt", b"a change made here, which the server will not take")
    app.checkbox(key="read_only").check().run()
    start_server(app, free_port())
    assert "read-only" in texts(app)
    app.text_input(key="client_folder").input(str(dst)).run()
    app.selectbox(key="sync_mode").set_value("push").run()
    app.button(key="start_sync").click().run()
    rerun_until(app, lambda at: "Failed" in texts(at), "the push to fail")
    assert any("read\\-only" in e.value for e in app.error), texts(app)  # shown escaped

    app.selectbox(key="sync_mode").set_value("two-way").run()
    app.button(key="start_sync").click().run()
    rerun_until(app, lambda at: "Completed" in texts(at), "the sync to complete")
    assert any("1 entry was not synced" in w.value for w in app.warning), texts(app)
    table = next(d.value for d in app.dataframe if "why" in d.value)
    assert list(table["entry"]) == ["(the whole folder)"]
    assert "read-only" in table["why"][0]
