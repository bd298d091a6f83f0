"""Text ralph writes out (files, terminals, logs) that came from users' data.

A lone surrogate (YAML's or JSON's "\\ud800" escape reads as one) is text Python holds but no
UTF-8 file or terminal takes; it is written as that same backslash escape. Text printed for
people also has its control characters escaped: an item id or an API's message must not move a
terminal's cursor, retitle its window or start a line that passes for another.
"""

from __future__ import annotations

import re

# C0 and C1 controls (a terminal's escape sequences among them), DEL, and Unicode's line and
# paragraph separators
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def writable(text: str) -> str:
    """`text` with each lone surrogate as its escape, `\\ud800`; the rest as it is."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def printable(text: str) -> str:
    """`text` as `writable`, with each control character (a line break too) as its escape."""
    return writable(_UNPRINTABLE.sub(_escape, text))


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
