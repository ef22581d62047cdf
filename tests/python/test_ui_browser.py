"""The web interface in a real browser: ``streamlit run streamlit_app.py`` driven by Playwright
in Debian's headless Chromium. Start Server, Start Sync, wait for 100% and the synced files,
and keep screenshots under ``tests/output/``.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs Debian's ``chromium``). Without it the test
fails and says so: a browser test that skips itself tests nothing. Playwright never downloads a
browser here; it launches the system one.

``SSP_UPDATE_SCREENSHOT=1 pytest tests/python/test_ui_browser.py`` also refreshes the README's
``docs/screenshot.png`` and ``docs/conflicts.png``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    HOST,
    assert_synced,
    error_server,
    free_port,
    payload,
    streamlit_server,
    write_file,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = ROOT / "tests" / "output"
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"
SECRET = "a long secret only these two folders share"
# Bounds a hang (start-up, a sync that never ends), never a speed.
HANG_S = 60


@pytest.fixture
def streamlit_app(tmp_path: Path) -> Iterator[str]:
    """``streamlit run streamlit_app.py`` on a free 127.0.0.1 port; yields its URL."""
    with streamlit_server(tmp_path) as (port, _log):
        yield f"http://{HOST}:{port}"


def launch_chromium():
    """Playwright and the system Chromium, or a failure that says what to install."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; "
            f".ci/run does) to run the browser test"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"Playwright for Python is missing ({exc}): pip install '.[test]'")
    return sync_playwright()


@contextmanager
def chromium_page(*args: str) -> Iterator[Any]:
    """A page in Debian's headless Chromium (started with ``args``); a failure inside leaves a
    full-page screenshot in tests/output and prints the page's text, for whoever reads it."""
    with launch_chromium() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(args)
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(HANG_S * 1000)
            try:
                yield page
            except Exception:
                page.screenshot(path=str(OUTPUT / "ui-failure.png"), full_page=True)
                print(f"page text at the failure:\n{page.inner_text('body')}")
                raise
        finally:
            browser.close()


def fill(page, name: str, value: str, role: str = "textbox") -> None:
    field = page.get_by_role(role, name=name, exact=True)
    field.fill(value)
    field.press("Enter")  # Streamlit commits a text field on Enter or blur


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    """A short-named temporary folder: its paths show on the screenshots."""
    with tempfile.TemporaryDirectory(prefix="ssp-demo-") as name:
        yield Path(name)


def test_start_server_and_sync_in_the_browser(streamlit_app: str, demo_dir: Path):
    src, dst = demo_dir / "served", demo_dir / "received"
    names = ["holiday/beach.jpg", "holiday/sunset.jpg", "notes.txt", "thesis/draft-v3.pdf"]
    for i, name in enumerate(names):
        write_file(src, name, payload((i + 1) * 700_000, seed=i))
    ssp_port = free_port()
    OUTPUT.mkdir(parents=True, exist_ok=True)

    with chromium_page() as page:
        page.goto(streamlit_app)
        page.get_by_text("SmartSync Protocol").first.wait_for()

        # Sidebar: a real secret, the loopback address, a free port, the served folder.
        fill(page, "Shared secret", SECRET)
        page.get_by_text("You are using the default secret").wait_for(state="detached")
        fill(page, "Host", HOST)
        fill(page, "Port", str(ssp_port), role="spinbutton")
        fill(page, "Sync folder", str(src))

        page.get_by_role("button", name="Start Server").click()
        page.get_by_text(f"Running on {HOST}:{ssp_port}").wait_for()
        page.screenshot(path=str(OUTPUT / "ui-server.png"))

        page.get_by_role("tab", name="Client").click()
        fill(page, "Client folder", str(dst))
        page.get_by_text("Client folder").first.wait_for()
        page.get_by_role("button", name="Start Sync").click()
        page.get_by_text("Sync progress: 100%").wait_for()
        page.get_by_text("Synced 4 file(s)").wait_for()
        page.wait_for_timeout(800)  # let the progress bar's animation settle for the picture
        page.screenshot(path=str(OUTPUT / "ui-client.png"))

        page.get_by_role("tab", name="Monitoring").click()
        page.get_by_test_id("stRadioOption").get_by_text("Client folder").click()
        table = page.get_by_test_id("stDataFrame").first
        deadline = time.monotonic() + HANG_S
        while not all(name in (table.text_content() or "") for name in names):
            assert time.monotonic() < deadline, f"files not listed: {table.text_content()}"
            page.wait_for_timeout(200)
        page.screenshot(path=str(OUTPUT / "ui-monitoring.png"))
        page.get_by_text("Throughput").scroll_into_view_if_needed()
        page.get_by_test_id("stVegaLiteChart").first.wait_for()  # it has points by now
        page.screenshot(path=str(OUTPUT / "ui-performance.png"))

        page.get_by_role("tab", name="Server").click()
        page.get_by_role("button", name="Stop Server").click()
        page.get_by_text("Stopped").first.wait_for()
        assert page.get_by_text("Traceback").count() == 0

    assert_synced(src, dst)
    if os.environ.get("SSP_UPDATE_SCREENSHOT"):
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(OUTPUT / "ui-client.png", README_SCREENSHOT)


