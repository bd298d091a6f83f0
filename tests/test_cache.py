"""The response cache: keys of exactly what decides an answer, a real diskcache, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ralph.cache import Entry, KeyMaker, ResponseCache, cache_key, default_cache_dir, key_parts
from ralph.errors import OutputError
from ralph.providers.base import Request, Response
from ralph.recipe.build import freeze
from ralph.recipe.model import Agent
from tests.conftest import Result, apply_args, write_recipe

KEY = "sk-test-cache-0123456789abcdefXYZ"

AGENT = Agent(
    name="writer",
    provider="openai",
    base_url="http://127.0.0.1:9/v1",
    model="gpt-4o-mini",
    api_key_env="RALPH_TEST_CACHE_KEY",
    params=freeze({"temperature": 0.2, "response_format": {"type": "json_object"}}),
)
REQUEST = Request(
    prompt="Summarize ticket 7", system="Be terse.", model="gpt-4o-mini", params=AGENT.params
)


def key(agent: Agent = AGENT, **changes: Any) -> str:
    request = dataclasses.replace(REQUEST, **changes)
    return cache_key(agent, request)


# -- keys --------------------------------------------------------------------------------------


def test_the_key_is_a_sha256_of_the_sorted_parts_and_stays_the_same() -> None:
    parts = key_parts(AGENT, REQUEST)
    assert list(parts) == ["provider", "base_url", "model", "params", "system", "prompt"]
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    assert key() == hashlib.sha256(canonical.encode()).hexdigest()
    # pinned: a change here makes every user's cache miss once, so it must be deliberate
    assert key() == "5172888f6a2dbec0855da20805220ed65a4ce4efae8a94dff70c203b0810be11"
    assert key() == key()


def test_param_order_does_not_matter() -> None:
    reordered = freeze({"response_format": {"type": "json_object"}, "temperature": 0.2})
    assert key(params=reordered) == key()


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "Summarize ticket 8"},
        {"prompt": "Summarize ticket 7 "},
        {"system": "Be chatty."},
        {"system": None},
        {"model": "gpt-4o"},
        {"params": freeze({"temperature": 0.3, "response_format": {"type": "json_object"}})},
        {"params": freeze({"temperature": 0.2, "response_format": {"type": "text"}})},
        {"params": freeze({"temperature": 0.2})},
    ],
)
def test_any_request_change_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) != key()


@pytest.mark.parametrize(
    "change", [{"provider": "anthropic"}, {"base_url": "http://127.0.0.1:9/v2"}]
)
def test_provider_and_base_url_change_the_key(change: dict[str, Any]) -> None:
    assert key(dataclasses.replace(AGENT, **change)) != key()


def test_command_agents_are_keyed_by_their_command_and_workdir(tmp_path: Path) -> None:
    coder = Agent(name="coder", provider="command", command=("claude", "-p"), workdir=tmp_path)
    request = Request(prompt="build it")
    parts = key_parts(coder, request)
    assert parts["command"] == ("claude", "-p") and parts["workdir"] == str(tmp_path)
    base = cache_key(coder, request)
    longer = dataclasses.replace(coder, command=("claude", "-p", "--fast"))
    assert cache_key(longer, request) != base
    assert cache_key(dataclasses.replace(coder, command="claude -p"), request) != base
    assert cache_key(dataclasses.replace(coder, workdir=tmp_path / "sub"), request) != base


@pytest.mark.parametrize(
    "request_",
    [
        REQUEST,
        dataclasses.replace(REQUEST, system=None),
        dataclasses.replace(REQUEST, prompt='quotes " \\ \n\t\x00 é ☃ \U0001f600', system=""),
        dataclasses.replace(REQUEST, model="gpt-4o"),
        dataclasses.replace(REQUEST, params=freeze({"temperature": 0.3})),
    ],
)
def test_the_fast_key_maker_gives_the_defined_key(request_: Request) -> None:
    assert KeyMaker(AGENT).key(request_) == cache_key(AGENT, request_)


def test_the_fast_key_maker_gives_the_defined_key_for_command_agents(tmp_path: Path) -> None:
    coder = Agent(name="coder", provider="command", command=("claude", "-p"), workdir=tmp_path)
    request = Request(prompt="build it", system="You code.", params=coder.params)
    assert KeyMaker(coder).key(request) == cache_key(coder, request)


def test_credentials_never_go_into_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RALPH_TEST_CACHE_KEY", KEY)
    parts = json.dumps(key_parts(AGENT, REQUEST))
    assert KEY not in parts
    assert "RALPH_TEST_CACHE_KEY" not in parts
    # where the key comes from does not change which answer is right
    other_sources = [
        dataclasses.replace(AGENT, api_key_env="OTHER_KEY"),
        dataclasses.replace(AGENT, api_key_env=None, api_key_file=tmp_path / "key.txt"),
        dataclasses.replace(AGENT, api_key_env=None, api_key_command=("pass", "openai")),
    ]
    assert {key(agent) for agent in other_sources} == {key()}


# -- the store ---------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    store = ResponseCache(tmp_path / "cache")
    try:
        yield store
    finally:
        store.close()


def test_put_many_and_get_round_trip(cache: ResponseCache) -> None:
    entries = [
        Entry("k1", Response("answer one", 10, 3), "writer", None),
        Entry("k2", Response("ünïcödé\n", 1, 2), "backup", None),
    ]
    cache.put_many(entries)
    assert cache.get("k1") == (Response("answer one", 10, 3), "writer")
    assert cache.get("k2") == (Response("ünïcödé\n", 1, 2), "backup")
    assert "k1" in cache
    assert cache.get("absent") is None
    assert "absent" not in cache


@pytest.mark.parametrize("preload", [False, True])
def test_a_value_ralph_did_not_write_is_a_miss_not_a_crash(tmp_path: Path, preload: bool) -> None:
    import diskcache

    with diskcache.Cache(str(tmp_path / "c")) as raw:
        raw.set("not-json", "{oops")
        raw.set("surrogate", '["\\ud800", 1, 2, "a"]')  # json would take it, orjson refuses
        raw.set("short", '["text", 1]')
    cache = ResponseCache(tmp_path / "c", preload=preload)
    assert [cache.get(k) for k in ("not-json", "surrogate", "short")] == [None, None, None]
    cache.close()


@pytest.mark.parametrize("preload", [False, True])
def test_entries_survive_reopening(tmp_path: Path, preload: bool) -> None:
    first = ResponseCache(tmp_path / "c")
    first.put_many([Entry("k", Response("kept", 1, 1), "writer", None)])
    first.close()
    again = ResponseCache(tmp_path / "c", preload=preload)
    try:
        assert again.get("k") == (Response("kept", 1, 1), "writer")
    finally:
        again.close()


def test_answers_are_read_in_one_go_when_the_cache_opens(tmp_path: Path) -> None:
    import diskcache

    long = "x" * 100_000  # diskcache keeps a value this long in a file of its own
    first = ResponseCache(tmp_path / "c")
    first.put_many(
        [
            Entry("short", Response("kept", 1, 1), "writer", None),
            Entry("long", Response(long, 1, 1), "writer", None),
            Entry("replaced", Response("old", 1, 1), "writer", None),
        ]
    )
    first.close()
    again = ResponseCache(tmp_path / "c", preload=True)
    try:
        # read when it opened: another process deleting the entry now does not take it back
        # (as documented: a `cache clear` during a run takes effect for the next run)
        with diskcache.Cache(str(tmp_path / "c")) as other:
            del other["short"]
        assert again.get("short") == (Response("kept", 1, 1), "writer")
        assert again.get("long") == (Response(long, 1, 1), "writer")
        again.put_many([Entry("replaced", Response("new", 2, 2), "writer", None)])
        assert again.get("replaced") == (Response("new", 2, 2), "writer")
    finally:
        again.close()


def test_an_answer_read_at_open_still_expires_on_time(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path / "c")
    first.put_many([Entry("short", Response("a", 1, 1), "writer", 0.3)])
    first.close()
    again = ResponseCache(tmp_path / "c", preload=True)
    try:
        assert again.get("short") is not None
        time.sleep(0.35)
        assert again.get("short") is None
    finally:
        again.close()


def test_a_cleared_cache_serves_nothing_it_read_at_open(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path / "c")
    first.put_many([Entry("k", Response("a", 1, 1), "writer", None)])
    first.close()
    again = ResponseCache(tmp_path / "c", preload=True)
    try:
        assert again.clear() == 1
        assert again.get("k") is None
    finally:
        again.close()


def test_ttl_expiry(cache: ResponseCache) -> None:
    cache.put_many(
        [
            Entry("short", Response("a", 1, 1), "writer", 0.15),
            Entry("forever", Response("b", 1, 1), "writer", None),
        ]
    )
    assert cache.get("short") is not None
    time.sleep(0.2)
    assert cache.get("short") is None
    assert "short" not in cache
    assert cache.get("forever") is not None
    assert cache.stats()["entries"] == 1  # an expired entry is not counted


def test_stats_and_clear(cache: ResponseCache, tmp_path: Path) -> None:
    empty = cache.stats()
    assert empty["entries"] == 0 and empty["directory"] == str(tmp_path / "cache")
    cache.put_many(Entry(f"k{n}", Response("x" * 100, 1, 1), "w", None) for n in range(5))
    stats = cache.stats()
    assert stats["entries"] == 5 and stats["size_bytes"] > 0
    assert cache.clear() == 5
    assert cache.stats()["entries"] == 0
    assert cache.get("k0") is None


def test_default_cache_dir_is_beside_the_recipe_unless_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RALPH_CACHE_DIR", raising=False)
    recipe = tmp_path / "recipes" / "r.yaml"
    assert default_cache_dir(recipe) == tmp_path / "recipes" / ".ralph" / "cache"
    monkeypatch.setenv("RALPH_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir(recipe) == tmp_path / "elsewhere"


# -- the CLI -----------------------------------------------------------------------------------

ECHO_RECIPE = """
    version: 1
    name: cache-cli
    agents:
      local: {provider: echo}
    tasks:
      - name: greet
        agent: local
        for_each: [{id: ada, name: Ada}, {id: bob, name: Bob}]
        system: Be kind.
        prompt: "Hello {{ item.name }}"
