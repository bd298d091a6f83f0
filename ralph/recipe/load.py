"""Reading a recipe file into a position-aware tree and a plain copy, safely.

Untrusted recipes are bounded before anything expensive happens: a size cap before parsing,
and a node and depth budget while copying, which is where a YAML alias bomb would expand.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralph.errors import Problem, RecipeError
from ralph.secrets import redact
from ralph.units import LONG_NUMBER, MAX_INT_DIGITS, too_many_digits

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 64


@dataclass(frozen=True)
class Source:
    """A loaded recipe: the text, the ruamel tree (for positions) and plain data (for checks)."""

    path: Path
    display: str
    text: str
    tree: Any
    data: dict[str, Any]


class _CopyRefused(Exception):
    """A value the copy refuses: located at `path`, or at `at` (0-based line and column) for a
    key the path cannot name."""

    def __init__(
        self, message: str, path: tuple[str | int, ...], at: tuple[int, int] | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.at = at


class _Refused(Exception):
    """A value the YAML reader refuses while it builds the tree, at its 0-based mark."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line, self.col = mark.line + 1, mark.column + 1


def load_source(path: Path, display: str | None = None) -> Source:
    """Load one recipe file; raise RecipeError with a located problem when it cannot be read."""
    shown = display if display is not None else str(path)
    raw = _read_bytes(path, shown)
    text = _decode(raw, shown)
    tree = _parse(text, shown)
    if tree is None:
        raise _error(
            shown,
            1,
            1,
            "",
            "recipe is empty (expected a mapping with version, name, agents and tasks)",
        )
    if not isinstance(tree, dict):
        kind = _kind(tree)
        raise _error(shown, 1, 1, "", f"expected a mapping at the top of the recipe, got {kind}")
    try:
        data = _Copier().plain(tree, (), 0)
    except _CopyRefused as exc:
        from ralph.recipe.positions import dotted, locate

        line, col = locate(tree, exc.path) if exc.at is None else (exc.at[0] + 1, exc.at[1] + 1)
        raise _error(shown, line, col, dotted(exc.path), str(exc)) from None
    return Source(path=path, display=shown, text=text, tree=tree, data=data)


