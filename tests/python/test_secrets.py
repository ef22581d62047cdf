"""The secret is the only thing between the network and the folder: a secret file others can
read is refused (as ssh refuses such a key), the default secret is refused beyond loopback, an
empty one anywhere, and the page warns about a short one."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ssp import ConfigError, SSPServer
from ssp.server import DEFAULT_SECRET, SHORT_SECRET_CHARS
from ssp.ui import close_shared_controller

from conftest import HOST, SECRET, one_error_line, run_client, server_command

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
HANG_S = 120


@pytest.mark.parametrize(
    "mode",
    [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o611, 0o777],
    ids=lambda mode: f"{mode:04o}",
)
def test_cli_refuses_a_secret_file_others_can_access(tmp_path: Path, mode: int):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(mode)
    extra = ("--secret-file", str(secret_file))
    done = run_client(tmp_path / "client", 1, secret=None, extra=extra)
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr, "ssp-client")
    assert str(secret_file) in line and f"chmod 600 {secret_file}" in line, line
    assert f"{mode:04o}" in line, line
    assert not (tmp_path / "client").exists(), "refused before anything else happens"


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=lambda mode: f"{mode:04o}")
def test_cli_accepts_a_secret_file_only_its_owner_can_read(tmp_path: Path, mode: int):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(mode)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind((HOST, 0))
        port = closed.getsockname()[1]
    done = run_client(
        tmp_path / "client", port, secret=None, extra=("--secret-file", str(secret_file))
    )
    line = one_error_line(done.stderr, "ssp-client")
    assert "secret file" not in line, line  # it got as far as connecting


# The rule lives in the engine (`Server::bind` resolves the host and checks every address
# before it binds); these cases go through the Python API to it. Tests listen on loopback only,
# so the allowed cases are loopback ones and the refused ones never bind.
EXPOSURE_CASES = [
    # (secret, host, refused?)
    pytest.param(DEFAULT_SECRET, "localhost", False, id="default-on-localhost"),
    pytest.param(DEFAULT_SECRET, "127.0.0.1", False, id="default-on-127"),
    pytest.param(DEFAULT_SECRET, "0.0.0.0", True, id="default-on-any"),
    pytest.param(DEFAULT_SECRET, "192.0.2.5", True, id="default-on-lan"),
    pytest.param("", "127.0.0.1", True, id="empty-on-loopback"),
    pytest.param("", "0.0.0.0", True, id="empty-on-any"),
    pytest.param(SECRET, "127.0.0.1", False, id="real-secret-on-loopback"),
]


@pytest.mark.parametrize(("secret", "host", "refused"), EXPOSURE_CASES)
def test_the_engine_refuses_a_guessable_secret_beyond_loopback(
    tmp_path: Path, secret: str, host: str, refused: bool
):
    server = SSPServer(secret, tmp_path / "served", host=host, port=0)

    async def bind() -> None:
        try:
            await server.bind()
        finally:
            await server.stop()

    if refused:
        with pytest.raises(ConfigError) as caught:
            asyncio.run(bind())
        text = str(caught.value)
        assert "--secret-file" in text and "SSP_SECRET" in text, text
        assert "\n" not in text, "one line"
    else:
        asyncio.run(bind())
    assert not server.running


def test_cli_server_refuses_the_default_secret_beyond_loopback(tmp_path: Path):
    done = subprocess.run(
        [*server_command("console"), DEFAULT_SECRET, str(tmp_path / "served"), "0.0.0.0", "0"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_S,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    line = one_error_line(done.stderr, "ssp-server")
    assert "default secret" in line and "--secret-file" in line, line
    assert done.stdout == "", "it never said it was serving"


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    close_shared_controller()
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    yield at
    close_shared_controller()


def sidebar_warnings(at: AppTest) -> list[str]:
    return [str(w.value) for w in at.sidebar.warning]


@pytest.mark.parametrize(
    ("secret", "warned"),
    [
        pytest.param("x" * (SHORT_SECRET_CHARS - 1), True, id="one-short"),
        pytest.param("hunter2", True, id="short"),
        pytest.param("x" * SHORT_SECRET_CHARS, False, id="long-enough"),
        pytest.param(SECRET, False, id="passphrase"),
    ],
)
def test_page_warns_about_a_short_secret(page: AppTest, secret: str, warned: bool):
    page.sidebar.text_input(key="secret").input(secret).run()
    short = [w for w in sidebar_warnings(page) if "characters" in w]
    assert bool(short) is warned, sidebar_warnings(page)


def test_page_shows_the_refusal_of_the_default_secret_beyond_loopback(
    page: AppTest, tmp_path: Path
):
    page.sidebar.text_input(key="host").input("0.0.0.0")
    page.sidebar.text_input(key="folder").input(str(tmp_path / "served"))
    page.sidebar.number_input(key="port").set_value(1)  # never bound: refused before binding
    page.run()
    page.button(key="start_server").click().run()
    errors = [str(e.value) for e in page.error]
    assert any("default secret" in e for e in errors), errors
    assert any("Stopped" in str(m.value) for m in page.markdown)
    assert not page.exception
