"""`ralph validate` against a corpus of invalid recipes: every one is rejected with located,
readable messages (snapshotted), none with a traceback, none echoing a secret.

The committed corpus lives in corpus/invalid/; the big and binary cases are generated here.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from tests.conftest import ROOT, Result

CORPUS = Path(__file__).parent / "corpus" / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))
PROBLEM = re.compile(r"^(?P<file>[^:\n]+):(?P<line>[0-9]+):(?P<column>[0-9]+): \S")
SUMMARY = re.compile(r"^1 recipe checked, 1 invalid, (?P<errors>[0-9]+) errors?$")

Ralph = Callable[..., Result]


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def assert_rejected(result: Result, recipe: str, folder: Path) -> list[str]:
    """Exit 1, no traceback, every line `file:line:col: message` in the recipe or beside it."""
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert result.err == ""
    *problems, summary = result.out.splitlines()
    counted = SUMMARY.match(summary)
    assert counted, summary
    assert problems and int(counted["errors"]) == len(problems)
    for line in problems:
        located = PROBLEM.match(line)
        assert located, f"not located: {line!r}"
        file = located["file"]
        assert file == recipe or file.startswith(str(Path(recipe).parent) + "/"), line
        lines = (folder / Path(file).relative_to(Path(recipe).parent)).read_bytes().count(b"\n")
        # a parser may point just past the last line ("unexpected end of stream")
        assert 1 <= int(located["line"]) <= lines + 1, line
        assert int(located["column"]) >= 1, line
    return problems


def test_the_corpus_covers_at_least_thirty_recipes() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("recipe", CASES, ids=[p.stem for p in CASES])
@pytest.mark.usefixtures("at_root")
def test_invalid_recipe_is_rejected_with_located_messages(
    recipe: Path, ralph: Ralph, snapshot: SnapshotAssertion
) -> None:
    shown = recipe.relative_to(ROOT).as_posix()
    result = ralph("validate", shown)
    assert_rejected(result, shown, recipe.parent)
    assert result.out == snapshot


# Every secret planted in the corpus; none may appear in any output format.
SECRETS = {
    "yaml_duplicate_key.yaml": [
        "sk-dupFIRSTabcdefghijklmnop0001",
        "sk-dupSECONDabcdefghijklmnop0002",
    ],
    "secret_api_key_field.yaml": [
        "hunter2-not-shaped-like-a-key",
        "hunter3-also-not-shaped",
        "hunter4-plain-text",
    ],
    "secret_in_vars.yaml": [
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123",
        "sk-LeakedInsideTextAbCdEf0123456789",
    ],
    "secret_in_params.yaml": [
        "sk-ant-api03-ZyXwVuTsRqPoNmLk9876",
        "sk-ant-api03-ProfileSecret5432",
    ],
    "secret_in_schema_error.yaml": [
        "sk-proj-PastedIntoEnvName0123456789",
        "sk-ant-api03-PastedIntoTimeout987",
    ],
}


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
@pytest.mark.parametrize("name", sorted(SECRETS))
@pytest.mark.usefixtures("at_root")
def test_a_secret_in_a_recipe_never_appears_in_the_output(
    name: str, fmt: str, ralph: Ralph
) -> None:
    recipe = CORPUS / name
    text = recipe.read_text("utf-8")
    secrets = SECRETS[name]
    assert all(secret in text for secret in secrets)  # the test would notice a renamed secret
    result = ralph("validate", "--format", fmt, recipe.relative_to(ROOT).as_posix())
    assert result.code == 1
    for secret in secrets:
        assert secret not in result.out + result.err
        assert secret[-12:] not in result.out + result.err  # nor a recognisable part of it


def _ten_megabytes() -> bytes:
    head = b"version: 1\nname: huge\nagents: {a: {provider: echo}}\ntasks: [{name: t, agent: a}]\n"
    filler = b"# " + b"x" * 97 + b"\n"
    return head + b"vars:\n" + filler * (10_000_000 // len(filler))


def _alias_bomb() -> bytes:
    """The billion laughs: nine levels of nine aliases, 9**9 strings if expanded."""
    lines = ["version: 1", "name: lol", "vars:", '  l0: &l0 ["lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"  l{level}: &l{level} [{refs}]")
    lines += ["agents: {a: {provider: echo}}", "tasks: [{name: t, agent: a, prompt: hi}]"]
    return "\n".join(lines).encode() + b"\n"


def _deep_block() -> bytes:
    nested = "".join("  " * depth + "k:\n" for depth in range(1, 100))
    return f"version: 1\nname: deep\nvars:\n{nested}".encode()


GENERATED: dict[str, Callable[[], bytes]] = {
    "ten_megabytes.yaml": _ten_megabytes,
    "alias_bomb.yaml": _alias_bomb,
    "binary.yaml": lambda: b"version: 1\nname: bin\x00\x01\x02\xff\xfe\nrest\n",
    "latin1.yaml": lambda: "version: 1\nname: latin\ndescription: café crème\n".encode("latin-1"),
    "utf16.yaml": lambda: "version: 1\nname: wide\n".encode("utf-16"),
    "control_character.yaml": lambda: b"version: 1\nname: bell\x07\n",
    "deep_flow.yaml": lambda: b"version: 1\nname: deep\nvars:\n  a: " + b"[" * 5000 + b"]" * 5000,
    "deep_block.yaml": _deep_block,
}


def _generate(name: str, folder: Path) -> None:
    (folder / name).write_bytes(GENERATED[name]())


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_nasty_input_is_rejected_with_a_located_message(
    name: str,
    ralph: Ralph,
    snapshot: SnapshotAssertion,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _generate(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = ralph("validate", name)
    assert_rejected(result, name, tmp_path)
    assert result.out == snapshot


@pytest.mark.parametrize("name", ["ten_megabytes.yaml", "alias_bomb.yaml"])
def test_hostile_input_is_refused_quickly_and_in_little_memory(
    name: str, ralph: Ralph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _generate(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    assert ralph("validate", name).code == 1
    assert time.perf_counter() - started < 2.0

    tracemalloc.start()
    try:
        assert ralph("validate", name).code == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20


FRAGMENTS = [
    *(b"{{", b"}}", b"{%", b"%}", b"&a", b"*a", b"<<: *a", b"? ", b"!!set", b"!!int"),
    *(b"\n", b"  ", b"\t", b": ", b"- ", b"[", b"]", b"{", b"}", b"'", b'"', b"|", b">"),
    *(b"---", b"\xff", b"\x00", b"~", b"1e400", b"| tirm", b"`", b"@", b"#", b"sk-ant-xxxxxxxx"),
]


def test_mutated_recipes_are_rejected_or_accepted_but_never_crash(tmp_path: Path) -> None:
    """A seeded fuzz over the corpus and the shipped recipes: no exception escapes the check."""
    import random

    from ralph.recipe.validate import check_file

    seeds = [p.read_bytes() for p in [*CASES, *(ROOT / "examples").rglob("*.yaml")]]
    rng = random.Random(20240501)
    recipe = tmp_path / "r.yaml"
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            if rng.random() < 0.6:
                data[at:at] = rng.choice(FRAGMENTS)
            else:
                del data[at : at + rng.randint(1, 8)]
        recipe.write_bytes(bytes(data))
        for problem in check_file(recipe, None, ["tone=x"]).problems:
            assert problem.line >= 1 and problem.column >= 1, problem