def read_capped(path: Path, limit: int) -> bytes:
    """The first `limit + 1` bytes of `path` at most: more than `limit` means too big.

    Read, not sized with stat: a pipe, /dev/stdin or a device reports no size, and /dev/zero
    never ends. A FIFO is opened without waiting for a writer, so one nobody writes to reads
    as empty instead of hanging; once open, reads wait as usual (a slow stdin is fine).
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX only; Windows has no FIFOs to wait on
    fd = os.open(path, os.O_RDONLY | nonblocking)
    with os.fdopen(fd, "rb") as handle:  # owns fd from here on
        if nonblocking:
            os.set_blocking(fd, True)
        return handle.read(limit + 1)


def top_level(raw: bytes) -> dict[str, Any] | None:
    """The top-level mapping of a YAML document, read within the recipe limits (empty when the
    document is not a mapping), or None when it cannot be read."""
    try:
        tree = _parse(_decode(raw, ""), "")
    except RecipeError:
        return None
    return {str(k): v for k, v in tree.items()} if isinstance(tree, dict) else {}


def _read_bytes(path: Path, shown: str) -> bytes:
    try:
        raw = read_capped(path, MAX_BYTES)
        if len(raw) > MAX_BYTES:
            raise _error(
                shown,
                1,
                1,
                "",
                f"recipe is {_size(path)}; recipes are limited to "
                f"{MAX_BYTES // 1_000_000} MB (keep large data in a for_each file)",
            )
        return raw
    except OSError as exc:
        raise _error(shown, 1, 1, "", f"cannot read recipe: {exc.strerror or exc}") from None


def _size(path: Path) -> str:
    info = path.stat()
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_BYTES:
        return f"{info.st_size / 1e6:.1f} MB"
    return f"over {MAX_BYTES // 1_000_000} MB"  # a pipe or device: its size is unknown


def _decode(raw: bytes, shown: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _error(shown, 1, 1, "", "file is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in raw:
        line, col = _byte_position(raw, raw.index(b"\x00"))
        raise _error(shown, line, col, "", "file is binary (NUL byte), not a YAML recipe")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(raw, exc.start)
        raise _error(
            shown,
            line,
            col,
            "",
            f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
        ) from None


def _byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def _parse(text: str, shown: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    yaml = YAML(typ="rt")
    yaml.Constructor = _constructor()
    # the composer stops here, before deep flow nesting gets slow (newer ruamel; the copy
    # below enforces the same limit with older ones)
    yaml.max_depth = MAX_DEPTH + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reused anchor is legal YAML, not worth a warning
            return yaml.load(text)
    except _Refused as exc:
        raise _error(shown, exc.line, exc.col, "", str(exc)) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise _error(shown, line, col, "", _syntax_message(exc)) from None
    except ReaderError as exc:
        line, col = _char_position(text, exc.position)
        raise _error(
            shown, line, col, "", f"character U+{exc.character:04X} is not allowed in YAML"
        ) from None
    except RecursionError:
        raise _error(
            shown, 1, 1, "", f"recipe is nested more than {MAX_DEPTH} levels deep"
        ) from None
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        # ruamel's constructors fail this way on a tag that does not fit its value (`!!set x`,
        # `!!int abc`) or a key it cannot hash (`? {a: {b: c}}`); recipes need neither
        line, col, message = _construct_failure(text)
        raise _error(shown, line, col, "", message) from None
    except YAMLError as exc:
        raise _error(shown, 1, 1, "", f"YAML error: {str(exc).splitlines()[0]}") from None


@functools.cache
def _constructor() -> type[Any]:
    """ruamel's round-trip constructor, refusing what a recipe cannot hold as it reads it."""
    from ruamel.yaml.constructor import RoundTripConstructor

    class Constructor(RoundTripConstructor):
        def construct_yaml_int(self, node: Any) -> Any:
            try:
                value = super().construct_yaml_int(node)
            except ValueError:
                if sum(c.isdigit() for c in str(node.value)) <= MAX_INT_DIGITS:
                    raise  # not the digit limit: `!!int abc`, explained by _construct_failure
                value = None
            if value is None or too_many_digits(value):
                raise _Refused(node.start_mark, LONG_NUMBER)
            return value

        def check_mapping_key(
            self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
        ) -> bool:
            # 1, 1.0 and true are distinct YAML keys but one Python dict key: ruamel would call
            # them duplicates, and the tree cannot hold both
            if isinstance(key, int | float) and key in mapping:
                first = next(k for k in mapping if k == key)
                shown = _scalar_key(first, ())
                if shown != _scalar_key(key, ()):
                    mark = _key_mark(mapping, first)
                    where = f" (line {mark[0] + 1}, column {mark[1] + 1})" if mark else ""
                    raise _Refused(
                        key_node.start_mark,
                        f"key {key_node.value} clashes with key {shown}{where}: YAML keeps "
                        "them apart, ralph cannot; quote keys that are meant as text",
                    )
            return bool(super().check_mapping_key(node, key_node, mapping, key, value))

    Constructor.add_constructor("tag:yaml.org,2002:int", Constructor.construct_yaml_int)
    return Constructor


def _construct_failure(text: str) -> tuple[int, int, str]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.tokens import TagToken

    try:
        for token in YAML(typ="rt").scan(text):
            if isinstance(token, TagToken):
                tag = "".join(part or "" for part in token.value)
                mark = token.start_mark
                return (
                    mark.line + 1,
                    mark.column + 1,
                    f"YAML error: cannot read the value tagged '{tag}' (recipes need no tags)",
                )
    except YAMLError:
        pass
    return 1, 1, "YAML error: mapping keys must be plain text, not mappings or lists"


def _syntax_message(exc: Any) -> str:
    problem = str(exc.problem or "invalid YAML").split("\n")[0]
    kind = type(exc).__name__
    if kind == "MaxDepthExceededError":
        return f"recipe is nested more than {MAX_DEPTH} levels deep"
    if kind == "DuplicateKeyError":
        # ruamel's message quotes both values, which may be secrets: name only the key
        key = re.match(r'found duplicate key "(.*)" with value', problem)
        name = key.group(1) if key else "?"
        return f"duplicate key '{name}' (a key may appear only once in a mapping)"
    if problem == "but found another document":
        return "YAML syntax error: found a second document ('---'); a recipe is one YAML document"
    context, mark, at = exc.context or "", exc.context_mark, exc.problem_mark
    if context.startswith("while") and mark is not None and at is not None and mark.line != at.line:
        # "while parsing a flow mapping" → "in the flow mapping that starts at ..."
        where = re.sub(r"^while \w+ an? ", "in the ", context)
        problem += f" ({where} that starts at line {mark.line + 1}, column {mark.column + 1})"
    elif context and not context.startswith("while"):
        problem = f"{context}: {problem}"
    return f"YAML syntax error: {problem}{_hint(problem)}"


