"""Who may drive the page: the Host (and Origin) check against DNS rebinding.

A web site the user visits can make its own name resolve to 127.0.0.1 (DNS rebinding); the
browser then treats the page on ``http://attacker.example:8501`` as that site's own, sends
``Host: attacker.example:8501`` with a matching Origin, and Streamlit's same-origin rule lets its
WebSocket in. The name in Host is what gives it away: the page answers only to loopback names
and to the names the user listed deliberately in Streamlit's ``server.allowedHosts``.

A second, optional lock is an access token per launch, as Jupyter's: ``python -m ssp.ui``
starts the page with a random token in ``SSP_UI_TOKEN`` and prints the one link that opens it
(``http://localhost:8501/?token=...``); every run of the page then needs that token in its
address (:func:`token_refusal`), which keeps out other users of the same machine, who can reach
its loopback port too. ``streamlit run streamlit_app.py`` alone sets no token.

Two layers use the Host rule: ``.streamlit/config.toml`` sets ``server.allowedHosts`` so Streamlit
refuses such a WebSocket outright, and the page calls :func:`host_refusal` before it draws or
runs anything, which also holds when that file is not read or the option is widened to ``*``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = [
    "LOOPBACK_NAMES",
    "TOKEN_ENV",
    "TOKEN_PARAM",
    "host_refusal",
    "hostname_of",
    "token_refusal",
]

LOOPBACK_NAMES = ("localhost",)
"""Names always allowed besides loopback addresses (``127.0.0.0/8``, ``::1``)."""
TOKEN_ENV = "SSP_UI_TOKEN"
"""The environment variable that holds this launch's access token (unset: no token needed)."""
TOKEN_PARAM = "token"
"""The query parameter of the page's address that carries the access token."""


def hostname_of(authority: str) -> str | None:
    """The lower-case host name of a Host header (``name[:port]``, ``[v6][:port]``) or of an
    Origin (``scheme://name[:port]``); None when it does not parse as exactly that."""
    text = authority.strip()
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        _ = parts.port  # a port that is not a number in range: not a host
    except ValueError:
        return None
    if (
        not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    return parts.hostname.lower().rstrip(".")


def _is_loopback(hostname: str) -> bool:
    if hostname in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _is_configured(hostname: str, patterns: Iterable[str]) -> bool:
    """Whether ``hostname`` is one of the user's names (``name`` or ``*.domain``).

    A bare ``*`` (any host) is deliberately not honoured: it is exactly what an attacker's name
    would need.
    """
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern.startswith("*.") and len(pattern) > 2:
            if hostname.endswith(pattern[1:]):
                return True
        elif pattern and pattern != "*" and hostname == pattern.strip("[]"):
            return True
    return False


def host_refusal(headers: Mapping[str, str], allowed_hosts: Iterable[str] = ()) -> str | None:
    """Why the request with ``headers`` must not see the page, or None when it may.

    ``headers`` are those of the page's WebSocket request (``st.context.headers``); none at all
    means the page runs without a browser (Streamlit's ``AppTest``), which is allowed. Host must
    name this machine (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one of
    ``allowed_hosts``; an Origin, when sent, must too.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    allowed = list(allowed_hosts)
    host = lowered.get("host")
    checked = [("Host", host)]
    if lowered.get("origin") is not None:
        checked.append(("Origin", lowered["origin"]))
    for header, value in checked:
        name = hostname_of(value) if value else None
        if name is None or not (_is_loopback(name) or _is_configured(name, allowed)):
            return (
                f"This page answers only at http://localhost (its {header} was "
                f"{(value or 'missing')[:100]!r}). Open it at http://localhost:PORT on the "
                f"machine that runs it; to reach it by another name, add that name to "
                f"Streamlit's server.allowedHosts (see README, Web interface)."
            )
    return None


def token_refusal(expected: str | None, offered: str | None) -> str | None:
    """Why a run whose address carries ``offered`` as its token must not see the page, or None.

    No ``expected`` token (the page was started without one) lets every run in; otherwise the
    two must be equal (compared in constant time).
    """
    if not expected:
        return None
    if offered is not None and hmac.compare_digest(offered.encode(), expected.encode()):
        return None
    return (
        "This page needs its access link: open the http://localhost:PORT/?token=... address "
        "that `python -m ssp.ui` printed where the page was started."
    )
