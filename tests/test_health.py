"""`ralph health` and the checks `ralph apply` runs first, against real servers and processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ralph.testing import FakeLLMServer
from tests.conftest import TEST_KEY, Result, apply_args, gone, write_recipe


def recipe_with(tmp_path: Path, agents: str, checks: str = "[]") -> Path:
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: health-test
        agents:
{agents}
        tasks:
          - name: t
            agent: main
            prompt: hi
        health_checks: {checks}
    """,
    )


def openai_agent(base_url: str, env: str = "OPENAI_API_KEY") -> str:
    return f"""          main:
            provider: openai
            base_url: {base_url}
            model: m
            api_key_env: {env}"""


def health(
    ralph: Callable[..., Result], recipe: Path, tmp_path: Path
) -> tuple[int, list[dict[str, object]]]:
    result = ralph("health", str(recipe), "--format", "json", "--out", str(tmp_path / "out"))
    return result.code, json.loads(result.out)


def test_all_checks_pass(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    healthz = f"{server.root_url}/healthz"
    checks = f"""[{{http: {{url: "{healthz}"}}}}, {{command: [{sys.executable}, -c, "pass"]}}]"""
    recipe = recipe_with(tmp_path, openai_agent(server.base_url), checks)
    code, results = health(ralph, recipe, tmp_path)
    assert code == 0, results
    names = [r["name"] for r in results]
    assert names[0] == "agent: main (openai)"
    assert f"http: {server.root_url}/healthz" in names
    assert all(r["ok"] for r in results)
    assert server.counts["/v1/models"] == 1
    text = ralph("health", str(recipe), "--out", str(tmp_path / "out"))
    assert text.code == 0 and text.out.splitlines()[0].split() == [
        "check",
        "status",
        "latency",
        "detail",
    ]


def test_wrong_key_fails_without_showing_it(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path, monkeypatch: object
) -> None:
    server.api_key = "sk-the-server-wants-another-key-000"
    code, results = health(ralph, recipe_with(tmp_path, openai_agent(server.base_url)), tmp_path)
    assert code == 1
    assert not results[0]["ok"] and "401" in str(results[0]["detail"])
    assert TEST_KEY not in json.dumps(results)


def test_missing_env_var_is_named(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = recipe_with(tmp_path, openai_agent(server.base_url, env="RALPH_TEST_NO_SUCH_KEY"))
    code, results = health(ralph, recipe, tmp_path)
    assert code == 1
    assert "RALPH_TEST_NO_SUCH_KEY is not set" in str(results[0]["detail"])


def test_command_agent_probe(ralph: Callable[..., Result], tmp_path: Path) -> None:
    found = f"""          main:
            provider: command
            command: [{sys.executable}, -c, "print(1)"]"""
    assert health(ralph, recipe_with(tmp_path, found), tmp_path)[0] == 0
    missing = """          main:
            provider: command
            command: [ralph-test-no-such-program]"""
    code, results = health(ralph, recipe_with(tmp_path, missing), tmp_path)
    assert code == 1 and "not found on PATH" in str(results[0]["detail"])
    failing_probe = (
        found
        + f"""
            probe: [{sys.executable}, -c, "raise SystemExit(3)"]"""
    )
    code, results = health(ralph, recipe_with(tmp_path, failing_probe), tmp_path)
    assert code == 1 and "exited with 3" in str(results[0]["detail"])


def test_a_command_given_as_a_path_is_found_from_its_workdir(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "sub" / "agent.sh"
    agent.parent.mkdir()
    agent.write_text("#!/bin/sh\ncat\n")
    agent.chmod(0o755)
    relative = """          main:
            provider: command
            command: [./agent.sh]
            workdir: sub
            probe: [./agent.sh, --version]"""
    monkeypatch.chdir("/")  # not where the agent is: the run starts it in its workdir
    assert health(ralph, recipe_with(tmp_path, relative), tmp_path)[0] == 0
    code, results = health(
        ralph, recipe_with(tmp_path, relative.replace("sub", "elsewhere")), tmp_path
    )
    assert code == 1 and "command './agent.sh' not found in" in str(results[0]["detail"])


def test_a_check_that_hangs_is_stopped_with_all_it_started(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    checks = f"""[{{command: [sh, -c, "sleep 30 & echo $! > {child}; wait"], timeout: 1s}}]"""
    echo = """          main:
            provider: echo"""
    code, results = health(ralph, recipe_with(tmp_path, echo, checks), tmp_path)
    assert code == 1 and "no exit within 1s" in [str(r["detail"]) for r in results]
    assert gone(int(child.read_text())), "what the check started outlived it"


def test_failing_recipe_checks(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    checks = f"""[{{http: {{url: "{server.root_url}/healthz", expect_status: 201}}}},
                   {{http: {{url: "http://127.0.0.1:9/", timeout: 2s}}}},
                   {{command: [{sys.executable}, -c, "raise SystemExit(2)"]}}]"""
    echo = """          main:
            provider: echo"""
    code, results = health(ralph, recipe_with(tmp_path, echo, checks), tmp_path)
    assert code == 1
    details = [str(r["detail"]) for r in results]
    assert details[0] == "ok"  # the echo agent
    assert "HTTP 200, expected 201" in details
    assert any("cannot connect" in d for d in details)
    assert "exit 2, expected 0" in details


def test_out_dir_that_cannot_be_created(ralph: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    recipe = recipe_with(
        tmp_path,
        """          main:
            provider: echo""",
    )
    result = ralph(
        "health", str(recipe), "--format", "json", "--out", str(tmp_path / "a-file" / "out")
    )
    assert result.code == 1
    assert "is not a directory" in result.out


def test_apply_refuses_to_start_when_a_check_fails(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    checks = f"""[{{http: {{url: "{server.root_url}/healthz", expect_status: 204}}}}]"""
    recipe = recipe_with(tmp_path, openai_agent(server.base_url), checks)
    result = ralph(*apply_args(recipe, tmp_path / "out"))
    assert result.code == 5
    assert "health check failed, nothing was sent" in result.err
    assert "HTTP 200, expected 204" in result.err
    assert server.counts.get("/v1/chat/completions", 0) == 0
    assert not (tmp_path / "out").exists()


def test_a_check_over_http_is_made_for_an_echo_recipe(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    echo = """          main:
            provider: echo"""
    checks = f"""[{{http: {{url: "{server.root_url}/healthz"}}}}]"""
    code, results = health(ralph, recipe_with(tmp_path, echo, checks), tmp_path)
    assert code == 0, results
    assert [r["name"] for r in results][:2] == [
        "agent: main (echo)",
        f"http: {server.root_url}/healthz",
    ]


def test_checks_without_http_do_not_load_the_http_client(tmp_path: Path) -> None:
    # a fresh interpreter: this one has aiohttp loaded by the fake server
    agents = f"""          main:
            provider: echo
            fallback: cli
          cli:
            provider: command
            command: [{sys.executable}, -c, "print(1)"]"""
    checks = f"""[{{command: [{sys.executable}, -c, "pass"]}}, {{agent: cli}}]"""
    recipe = recipe_with(tmp_path, agents, checks)
    script = (
        "import sys; from ralph.cli import run; "
        f"code = run(['health', {str(recipe)!r}, '--out', {str(tmp_path / 'out')!r}]); "
        "print(code, 'aiohttp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr


def test_a_check_that_reports_a_key_has_it_masked() -> None:
    # whatever a probe says (an error from a library, a server's text) goes through redact
    from ralph.health import _timed
    from ralph.secrets import remember_secret

    shapeless = "tok_health_0123456789-selfhosted"
    remember_secret(shapeless)

    async def probe() -> str | None:
        return f"refused key {shapeless}"

    result = asyncio.run(_timed("agent: a (openai)", probe))
    assert not result.ok and result.detail == "refused key [REDACTED:key]"
