"""Mapping a data path (`('agents', 'writer', 'timeout')`) back to a line and column."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ralph.errors import Problem
from ralph.text import writable

Path = Sequence[str | int]


def dotted(path: Path) -> str:
    """`('tasks', 0, 'agent')` → `tasks[0].agent`, the way users name a key in a recipe; a
    key that is a pasted secret is masked, as in every message."""
    from ralph.secrets import redact

    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    shown = redact(out)
    # a key may hold a lone surrogate (YAML's "\ud800"), which no terminal or file takes
    return writable(shown)


def locate(tree: Any, path: Path, *, at_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the deepest node of `path` present in the ruamel tree.

    Containers are located at their key (`writer:`), scalars at their value; `at_key` forces
    the key, for findings about the key itself (an unknown key, a duplicate name).
    """
    position = _position(tree)
    node = tree
    for index, part in enumerate(path):
        child, found = _child(node, part, at_key=at_key or index < len(path) - 1)
        if found is None:
            break
        position = found
        if child is None:
            break
        node = child
    line, col = position
    return line + 1, col + 1


def _child(node: Any, part: str | int, *, at_key: bool) -> tuple[Any, tuple[int, int] | None]:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None, None
    try:
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line, col = lc.item(part)
            return node[part], (line, col)
        if isinstance(node, dict) and part in node:
            if part not in lc.data:
                return _merged_child(node, part, at_key=at_key)
            value = node[part]
            # an empty value (`model:`) has no text of its own: ruamel places it at the next
            # token, a line or more further (past the end of the file, for the last key)
            use_key = at_key or isinstance(value, dict | list) or value is None
            line, col = lc.key(part) if use_key else lc.value(part)
            return value, (line, col)
    except (KeyError, TypeError, AttributeError):
        return None, None
    return None, None


def _merged_child(
    node: Any, part: str | int, *, at_key: bool
) -> tuple[Any, tuple[int, int] | None]:
    """A key merged in by `<<: *base` is located where the anchored mapping writes it."""
    from ruamel.yaml.comments import merge_attrib

    # the first mapping that holds the key gives its value, as in ruamel's own lookup
    for source in getattr(node, merge_attrib, ()):
        if isinstance(source, dict) and part in source:
            return _child(source, part, at_key=at_key)
    return None, None


def _position(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return (0, 0)
    return (lc.line, lc.col)


class Locator:
    """Turns findings about a recipe's data into Problems with file, line and column.

    With a profile in force, a key the profile sets is located in the profile, where the
    user wrote the value that is in effect.
    """

    def __init__(self, display: str, tree: Any, text: str, profile: str | None = None) -> None:
        self.display = display
        self.tree = tree
        self.lines = text.splitlines()
        self.profile = profile

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> Problem:
        from ralph.secrets import redact

        line, col = locate(self.tree, self._source_path(path), at_key=at_key)
        return Problem(self.display, line, col, dotted(path), redact(message))

    def template_problem(self, path: Path, template_line: int, message: str) -> Problem:
        """A problem at line `template_line` of the template stored at `path`.

        Lines map one to one only in a literal block (`|`); a folded block (`>`) joins lines,
        and a quoted or plain value is reported where it starts (its newlines are escapes).
        """
        from ralph.secrets import redact

        source = self._source_path(path)
        line, col = locate(self.tree, source)
        style = _block_style(self.tree, source)
        if style is not None and line < len(self.lines):
            index = _body_line(self.lines, line, template_line, folded=style == "folded")
            text = self.lines[index]
            line, col = index + 1, len(text) - len(text.lstrip()) + 1
        return Problem(self.display, line, col, dotted(path), redact(message))

    def _source_path(self, path: Path) -> Path:
        if self.profile is None or not path:
            return path
        overlay = _profile_path(self.tree, self.profile, path)
        if overlay is not None and _exists(self.tree, overlay):
            return overlay
        return path


def _profile_path(tree: Any, profile: str, path: Path) -> Path | None:
    head, *rest = path
    if head in ("vars", "agents", "limits"):
        return ("profiles", profile, *path)
    if head == "tasks" and rest and isinstance(rest[0], int):
        tasks = tree.get("tasks") if isinstance(tree, dict) else None
        if isinstance(tasks, list) and rest[0] < len(tasks) and isinstance(tasks[rest[0]], dict):
            return ("profiles", profile, "tasks", str(tasks[rest[0]].get("name")), *rest[1:])
    return None


_MISSING = object()


def _node_at(tree: Any, path: Path) -> Any:
    node = tree
    for part in path:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return _MISSING
        node = node[part]
    return node


def _exists(tree: Any, path: Path) -> bool:
    return _node_at(tree, path) is not _MISSING


def _block_style(tree: Any, path: Path) -> str | None:
    from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

    node = _node_at(tree, path)
    if isinstance(node, LiteralScalarString):
        return "literal"
    if isinstance(node, FoldedScalarString):
        return "folded"
    return None


def _explicit_indent(header: str) -> int | None:
    """The body's indentation a block header such as `prompt: >2` fixes, if it fixes one:
    then a more-indented first line does not set it."""
    match = re.search(r"[|>](?:[-+]?([1-9])|([1-9])[-+]?)\s*(?:#.*)?$", header)
    if match is None:
        return None
    key = len(header) - len(header.lstrip(" -"))  # the column of the mapping holding the key
    return key + int(match.group(1) or match.group(2))


def _body_line(lines: Sequence[str], first: int, template_line: int, *, folded: bool) -> int:
    """0-based index of the source line holding line `template_line` of a block scalar.

    `first` is the 0-based index of the block's first body line (the line after `|` or `>`).
    """
    if not folded:
        return min(first + template_line - 1, len(lines) - 1)
    indent = _explicit_indent(lines[first - 1]) if first > 0 else None
    current, pending, previous = 1, 0, ""
    index = first
    for index in range(first, len(lines)):
        text = lines[index]
        if not text.strip():
            pending += 1
            continue
        depth = len(text) - len(text.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            return index - pending - 1
        kind = "more" if depth > indent else "text"
        # folding joins two plain lines with a space; each empty line between them, and
        # every break next to a more-indented line, is a newline of the template
        if not previous:
            current = 1 + pending
        elif previous == "text" and kind == "text":
            current += pending
        else:
            current += pending + 1
        if current >= template_line:
            return index
        pending, previous = 0, kind
    return index
