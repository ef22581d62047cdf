"""Text from a peer or the engine made safe to show people: one line, no control characters.

A server can answer HELLO with an ERROR frame before any secret is checked, so its message is
untrusted text. Printed raw, escape sequences in it retitle the terminal or paint a fake
"synced" line, and a newline in it forges a log line of its own. :func:`printable` is the one
function the CLI, the log formatters and the web page pass such text through; the page adds
:func:`markdown_literal` where Streamlit would otherwise read it as Markdown.

The engine sanitises peer text at its own boundary too; doing it again here is cheap and keeps
the terminal and the page safe whatever string reaches them (an ``OSError`` naming a file, a
message from an older engine).
"""

from __future__ import annotations

import logging
import string

from ssp import _native

__all__ = [
    "LOG_LINE_MAX_CHARS",
    "PRINTABLE_MAX_CHARS",
    "PrintableFormatter",
    "markdown_literal",
    "printable",
]

PRINTABLE_MAX_CHARS: int = _native.MAX_PEER_TEXT_CHARS
"""The most characters :func:`printable` keeps (an ellipsis marks a cut)."""

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one
# is always literal: that covers links, images, emphasis, code, HTML, headings and lists, and
# Streamlit's own ``:red[...]``, ``:material/icon:`` and ``$math$`` directives. Letters and
# digits are left alone so the text stays readable.
_MARKDOWN_SPECIAL = frozenset(string.punctuation)


def printable(text: object, max_chars: int = PRINTABLE_MAX_CHARS) -> str:
    """``text`` as one line of visible characters, at most ``max_chars`` long.

    The engine's rule (``_native.printable``), so the terminal, the logs and the page escape
    exactly what the engine escapes: C0 and C1 control characters (ESC, BEL, newlines, ...), DEL
    and the bidi and line-separator controls become visible escapes (``\\u{1b}``, ``\\u{a}``,
    ``\\u{202e}``); a longer result is cut with a trailing ``…``.
    """
    return _native.printable(str(text), max_chars)


def markdown_literal(text: object, max_chars: int = PRINTABLE_MAX_CHARS) -> str:
    """:func:`printable` ``text``, escaped so that Markdown (and Streamlit's directives) shows
    it character for character: no link, image, emphasis, HTML or colour comes through."""
    return "".join(
        "\\" + char if char in _MARKDOWN_SPECIAL else char for char in printable(text, max_chars)
    )


LOG_LINE_MAX_CHARS = 4096
"""The most characters :class:`PrintableFormatter` keeps of one log record."""


class PrintableFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every record is one :func:`printable` line.

    A newline inside a message (from a peer, or a traceback) is shown as ``\\u{a}``, so no message
    can forge a log line of its own or send escape sequences to the terminal.
    """

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), LOG_LINE_MAX_CHARS)