REBOUND = "attacker.example"


def test_a_rebound_name_gets_no_page_in_the_browser(tmp_path: Path):
    """DNS rebinding in a real browser: Chromium resolves attacker.example to 127.0.0.1, as a
    rebound name would. Under the repository's config Streamlit refuses the page's WebSocket,
    so nothing of the page appears; with Streamlit's allow-list widened to ``*`` the page's own
    check shows one line and no tab. At http://localhost the page works."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with chromium_page(f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1") as page:
        with streamlit_server(tmp_path / "default") as (port, _log):
            sockets: list = []

            def opened(ws) -> None:
                sockets.append(ws)

            page.on("websocket", opened)
            page.goto(f"http://{REBOUND}:{port}")
            # Streamlit's page skeleton loads; its WebSocket is refused (and retried).
            deadline = time.monotonic() + HANG_S
            while sum(ws.is_closed() for ws in sockets) < 2:
                assert time.monotonic() < deadline, f"no WebSocket refused: {sockets}"
                page.wait_for_timeout(200)
            page.remove_listener("websocket", opened)
            page.screenshot(path=str(OUTPUT / "ui-rebound-refused.png"))
            assert page.get_by_role("tab").count() == 0
            assert page.get_by_text("SmartSync Protocol").count() == 0
            assert page.get_by_role("button", name="Start Server").count() == 0

            page.goto(f"http://localhost:{port}")
            page.get_by_role("tab", name="Server").wait_for()
            page.get_by_role("button", name="Start Server").wait_for()

        with streamlit_server(tmp_path / "star", "--server.allowedHosts", "*") as (port, _):
            page.goto(f"http://{REBOUND}:{port}")
            page.get_by_text("This page answers only at http://localhost").wait_for()
            page.screenshot(path=str(OUTPUT / "ui-rebound-page-refusal.png"))
            assert page.get_by_role("tab").count() == 0
            assert page.get_by_text("SmartSync Protocol").count() == 0
            assert page.get_by_role("button").filter(has_text="Start").count() == 0


def test_a_hostile_servers_error_shows_as_text_in_the_browser(streamlit_app: str, tmp_path: Path):
    """A server answers HELLO with an ERROR whose message is Markdown and escape sequences: the
    Client tab shows it character for character, with no link and no remote image."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with error_server() as bad_port, chromium_page() as page:
        page.goto(streamlit_app)
        page.get_by_text("SmartSync Protocol").first.wait_for()
        fill(page, "Shared secret", SECRET)
        page.get_by_role("tab", name="Client").click()
        fill(page, "Server host", HOST)
        fill(page, "Server port", str(bad_port), role="spinbutton")
        fill(page, "Client folder", str(tmp_path / "client"))
        page.get_by_role("button", name="Start Sync").click()
        # The error alert (the log box below shows the same line in a code block).
        alert = page.locator('[data-testid="stAlertContentError"]')
        alert.filter(has_text="[link](http://x) ![img](http://x/i.png)").first.wait_for()
        page.get_by_text("Failed").first.wait_for()
        alert.first.scroll_into_view_if_needed()
        page.screenshot(path=str(OUTPUT / "ui-hostile-error.png"))
        assert page.locator('a[href^="http://x"]').count() == 0
        assert page.locator('img[src^="http://x"]').count() == 0
        body = page.inner_text("body")
        assert "\x1b" not in body and "\x07" not in body, repr(body[-500:])


