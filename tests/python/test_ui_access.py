"""The page answers only to its owner's names (DNS rebinding): the Host check in
``ssp.ui.access``, Streamlit refusing the WebSocket (``server.allowedHosts`` in the repository's
``.streamlit/config.toml``), and the page's own check behind it, over a real ``streamlit run``
spoken to as a browser would (WebSocket, Streamlit's protobuf messages)."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.sync.client import ClientConnection, connect

from ssp.ui.access import TOKEN_ENV, TOKEN_PARAM, host_refusal, token_refusal

from conftest import HOST, REPO, free_port, stop_process, streamlit_healthy, streamlit_server

# Bounds a hang, never a speed.
HANG_S = 60
ATTACKER = "attacker.example"

HOST_CASES = [
    # (Host, Origin, server.allowedHosts, allowed?)
    pytest.param("localhost:8501", "http://localhost:8501", (), True, id="localhost"),
    pytest.param("LOCALHOST.:8501", None, (), True, id="localhost-fqdn-case"),
    pytest.param("127.0.0.1:8501", "http://127.0.0.1:8501", (), True, id="ipv4-loopback"),
    pytest.param("127.1.2.3", None, (), True, id="ipv4-loopback-net"),
    pytest.param("[::1]:8501", "http://[::1]:8501", (), True, id="ipv6-loopback"),
    pytest.param("attacker.example:8501", "http://attacker.example:8501", (), False, id="rebind"),
    pytest.param("attacker.example:8501", None, (), False, id="rebind-no-origin"),
    pytest.param("localhost:8501", "http://attacker.example", (), False, id="foreign-origin"),
    pytest.param("localhost.attacker.example", None, (), False, id="suffix-trick"),
    pytest.param("localhost@attacker.example", None, (), False, id="userinfo-trick"),
    pytest.param("localhost:99999", None, (), False, id="bad-port"),
    pytest.param("localhost/x", None, (), False, id="path"),
    pytest.param("", None, (), False, id="empty-host"),
    pytest.param(None, "http://localhost", (), False, id="missing-host"),
    pytest.param("0.0.0.0:8501", None, (), False, id="any-address"),
    pytest.param("192.168.1.5:8501", None, (), False, id="lan-address"),
    pytest.param("attacker.example", None, ("*",), False, id="star-not-honoured"),
    pytest.param("nas.lan:8501", "http://nas.lan:8501", ("nas.lan",), True, id="configured"),
    pytest.param("a.b.lan", None, ("*.b.lan",), True, id="configured-wildcard"),
    pytest.param("b.lan", None, ("*.b.lan",), False, id="wildcard-not-apex"),
    pytest.param("[::1]", None, ("localhost", "127.0.0.1", "::1"), True, id="repo-config"),
]


@pytest.mark.parametrize(("host", "origin", "configured", "allowed"), HOST_CASES)
def test_host_refusal_table(
    host: str | None, origin: str | None, configured: Sequence[str], allowed: bool
):
    headers = {"Accept": "*/*"}
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    refusal = host_refusal(headers, configured)
    assert (refusal is None) is allowed, refusal
    if refusal:
        assert "localhost" in refusal and "server.allowedHosts" in refusal


def test_no_headers_means_no_browser_and_is_allowed():
    """Streamlit's AppTest runs the page without a client: there is no request to check."""
    assert host_refusal({}) is None


# -- against `streamlit run` ---------------------------------------------------------------


