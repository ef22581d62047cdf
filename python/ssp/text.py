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

__all__ = [
    "LOG_LINE_MAX_CHARS",
    "PRINTABLE_MAX_CHARS",
    "PrintableFormatter",
    "markdown_literal",
    "printable",
]

PRINTABLE_MAX_CHARS = 512
"""The most characters :func:`printable` keeps (an ellipsis marks a cut)."""

# Characters that change how text is displayed rather than being displayed: the bidi controls
# reorder what follows them ("Trojan Source"), the line and paragraph separators break lines.
_INVISIBLE = frozenset(
    [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF]
)

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one
# is always literal: that covers links, images, emphasis, code, HTML, headings and lists, and
# Streamlit's own ``:red[...]``, ``:material/icon:`` and ``$math$`` directives. Letters and
# digits are left alone so the text stays readable.
_MARKDOWN_SPECIAL = frozenset(string.punctuation)


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: object, max_chars: int = PRINTABLE_MAX_CHARS) -> str:
    """``text`` as one line of visible characters, at most about ``max_chars`` long.

    C0 and C1 control characters (ESC, BEL, newlines, ...), DEL and the bidi and line-separator
    controls become visible escapes (``\\x1b``, ``\\n``, ``\\u202e``); the result is cut to
    ``max_chars`` characters with a trailing ``…``. Everything else is kept as it is.
    """
    raw = str(text)
    out: list[str] = []
    length = 0
    for char in raw:
        code = ord(char)
        piece = (
            _escape(char)
            if code < 0x20 or 0x7F <= code <= 0x9F or code in _INVISIBLE
            else char
        )
        if length + len(piece) > max_chars:
            out.append("…")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


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

    A newline inside a message (from a peer, or a traceback) is shown as ``\\n``, so no message
    can forge a log line of its own or send escape sequences to the terminal.
    """

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), LOG_LINE_MAX_CHARS)
