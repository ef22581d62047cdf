"""Peer text reaches people as text: a server's ERROR message (sent before any secret is
checked) cannot drive the terminal, forge log lines, or render as Markdown in the page."""

from __future__ import annotations

import logging
import re
import string
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ssp import cli
from ssp.text import PRINTABLE_MAX_CHARS, PrintableFormatter, markdown_literal, printable
from ssp.ui import LogBuffer, close_shared_controller

from conftest import HOST, HOSTILE_TEXT, SECRET, error_server, pull, run_client

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
# Bounds a hang, never a speed.
HANG_S = 120

# Characters a terminal acts on instead of showing: C0 controls, DEL, C1 controls (CSI 0x9b),
# bidi overrides and isolates, the Unicode line separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")

PRINTABLE_CASES = [
    pytest.param("plain text, ünïcödé 日本語 🎉", "plain text, ünïcödé 日本語 🎉", id="kept"),
    pytest.param("\x1b]0;pwned\x07", "\\u{1b}]0;pwned\\u{7}", id="osc-title"),
    pytest.param("\x1b[32msynced\x1b[0m", "\\u{1b}[32msynced\\u{1b}[0m", id="sgr-colour"),
    pytest.param("ok\nforged line\r", "ok\\u{a}forged line\\u{d}", id="newlines"),
    pytest.param("a\tb\x00c\x7fd", "a\\u{9}b\\u{0}c\\u{7f}d", id="tab-nul-del"),
    pytest.param("\x9b31m", "\\u{9b}31m", id="c1-csi"),
    pytest.param("evil\u202etxt.exe", "evil\\u{202e}txt.exe", id="bidi-override"),
    pytest.param("a\u2028b", "a\\u{2028}b", id="line-separator"),
    pytest.param("a\ufeffb", "a\\u{feff}b", id="byte-order-mark"),
]


@pytest.mark.parametrize(("raw", "shown"), PRINTABLE_CASES)
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str):
    assert printable(raw) == shown
    assert not CONTROL.search(printable(raw))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("x" * 10_000, id="10k-plain"),
        pytest.param("\x1b" * 10_000, id="10k-escapes"),
    ],
)
def test_printable_caps_the_length(raw: str):
    shown = printable(raw)
    assert len(shown) <= PRINTABLE_MAX_CHARS
    assert shown.endswith("…")
    assert not CONTROL.search(shown)


@pytest.mark.parametrize(
    "raw",
    [
        "[link](http://x)",
        "![img](http://x/i.png)",
        "<http://x> www.x.org http://x/y",
        "**bold** _em_ `code` <b>html</b> &amp;",
        ":red[fake] :material/check: $x^2$",
        "# heading",
        "1. list",
        HOSTILE_TEXT,
    ],
)
def test_markdown_literal_escapes_every_markdown_character(raw: str):
    """Every ASCII punctuation character is backslash-escaped (CommonMark then shows it as
    itself); what remains unescaped is letters, digits, spaces and non-ASCII text. The browser
    test checks the rendered page too."""
    escaped = markdown_literal(raw)
    unescaped = re.sub(r"\\(.)", "", escaped)
    assert not set(unescaped) & set(string.punctuation), escaped
    assert re.sub(r"\\(.)", r"\1", escaped) == printable(raw)


def test_cli_prints_a_hostile_servers_error_as_one_plain_line(tmp_path: Path):
    with error_server() as port:
        done = run_client(tmp_path / "client", port)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ssp-client: error: "), lines[0]
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, repr(done.stderr)
    assert not CONTROL.search(lines[0]), repr(lines[0])
    assert "\\u{1b}]0;pwned\\u{7}" in lines[0], lines[0]  # shown, not obeyed


def test_cli_log_lines_cannot_be_forged(capsys: pytest.CaptureFixture[str]):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        cli._setup_logging(cli.Settings("s", "f", HOST, 1, None, 0, False), logging.INFO)
        logging.getLogger("ssp.test").warning("peer said: %s", HOSTILE_TEXT)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, repr(err)  # one record, one line
    assert "\x1b" not in err and "\x07" not in err, repr(err)
    assert "\\u{a} forged authenticated" in err, err


def test_printable_formatter_keeps_a_traceback_on_one_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("ssp.t", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = __import__("sys").exc_info()
    line = PrintableFormatter("%(message)s").format(record)
    assert "\n" not in line and "Traceback" in line and "boom\\u{a}second line" in line


def test_page_log_buffer_escapes_peer_text():
    buffer = LogBuffer()
    record = logging.LogRecord(
        "ssp.client", logging.WARNING, __file__, 1, "%s", (HOSTILE_TEXT,), None
    )
    buffer.emit(record)
    (line,) = buffer.lines("client")
    assert not CONTROL.search(line), repr(line)
    assert "\\u{a} forged authenticated" in line


def shown_markdown(at: AppTest) -> list[str]:
    """The Markdown sources of everything the page shows as Markdown (AppTest gives sources)."""
    parts = [e.value for e in (*at.markdown, *at.caption)]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    parts += [str(getattr(e.proto, "text", "")) for e in at.get("progress")]
    return [str(p) for p in parts]


def test_page_shows_a_hostile_servers_error_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    close_shared_controller()
    try:
        with error_server() as port:
            at = AppTest.from_file(str(APP), default_timeout=30).run()
            at.sidebar.text_input(key="secret").input(SECRET)
            at.sidebar.text_input(key="host").input(HOST)
            at.sidebar.text_input(key="folder").input(str(tmp_path / "server"))
            at.run()
            at.number_input(key="client_port").set_value(port)
            at.text_input(key="client_folder").input(str(tmp_path / "client")).run()
            at.button(key="start_sync").click().run()
            deadline = time.monotonic() + HANG_S
            while not at.error:
                assert time.monotonic() < deadline, "the sync never failed"
                time.sleep(0.1)
                at.run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert any("pwned" in e for e in errors), errors
        for source in shown_markdown(at):
            # No unescaped link or image syntax, no raw escape sequence, anywhere on the page.
            assert not re.search(r"(?<!\\)!?(?<!\\)\[[^\]]*(?<!\\)\]\(", source), source
            assert "http://x" not in source, source
            assert not CONTROL.search(source.replace("\n", "")), repr(source)  # ours: lists
    finally:
        close_shared_controller()


def test_api_reports_a_hostile_servers_error_as_one_printable_line(tmp_path: Path):
    """``SSPClient.last_error`` and the status callback's details, which scripts print and log,
    carry the server's words escaped."""
    with error_server() as port:
        result = pull(tmp_path / "client", port)
    assert not result.ok
    shown = [result.client.last_error or "", *(details for _, details in result.statuses)]
    assert any("pwned" in text for text in shown), shown
    for text in shown:
        assert not CONTROL.search(text), repr(text)