def _hint(problem: str) -> str:
    if "'\\t'" in problem:
        return "; indent with spaces, not tabs"
    if "found character '%'" in problem:
        return '; quote a value that starts with a template tag, e.g. "{% if x %}...{% endif %}"'
    if "cannot start any token" in problem:
        return "; put the value in quotes"
    if "expected <block end>" in problem:
        return "; check the indentation"
    return ""


def _char_position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


class _Copier:
    """Copies the ruamel tree to plain dict/list/scalars, spending a node budget as it goes."""

    def __init__(self) -> None:
        self.nodes = 0
        self.open: set[int] = set()

    def plain(self, node: Any, path: tuple[str | int, ...], depth: int) -> Any:
        self.nodes += 1
        # reported at the top-level entry that grew too big: deeper paths only add noise
        if self.nodes > MAX_NODES:
            raise _CopyRefused(
                f"recipe expands to more than {MAX_NODES} values (a YAML alias bomb?)", path[:2]
            )
        if depth > MAX_DEPTH:
            raise _CopyRefused(f"recipe is nested more than {MAX_DEPTH} levels deep", path[:2])
        if isinstance(node, dict | list):
            if id(node) in self.open:
                raise _CopyRefused("recipe refers to itself through a YAML alias", path)
            self.open.add(id(node))
            try:
                return self._container(node, path, depth)
            finally:
                self.open.discard(id(node))
        return _scalar(node)

    def _container(self, node: Any, path: tuple[str | int, ...], depth: int) -> Any:
        if isinstance(node, list):
            return [self.plain(v, (*path, i), depth + 1) for i, v in enumerate(node)]
        out: dict[str, Any] = {}
        names_vars = path == ("vars",) or (len(path) == 3 and path[::2] == ("profiles", "vars"))
        for key, value in node.items():
            name = key if isinstance(key, str) else _scalar_key(key, path)
            if names_vars and not isinstance(key, str):
                raise _CopyRefused(
                    f"a var name must be text; quote {name} to use it as one",
                    (*path, name),
                    _key_mark(node, key),
                )
            if name in out:
                # '1' and 1 are distinct YAML keys that both become '1' in the recipe
                raise _CopyRefused(
                    f"duplicate key '{name}' (a key may appear only once in a mapping)",
                    (*path, name),
                    _key_mark(node, key),
                )
            out[name] = self.plain(value, (*path, name), depth + 1)
        return out


def _key_mark(node: Any, key: Any) -> tuple[int, int] | None:
    try:
        line, col = node.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        return None  # merged in by `<<`: located by its path instead
    return int(line), int(col)


def _scalar_key(key: Any, path: tuple[str | int, ...]) -> str:
    if isinstance(key, Mapping):
        raise _CopyRefused(
            "YAML reads an unquoted '{{ ... }}' as a mapping; "
            'put the template in quotes, e.g. "{{ item.body }}"',
            path,
        )
    plain = _scalar(key) if isinstance(key, int | float | dt.date) or key is None else key
    if plain is None or isinstance(plain, bool):
        return "null" if plain is None else str(plain).lower()
    if isinstance(plain, int | float | str):
        return str(plain)
    raise _CopyRefused(f"mapping keys must be plain text, got {_kind(key)}", path)


def _scalar(value: Any) -> Any:
    # ruamel's round-trip scalars subclass the builtins; plain copies keep jsonschema's
    # type checks exact (a ScalarBoolean is an int, not a bool).
    if value is None or isinstance(value, bool):
        return value
    if type(value).__name__ == "ScalarBoolean":
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _error(file: str, line: int, col: int, path: str, message: str) -> RecipeError:
    problem = Problem(file=file, line=line, column=col, path=path, message=redact(message))
    return RecipeError([problem])