"""


@pytest.fixture
def echo_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("RALPH_CACHE_DIR", raising=False)
    return write_recipe(tmp_path, ECHO_RECIPE)


def explain(ralph: Callable[..., Result], recipe: Path, item: int) -> tuple[str, dict[str, Any]]:
    result = ralph("cache", "explain", str(recipe), "--task", "greet", "--item", str(item))
    assert result.code == 0, result.err
    head, _, body = result.out.partition("\n")
    return head, json.loads(body)


def test_cache_cli_explain_stats_and_clear(
    ralph: Callable[..., Result], echo_recipe: Path, tmp_path: Path
) -> None:
    head, parts = explain(ralph, echo_recipe, 1)
    assert head.startswith("agent local: key ") and head.endswith("(not cached)")
    assert parts == {
        "provider": "echo",
        "base_url": None,
        "model": None,
        "params": {},
        "system": "Be kind.",
        "prompt": "Hello Bob",
    }
    stats = ralph("cache", "stats", str(echo_recipe))
    folder = tmp_path / ".ralph" / "cache"
    assert (stats.code, stats.out) == (0, f"{folder}: no cache (the folder does not exist)\n")
    assert not folder.exists(), "explain or stats made the cache folder"

    applied = ralph(*apply_args(echo_recipe, tmp_path / "out"))
    assert applied.code == 0, applied.err
    after_head, after_parts = explain(ralph, echo_recipe, 1)
    assert after_head.endswith("(cached)")
    assert after_head.split()[3] == head.split()[3]  # the same key, now held
    assert after_parts == parts

    stats = ralph("cache", "stats", str(echo_recipe))
    assert stats.out.startswith(str(tmp_path / ".ralph" / "cache"))
    assert ": 2 entries" in stats.out

    cleared = ralph("cache", "clear", str(echo_recipe))
    assert (cleared.code, cleared.out.strip()) == (0, "removed 2 entries")
    assert explain(ralph, echo_recipe, 0)[0].endswith("(not cached)")
    assert ": 0 entries" in ralph("cache", "stats", str(echo_recipe)).out


def test_cache_cli_takes_a_cache_dir_and_names_bad_input(
    ralph: Callable[..., Result], echo_recipe: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    applied = ralph(*apply_args(echo_recipe, tmp_path / "out", "--cache-dir", str(elsewhere)))
    assert applied.code == 0, applied.err
    assert ": 2 entries" in ralph("cache", "stats", "--cache-dir", str(elsewhere)).out
    assert "no cache" in ralph("cache", "stats", str(echo_recipe)).out
    no_task = ralph("cache", "explain", str(echo_recipe), "--task", "nope")
    assert no_task.code == 2 and "no task 'nope' (tasks: greet)" in no_task.err
    no_item = ralph("cache", "explain", str(echo_recipe), "--task", "greet", "--item", "5")
    assert no_item.code == 2 and "has no item 5" in no_item.err
    no_recipe = ralph("cache", "stats")
    assert no_recipe.code == 2 and "--cache-dir" in no_recipe.err


@pytest.mark.parametrize("item", ["-1", "99999999999999999999"])
def test_cache_explain_of_an_index_out_of_range_is_a_usage_error(
    ralph: Callable[..., Result], echo_recipe: Path, item: str
) -> None:
    result = ralph("cache", "explain", str(echo_recipe), "--task", "greet", "--item", item)
    assert (result.code, result.err) == (2, f"error: task 'greet' has no item {item}\n")


def test_cache_explain_of_a_task_reading_outputs_or_leaving_the_folder_says_why_not(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: explain-refusals
        agents: {local: {provider: echo}}
        tasks:
          - {name: greet, agent: local, for_each: [{id: ../../evil}], prompt: hi,
             output: "g/{{ item.id }}.md"}
          - {name: count, agent: local, prompt: "{{ outputs.get('greet', {}) | length }} so far"}
        """,
    )
    escape = ralph("cache", "explain", str(recipe), "--task", "greet")
    assert escape.code == 2 and "leaves the output directory" in escape.err, escape.err
    later = ralph("cache", "explain", str(recipe), "--task", "count")
    assert (later.code, later.err) == (
        2,
        "error: task 'count' reads outputs of earlier tasks, which explain does not have: it "
        "cannot render the item as a run does (the cache_key of its attempt log lines "
        "identifies it)\n",
    )


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_cache_stats_and_clear_of_a_missing_recipe_are_an_error(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.delenv("RALPH_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    result = ralph("cache", command, "nothere.yaml")
    assert (result.code, result.err) == (
        1,
        "nothere.yaml:1:1: cannot read recipe: No such file or directory\n",
    )
    assert list(tmp_path.iterdir()) == [], "a cache folder was made for a missing recipe"


def test_cache_stats_and_clear_of_a_missing_folder_say_so_and_make_none(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    typo = tmp_path / "cahce"
    stats = ralph("cache", "stats", "--cache-dir", str(typo))
    assert (stats.code, stats.out) == (0, f"{typo}: no cache (the folder does not exist)\n")
    cleared = ralph("cache", "clear", "--cache-dir", str(typo))
    assert (cleared.code, cleared.out) == (0, f"nothing removed: {typo} does not exist\n")
    assert not typo.exists()


@pytest.mark.parametrize("command", ["stats", "clear", "explain"])
def test_a_cache_dir_that_is_a_file_is_a_clear_error(
    ralph: Callable[..., Result], echo_recipe: Path, tmp_path: Path, command: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a cache")
    extra = ["--task", "greet"] if command == "explain" else []
    result = ralph("cache", command, str(echo_recipe), *extra, "--cache-dir", str(afile))
    assert (result.code, result.err) == (
        1,
        f"error: the cache folder {afile} is a file, not a folder\n",
    )
    assert afile.read_text() == "not a cache"


def test_cache_explain_reads_the_cache_without_writing_to_it(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    cache = tmp_path / "cache #1?"  # a path a file: URI must escape
    recipe = write_recipe(tmp_path, ECHO_RECIPE)
    assert ralph(*apply_args(recipe, tmp_path / "out", "--cache-dir", str(cache))).code == 0
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*")}
    shown = ralph("cache", "explain", str(recipe), "--task", "greet", "--cache-dir", str(cache))
    assert shown.code == 0 and shown.out.splitlines()[0].endswith("(cached)"), shown.out
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*")} == before


def test_a_plan_counts_an_answer_whose_file_is_gone_as_a_miss(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: long-answer
        agents: {local: {provider: command, command: [cat]}}
        tasks:
          - {name: t, agent: local, cache: true, prompt: "{{ 'x' * 40000 }}"}
        """,
    )
    assert ralph(*apply_args(recipe, tmp_path / "out")).code == 0
    (stored,) = (tmp_path / ".ralph" / "cache").rglob("*.val")  # too long for the database
    stored.unlink()
    planned = ralph("plan", str(recipe), "--detailed-exitcode")
    assert planned.code == 2, planned.out + planned.err  # to be sent again, as a run would


def test_a_damaged_cache_is_an_error_that_names_it(
    ralph: Callable[..., Result], echo_recipe: Path, tmp_path: Path
) -> None:
    folder = tmp_path / ".ralph" / "cache"
    folder.mkdir(parents=True)
    (folder / "cache.db").write_bytes(b"garbage, not a database" * 100)
    for command in (
        apply_args(echo_recipe, tmp_path / "out"),
        ["cache", "stats", str(echo_recipe)],
    ):
        result = ralph(*command)
        assert result.code == 1, result.err
        assert f"cannot read the cache {folder}: file is not a database" in result.err
        assert "--no-cache" in result.err


def test_a_cache_that_fails_while_answers_are_written_stops_the_run_cleanly(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    try:
        (tmp_path / "c" / "cache.db").write_bytes(b"\0" * 8192)  # damaged under the open cache
        with pytest.raises(OutputError, match=r"cannot write the cache .*: "):
            cache.put_many([Entry("k", Response("a", 1, 1), "writer", None)])
    finally:
        cache.close()


@pytest.mark.parametrize(
    "value", ["5", "null", '"abcd"', '{"a": 1, "b": 2, "c": 3, "d": 4}', "[1, 2, 3, 4]"]
)
def test_a_value_ralph_did_not_write_is_never_served(tmp_path: Path, value: str) -> None:
    import diskcache

    with diskcache.Cache(str(tmp_path / "c")) as raw:
        raw.set("k", value)
    for preload in (False, True):
        cache = ResponseCache(tmp_path / "c", preload=preload)
        try:
            assert cache.get("k") is None
        finally:
            cache.close()


def test_a_damaged_long_answer_is_a_miss(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path / "c")
    first.put_many([Entry("k", Response("x" * 100_000, 1, 1), "writer", None)])
    first.close()
    (stored,) = (tmp_path / "c").rglob("*.val")
    stored.write_bytes(b"\xff\xfe garbage")
    again = ResponseCache(tmp_path / "c")
    try:
        assert again.get("k") is None
    finally:
        again.close()


def test_cache_stats_of_a_folder_that_holds_no_cache_makes_none(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    result = ralph("cache", "stats", "--cache-dir", str(tmp_path))
    assert (result.code, result.out) == (0, f"{tmp_path}: no cache (the folder holds no cache)\n")
    assert list(tmp_path.iterdir()) == []


def test_cache_explain_says_when_the_task_does_not_use_the_cache(
    ralph: Callable[..., Result], echo_recipe: Path, tmp_path: Path
) -> None:
    assert ralph(*apply_args(echo_recipe, tmp_path / "out")).code == 0
    text = echo_recipe.read_text()
    echo_recipe.write_text(text.replace("system: Be kind.", "system: Be kind.\n    cache: false"))
    shown = ralph("cache", "explain", str(echo_recipe), "--task", "greet")
    assert shown.code == 0, shown.err
    assert shown.out.splitlines()[0].endswith("(the task does not use the cache)")
