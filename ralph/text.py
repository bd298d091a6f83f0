"""Text ralph writes out (files, terminals, logs) that came from users' data.

A lone surrogate (YAML's or JSON's "\\ud800" escape reads as one) is text Python holds but no
UTF-8 file or terminal takes; it is written as that same backslash escape.
"""

from __future__ import annotations


def writable(text: str) -> str:
    """`text` with each lone surrogate as its escape, `\\ud800`; the rest as it is."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()