def upgrade_status(port: int, host: str, origin: str | None) -> str:
    """The status line Streamlit answers a WebSocket upgrade with ``Host``/``Origin``."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: streamlit\r\n"
    )
    if origin:
        request += f"Origin: {origin}\r\n"
    with socket.create_connection((HOST, port), timeout=HANG_S) as sock:
        sock.sendall((request + "\r\n").encode())
        reply = b""
        while b"\r\n" not in reply:
            piece = sock.recv(1024)
            if not piece:
                break
            reply += piece
    return reply.split(b"\r\n", 1)[0].decode()


def test_streamlit_refuses_the_websocket_for_another_host(tmp_path: Path):
    with streamlit_server(tmp_path) as (port, _log):
        for name in ("localhost", "127.0.0.1", "[::1]"):
            status = upgrade_status(port, f"{name}:{port}", f"http://{name}:{port}")
            assert " 101 " in status, (name, status)
        for host, origin in [
            (f"{ATTACKER}:{port}", f"http://{ATTACKER}:{port}"),  # a rebound name
            (f"{ATTACKER}:{port}", None),
            (f"localhost:{port}", f"http://{ATTACKER}:{port}"),  # a foreign page
        ]:
            status = upgrade_status(port, host, origin)
            assert " 403 " in status, (host, origin, status)


def test_the_config_applies_when_run_from_another_folder(tmp_path: Path):
    """Streamlit reads the ``.streamlit/config.toml`` next to the script, wherever it runs."""
    with tempfile.TemporaryDirectory() as elsewhere, streamlit_server(
        tmp_path, cwd=Path(elsewhere)
    ) as (port, _log):
        assert " 403 " in upgrade_status(port, f"{ATTACKER}:{port}", None)
        assert " 101 " in upgrade_status(port, f"localhost:{port}", None)


@contextmanager
def page_session(port: int, name: str) -> Iterator[ClientConnection]:
    """A WebSocket to the page as a browser at ``http://NAME:PORT`` opens it (the name maps to
    127.0.0.1, as after DNS rebinding)."""
    sock = socket.create_connection((HOST, port), timeout=HANG_S)
    with connect(
        f"ws://{name}:{port}/_stcore/stream",
        sock=sock,
        origin=f"http://{name}:{port}",  # type: ignore[arg-type]
        subprotocols=["streamlit"],  # type: ignore[list-item]
        open_timeout=HANG_S,
    ) as ws:
        yield ws


def run_page(
    ws: ClientConnection,
    widgets: Sequence[WidgetState] = (),
    fragment_id: str = "",
    query: str = "",
) -> list[ForwardMsg]:
    """Ask for a script run (with ``widgets`` as the browser's widget states and ``query`` as
    its address's query string); return every message up to the run's end."""
    state = ClientState(
        query_string=query,
        page_script_hash="",
        widget_states=WidgetStates(widgets=list(widgets)),
        fragment_id=fragment_id,
    )
    ws.send(BackMsg(rerun_script=state).SerializeToString())
    messages = []
    deadline = time.monotonic() + HANG_S
    while True:
        assert time.monotonic() < deadline, "the script run never finished"
        message = ForwardMsg()
        message.ParseFromString(ws.recv(timeout=HANG_S))
        messages.append(message)
        if message.WhichOneof("type") == "script_finished":
            return messages


def elements(messages: list[ForwardMsg]) -> list[tuple[str, str, str]]:
    """``(element type, widget id, text)`` of every element the run drew."""
    found = []
    for message in messages:
        if message.WhichOneof("type") != "delta":
            continue
        if message.delta.WhichOneof("type") == "add_block":
            found.append(("block", "", message.delta.fragment_id))
        if message.delta.WhichOneof("type") != "new_element":
            continue
        element = message.delta.new_element
        kind = element.WhichOneof("type") or ""
        inner = getattr(element, kind)
        text = str(getattr(inner, "label", "") or getattr(inner, "body", ""))
        found.append((kind, str(getattr(inner, "id", "")), text))
    return found


def test_the_page_shows_another_host_only_a_refusal_and_obeys_no_control(tmp_path: Path):
    """Streamlit's allow-list widened to ``*``: the page's own check still holds. The rebound
    session gets one text line; a click on Start Server and a fragment rerun, with the ids an
    honest session sees, run nothing; the honest session still sees the server stopped."""
    with streamlit_server(tmp_path, "--server.allowedHosts", "*") as (port, log):
        with page_session(port, "localhost") as honest:
            shown = elements(run_page(honest))
        start = [wid for kind, wid, text in shown if kind == "button" and text == "Start Server"]
        assert start, shown
        fragments = {text for kind, _, text in shown if kind == "block" and text}
        assert fragments, "the page has fragments (the panels)"

        with page_session(port, ATTACKER) as rebound:
            first = elements(run_page(rebound))
            click = WidgetState(id=start[0], trigger_value=True)
            clicked = elements(run_page(rebound, [click]))
            # A fragment rerun of a panel this session never drew: Streamlit discards it
            # (it says so in its log) and draws nothing; the next full run is the refusal.
            for fragment in sorted(fragments):
                request = ClientState(fragment_id=fragment, widget_states=WidgetStates())
                rebound.send(BackMsg(rerun_script=request).SerializeToString())
            after_fragments = elements(run_page(rebound, [click]))
            deadline = time.monotonic() + HANG_S
            while not all(f"id {f} does not exist" in log.read_text() for f in fragments):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

        for drawn in (first, clicked, after_fragments):
            assert [kind for kind, _, _ in drawn] == ["text"], drawn
            assert "answers only at http://localhost" in drawn[0][2], drawn

        with page_session(port, "localhost") as honest:
            after = elements(run_page(honest))
        statuses = [text for kind, _, text in after if kind == "markdown" and "Status" in text]
        assert any("Stopped" in text for text in statuses), statuses


# -- the access token per launch -----------------------------------------------------------

TOKEN_CASES = [
    # (expected, offered, allowed?)
    pytest.param(None, None, True, id="no-token-configured"),
    pytest.param("", "anything", True, id="empty-means-none"),
    pytest.param("s3cr3t-token", "s3cr3t-token", True, id="right"),
    pytest.param("s3cr3t-token", None, False, id="missing"),
    pytest.param("s3cr3t-token", "", False, id="empty"),
    pytest.param("s3cr3t-token", "s3cr3t-tokeN", False, id="wrong"),
    pytest.param("s3cr3t-token", "s3cr3t-token-and-more", False, id="longer"),
    pytest.param("s3cr3t-token", "ünïcödé", False, id="non-ascii"),
]


@pytest.mark.parametrize(("expected", "offered", "allowed"), TOKEN_CASES)
def test_token_refusal_table(expected: str | None, offered: str | None, allowed: bool):
    refusal = token_refusal(expected, offered)
    assert (refusal is None) is allowed, refusal
    if refusal:
        assert "python -m ssp.ui" in refusal
        assert not offered or offered not in refusal  # a guess is not echoed back


def page_kinds(port: int, query: str = "") -> list[str]:
    with page_session(port, "localhost") as ws:
        return [kind for kind, _, _ in elements(run_page(ws, query=query))]


def test_with_a_token_the_page_needs_it_in_its_address(tmp_path: Path):
    token = "a-token-for-this-test-only"
    with streamlit_server(tmp_path, env={TOKEN_ENV: token}) as (port, _log):
        assert page_kinds(port) == ["text"]
        assert page_kinds(port, f"{TOKEN_PARAM}=wrong") == ["text"]
        assert page_kinds(port, f"{TOKEN_PARAM}={token}x") == ["text"]
        full = page_kinds(port, f"{TOKEN_PARAM}={token}")
        assert "button" in full and "text_input" in full, full


def test_the_launcher_prints_the_one_link_that_opens_the_page(tmp_path: Path):
    """``python -m ssp.ui`` (run from the repository) starts the page with a fresh token and
    prints ``http://localhost:PORT/?token=...``; that link opens the page, the bare one not."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssp.ui",
            "--server.port",
            str(port),
            "--server.address",
            HOST,
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env={**os.environ, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(rf"ssp-ui: open http://localhost:{port}/\?token=([\w-]+)\n", line)
        assert match, line
        assert match[1] not in " ".join(proc.args)  # never on the command line
        deadline = time.monotonic() + HANG_S
        while not streamlit_healthy(f"http://{HOST}:{port}"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        assert page_kinds(port) == ["text"]
        assert "button" in page_kinds(port, f"token={match[1]}")
    finally:
        stop_process(proc, signal.SIGINT, HANG_S)
        if proc.stdout is not None:
            proc.stdout.close()