CONFLICTS_SCREENSHOT = ROOT / "docs" / "conflicts.png"


def pick_mode(page, label: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text="Mode").click()
    page.get_by_role("option", name=label).click()
    page.get_by_role("option", name=label).wait_for(state="detached")  # the list closed


def test_pick_a_mode_resolve_a_conflict_and_restore_a_version_in_the_browser(
    streamlit_app: str, demo_dir: Path
):
    src, dst = demo_dir / "served", demo_dir / "received"
    write_file(src, "notes.txt", b"original notes\n")
    write_file(src, "thesis/draft.txt", b"first draft\n")
    ssp_port = free_port()
    OUTPUT.mkdir(parents=True, exist_ok=True)

    with chromium_page() as page:
        page.goto(streamlit_app)
        page.get_by_text("SmartSync Protocol").first.wait_for()
        fill(page, "Shared secret", SECRET)
        fill(page, "Host", HOST)
        fill(page, "Port", str(ssp_port), role="spinbutton")
        fill(page, "Sync folder", str(src))
        page.get_by_role("button", name="Start Server").click()
        page.get_by_text(f"Running on {HOST}:{ssp_port}").wait_for()

        page.get_by_role("tab", name="Client").click()
        fill(page, "Client folder", str(dst))
        # Pull first: a file made here stays here.
        pick_mode(page, "Pull: take the server's changes (deletions too), send nothing")
        write_file(dst, "only-here.txt", b"mine\n")
        page.get_by_role("button", name="Start Sync").click()
        page.get_by_text("(pull).").wait_for()
        assert not (src / "only-here.txt").exists()

        # Two-way: an edit on both sides is a conflict; both versions survive.
        pick_mode(page, "Two-way: send changes made here, take the server's")
        write_file(src, "notes.txt", b"notes edited on the server\n")
        write_file(dst, "notes.txt", b"notes edited here, on the laptop\n")
        write_file(src, "thesis/draft.txt", b"second draft, much better\n")
        page.get_by_role("button", name="Start Sync").click()
        page.get_by_text("1 conflict(s)").wait_for()
        page.get_by_role("button", name="Start Sync").click()  # brings the copy here
        page.get_by_text("was changed on two devices").wait_for()
        heading = page.get_by_role("heading", name="Conflicts")
        heading.evaluate("e => e.scrollIntoView({block: 'start'})")  # the view at the top
        page.get_by_role("button", name="Keep both").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUTPUT / "ui-conflicts.png"))

        page.get_by_role("button", name="Keep both").first.click()
        # The lasting effect, not the confirmation (an auto-refresh run may replace that first).
        page.get_by_text("No conflicts in the client folder.").wait_for()
        kept = sorted(p.name for p in dst.iterdir() if p.name.startswith("notes"))
        assert len(kept) == 2 and not any("sync-conflict" in name for name in kept), kept

        # Versions: the draft the sync replaced, put back with Restore.
        assert (dst / "thesis/draft.txt").read_bytes() == b"second draft, much better\n"
        page.get_by_role("heading", name="Versions").scroll_into_view_if_needed()
        row = page.get_by_test_id("stHorizontalBlock").filter(has_text="thesis/draft.txt")
        row.get_by_role("button", name="Restore").first.click()
        # The effect, not the message: the confirmation shows in the run the click starts, and
        # an auto-refresh run a second later may replace it before it is seen (seen in CI).
        restored = dst / "thesis/draft.txt"
        deadline = time.monotonic() + 60
        while restored.read_bytes() != b"first draft\n" and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        page.screenshot(path=str(OUTPUT / "ui-versions.png"))
        assert restored.read_bytes() == b"first draft\n"
        assert page.get_by_text("Traceback").count() == 0

    if os.environ.get("SSP_UPDATE_SCREENSHOT"):
        shutil.copyfile(OUTPUT / "ui-conflicts.png", CONFLICTS_SCREENSHOT)
