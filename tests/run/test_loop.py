"""The Ralph loop end to end: `ralph apply` on loop tasks with a scripted command agent (a real
subprocess) and the shipped fake server; real files, real stops, real resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ralph.testing import FakeLLMServer, Fault
from tests.conftest import Result, gone, start_apply, write_recipe
from tests.run.loop_fixtures.helpers import EXISTS, LoopCase, loop_case

Ralph = Callable[..., Result]
CHAT = "/v1/chat/completions"
MARKER = "LOOP_COMPLETE"


def assert_stopped(
    case: LoopCase, result: Result, stop: str, iterations: int, *, first: int = 1
) -> None:
    """The loop ended by `stop` after `iterations` (`first` to the last in this run's logs):
    exit code, JSONL, summary and logs agree."""
    assert result.code == (0 if stop == "done" else 3), result.out
    last = first + iterations - 1
    (line,) = case.lines()
    assert (line["stop"], line["iterations"]) == (stop, last)
    assert line["status"] == ("done" if stop == "done" else "failed")
    summary = case.summary()
    assert summary["loop"]["stops"] == {stop: 1}
    if stop != "done":
        assert summary["failures"] == {f"loop stopped by {stop}": 1}
    end = case.events("loop_end")[-1]
    assert (end["stop"], end["iterations"]) == (stop, last)
    logged = [e["iteration"] for e in case.events("loop_iteration")]
    assert logged[-iterations:] == list(range(first, last + 1))


# -- until ------------------------------------------------------------------------------------


def test_marker_ends_the_loop_with_the_fake_server(
    ralph: Ralph, server: FakeLLMServer, tmp_path: Path
) -> None:
    server.script(["first draft", "second draft", "All tests pass.\nLOOP_COMPLETE"])
    case = LoopCase(tmp_path)
    write_recipe(
        tmp_path,
        f"""
        version: 1
        name: loop-http
        agents:
          writer:
            provider: openai
            base_url: {server.base_url}
            model: test-model
            api_key_env: OPENAI_API_KEY
        tasks:
          - name: build
            agent: writer
            prompt: "Iteration {{{{ iteration }}}}, after: {{{{ previous }}}}. Say {MARKER}"
            loop: {{until: LOOP_COMPLETE, max_iterations: 10}}
        """,
    )
    result = case.apply(ralph)
    assert_stopped(case, result, "done", 3)
    assert server.counts[CHAT] == 3
    sent = [r.body["messages"][-1]["content"] for r in server.requests if r.path == CHAT]
    assert sent[1] == "Iteration 2, after: first draft. Say LOOP_COMPLETE"
    assert (case.iterations() / "0003.answer.md").read_text() == "All tests pass.\nLOOP_COMPLETE"
    assert (case.iterations() / "0001.prompt.md").read_text() == sent[0]
    assert case.lines()[0]["answer"] == "All tests pass.\nLOOP_COMPLETE"

    server.reset()
    again = case.apply(ralph)
    assert again.code == 0 and server.counts.get(CHAT, 0) == 0, "a done loop ran again"
    assert case.lines()[0]["stop"] == "done"

    # no response cache: the same prompts from scratch are really sent again
    server.script(["first draft", "LOOP_COMPLETE"])
    (case.out / "build" / "state.json").unlink()
    assert case.apply(ralph).code == 0
    assert server.counts[CHAT] == 2


def test_marker_echoed_from_the_prompt_does_not_end_the_loop(ralph: Ralph, tmp_path: Path) -> None:
    case = loop_case(tmp_path, {"*": {"echo": True}}, "{until: LOOP_COMPLETE, max_iterations: 3}")
    result = case.apply(ralph)
    assert_stopped(case, result, "max_iterations", 3)
    assert "LOOP_COMPLETE" in (case.iterations() / "0001.answer.md").read_text()


def test_done_on_the_last_allowed_iteration_is_done(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"3": {"say": "finished\nLOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, max_iterations: 3}")
    assert_stopped(case, case.apply(ralph), "done", 3)


def test_max_iterations(ralph: Ralph, tmp_path: Path) -> None:
    case = loop_case(tmp_path, {}, "{until: LOOP_COMPLETE, max_iterations: 4}")
    result = case.apply(ralph)
    assert_stopped(case, result, "max_iterations", 4)
    assert case.calls() == [1, 2, 3, 4]
    assert "loop stopped by max_iterations" in result.out


def test_command_condition_ends_when_the_check_passes(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"3": {"write": {"built.txt": "ok"}}}
    loop = f"{{until: {{command: [{sys.executable}, {EXISTS}, built.txt]}}, max_iterations: 9}}"
    case = loop_case(tmp_path, plan, loop)
    assert_stopped(case, case.apply(ralph), "done", 3)
    details = [e["detail"] for e in case.events("loop_iteration")]
    assert details[0].startswith("`") and "exited with 1: missing: built.txt" in details[0]


def test_checklist_file_all_checked(ralph: Ralph, tmp_path: Path) -> None:
    boxes = ["- [x] one\n- [ ] two\n- [ ] three\n", "- [x] one\n- [X] two\n- [ ] three\n"]
    plan = {
        "1": {"write": {"TODO.md": boxes[0]}},
        "2": {"write": {"TODO.md": boxes[1]}},
        "3": {"write": {"TODO.md": "# plan\n- [x] one\n- [x] two\n* [x] three\n"}},
    }
    case = loop_case(tmp_path, plan, "{until: {file: TODO.md, all_checked: true}}")
    (case.work / "TODO.md").write_text("- [ ] one\n- [ ] two\n- [ ] three\n")
    assert_stopped(case, case.apply(ralph), "done", 3)
    assert case.events("loop_iteration")[1]["detail"] == "TODO.md: 2 of 3 boxes checked"


def test_all_needs_the_marker_and_the_tests(ralph: Ralph, tmp_path: Path) -> None:
    # the agent claims done from the start; the work is there only at iteration 3
    plan = {"*": {"say": "LOOP_COMPLETE"}, "3": {"say": "LOOP_COMPLETE", "write": {"ok": "1"}}}
    check = f"{{command: [{sys.executable}, {EXISTS}, ok]}}"
    case = loop_case(tmp_path, plan, f"{{until: {{all: [LOOP_COMPLETE, {check}]}}}}")
    assert_stopped(case, case.apply(ralph), "done", 3)


def test_repeating_the_previous_answer_is_no_echo(ralph: Ralph, tmp_path: Path) -> None:
    """`previous` puts the last answer in the prompt; saying the same again still counts."""
    prompt = (
        "This is iteration {{ iteration }}. Last time you said:\n{{ previous }}\n"
        "When everything is done, print LOOP_COMPLETE on a line of its own.\n"
    )
    said = "Fixed the parser.\nLOOP_COMPLETE"
    plan = {"1": {"say": said}, "2": {"say": said, "write": {"ok": "1"}}}
    check = f"{{command: [{sys.executable}, {EXISTS}, ok]}}"
    loop = f"{{until: {{all: [LOOP_COMPLETE, {check}]}}}}"
    case = loop_case(tmp_path, plan, loop, prompt=prompt)
    assert_stopped(case, case.apply(ralph), "done", 2)
    assert said in (case.iterations() / "0002.prompt.md").read_text()


def test_all_runs_no_check_before_the_agent_says_done(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"say": "LOOP_COMPLETE"}}
    check = f"{{command: [{sys.executable}, {EXISTS}, missing]}}"
    loop = f"{{until: {{all: [LOOP_COMPLETE, {check}]}}, max_iterations: 2}}"
    case = loop_case(tmp_path, plan, loop)
    assert_stopped(case, case.apply(ralph), "max_iterations", 2)
    details = [e["detail"] for e in case.events("loop_iteration")]
    assert details[0] == "marker 'LOOP_COMPLETE' not found"
    assert "missing: missing" in details[1]


def test_any_ends_on_the_first_condition_met(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"write": {"notes.md": "FINISHED: all of it"}}}
    loop = "{until: {any: [LOOP_COMPLETE, {file: notes.md, contains: FINISHED}]}}"
    case = loop_case(tmp_path, plan, loop)
    assert_stopped(case, case.apply(ralph), "done", 2)


def test_regex_condition(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"say": "tests: 12 passed, 0 failed"}}
    case = loop_case(tmp_path, plan, "{until: {regex: '\\b0 failed'}}")
    assert_stopped(case, case.apply(ralph), "done", 2)


# -- the other stops --------------------------------------------------------------------------


def test_nearly_the_same_answers_stall(ralph: Ralph, tmp_path: Path) -> None:
    plan = {
        "1": {"say": "Let me look"},
        "*": {"say": "Still investigating the failing test, try {n}"},
    }
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, max_iterations: 20}")
    assert_stopped(case, case.apply(ralph), "stalled", 4)
    assert case.events("loop_iteration")[-1]["similarity"] >= 0.9


def test_consecutive_failures_of_a_command_agent(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"1": {"exit": 1}, "2": {}, "*": {"exit": 1}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, max_consecutive_failures: 3}")
    result = case.apply(ralph)
    assert_stopped(case, result, "max_consecutive_failures", 5)
    assert [e["status"] for e in case.events("loop_iteration")] == ["failed", "ok"] + ["failed"] * 3
    assert case.events("loop_end")[0]["error"].startswith("command exited with 1")
    assert not (case.iterations() / "0001.answer.md").exists()


def test_consecutive_failures_from_server_faults(
    ralph: Ralph, server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("status", status=500, times=None, path="chat/completions"))
    case = LoopCase(tmp_path)
    write_recipe(
        tmp_path,
        f"""
        version: 1
        name: loop-faults
        agents:
          writer:
            provider: openai
            base_url: {server.base_url}
            model: test-model
            api_key_env: OPENAI_API_KEY
            retries: {{attempts: 2, backoff: 1ms}}
        tasks:
          - name: build
            agent: writer
            prompt: "Iteration {{{{ iteration }}}}"
            loop: {{until: LOOP_COMPLETE, max_consecutive_failures: 2}}
        """,
    )
    assert_stopped(case, case.apply(ralph), "max_consecutive_failures", 2)
    assert server.counts[CHAT] == 4  # two iterations of two attempts each


def test_loop_token_limit(ralph: Ralph, tmp_path: Path) -> None:
    case = loop_case(tmp_path, {}, "{until: LOOP_COMPLETE, max_tokens: 30}")
    result = case.apply(ralph)
    tokens = [e["input_tokens"] + e["output_tokens"] for e in case.events("loop_iteration")]
    assert sum(tokens[:-1]) < 30 <= sum(tokens)
    assert_stopped(case, result, "max_tokens", len(tokens))


def test_loop_cost_limit(ralph: Ralph, tmp_path: Path) -> None:
    pricing = "pricing: {input_per_mtok: 1000, output_per_mtok: 1000}"
    loop = "{until: LOOP_COMPLETE, max_cost_usd: 0.05}"
    case = loop_case(tmp_path, {}, loop, agent_extra=pricing)
    result = case.apply(ralph)
    costs = [e["cost_usd"] for e in case.events("loop_iteration")]
    assert sum(costs[:-1]) < 0.05 <= sum(costs)
    assert_stopped(case, result, "max_cost_usd", len(costs))
    assert case.lines()[0]["usage"]["cost_usd"] == round(sum(costs), 8)


def test_loop_runtime_limit(ralph: Ralph, tmp_path: Path) -> None:
    case = loop_case(tmp_path, {"sleep": 0.1}, "{until: LOOP_COMPLETE, max_runtime: 50ms}")
    assert_stopped(case, case.apply(ralph), "max_runtime", 1)


def test_a_run_limit_stops_with_exit_4_and_the_loop_resumes(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"4": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", limits="max_requests: 2")
    result = case.apply(ralph)
    assert result.code == 4, result.out
    assert case.lines() == [], "an unfinished loop got a line"
    state = json.loads((case.out / "build" / "state.json").read_text())
    assert (state["iteration"], state["stop"]) == (2, None)
    case.recipe.write_text(case.recipe.read_text().replace("max_requests: 2", ""))
    assert_stopped(case, case.apply(ralph), "done", 4)
    assert case.calls() == [1, 2, 3, 4]


# -- templates, archives, outputs -------------------------------------------------------------


def test_previous_and_history_and_a_prompt_file_edited_mid_run(
    ralph: Ralph, tmp_path: Path
) -> None:
    prompt = (
        "Iteration {{ iteration }}; previous: [{{ previous }}]; "
        "history: {{ history | map('trim') | join(',') }}\n"
    )
    edited = prompt + "Also write the docs.\n"
    say = "answer {n} " + "x" * 20
    plan = {"*": {"say": say}, "2": {"say": say, "write": {"../prompt.txt": edited}}}
    loop = """
        until: LOOP_COMPLETE
        max_iterations: 4
        history: 2
        previous_size: 12B
        stall: {window: 5}
    """
    case = loop_case(tmp_path, plan, loop, prompt=prompt)
    assert case.apply(ralph).code == 3
    prompts = [(case.iterations() / f"{n:04d}.prompt.md").read_text() for n in range(1, 5)]
    assert prompts[0].startswith("Iteration 1; previous: []; history: \n")
    assert "previous: [" + "x" * 11 + "\n]" in prompts[1]  # the last 12 bytes of answer 1
    assert "Also write" not in prompts[1] and "Also write the docs." in prompts[2]
    assert prompts[3].count("x" * 11) == 3  # history holds the last two answers


def test_output_template_gets_the_final_answer(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"say": "final words\nLOOP_COMPLETE"}}
    task_extra = "output: 'logs/build-{{ iteration }}.md'"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", task_extra=task_extra)
    assert case.apply(ralph).code == 0
    assert (case.out / "logs" / "build-2.md").read_text() == "final words\nLOOP_COMPLETE\n"
    assert not (case.out / "logs" / "build-1.md").exists()
    assert not (case.out / "build.jsonl").exists()


def test_each_item_loops_in_its_own_folder(ralph: Ralph, tmp_path: Path) -> None:
    prompt = "Item {{ item.id }}, iteration {{ iteration }}\nSay LOOP_COMPLETE when done.\n"
    plan = {"2": {"say": "LOOP_COMPLETE"}}
    items = "for_each: [{id: alpha}, {id: 'b/../c'}]"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", prompt=prompt, task_extra=items)
    assert case.apply(ralph).code == 0
    assert [(r["item"]["id"], r["iterations"]) for r in case.lines()] == [
        ("alpha", 2),
        ("b/../c", 2),
    ]
    folders = sorted(p.name for p in (case.out / "build").iterdir())
    assert folders[0] == "alpha" and folders[1].startswith("b_.._c-")
    for folder in folders:
        answers = sorted(p.name for p in (case.out / "build" / folder / "iterations").iterdir())
        assert answers == ["0001.answer.md", "0001.prompt.md", "0002.answer.md", "0002.prompt.md"]
    assert case.summary()["loop"] == {"iterations": 4, "stops": {"done": 2}}


def test_a_saved_state_is_reused_only_for_its_own_item(ralph: Ralph, tmp_path: Path) -> None:
    prompt = "Item {{ item }}, iteration {{ iteration }}\n"
    plan = {"2": {"say": "LOOP_COMPLETE"}}
    items = "for_each: [alpha, beta]"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", prompt=prompt, task_extra=items)
    assert case.apply(ralph).code == 0
    assert case.calls() == [1, 2, 1, 2]
    (case.iterations("0") / "0002.answer.md").rename(case.iterations("0") / "0009.answer.md")

    # the keys are positions: gamma, inserted first, finds alpha's finished state in out/build/0
    case.recipe.write_text(case.recipe.read_text().replace("[alpha, beta]", "[gamma, alpha, beta]"))
    result = case.apply(ralph)
    assert result.code == 0, result.out
    assert [(r["item"], r["status"]) for r in case.lines()] == [
        ("gamma", "done"),
        ("alpha", "done"),
        ("beta", "done"),
    ]
    assert (case.iterations("0") / "0001.prompt.md").read_text() == "Item gamma, iteration 1\n"
    assert not (case.iterations("0") / "0009.answer.md").exists(), "alpha's archive was kept"
    restarts = case.events("loop_restart")
    assert [(e["item"], e["saved_iterations"]) for e in restarts] == [("0", 2), ("1", 2)]

    # an unchanged item and prompt go on from their state: nothing runs again
    calls = len(case.calls())
    assert case.apply(ralph).code == 0 and len(case.calls()) == calls
    assert [r["status"] for r in case.lines()] == ["cached"] * 3


def test_a_loop_state_is_not_reused_after_the_prompt_changed(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}")
    recipe = case.recipe.read_text().replace(
        "prompt_file: prompt.txt", "prompt: 'Iteration {{ iteration }}'"
    )
    case.recipe.write_text(recipe)
    assert case.apply(ralph).code == 0
    case.recipe.write_text(recipe.replace("'Iteration", "'Now iteration"))
    assert case.apply(ralph).code == 0
    assert case.calls() == [1, 2, 1, 2]
    assert case.lines()[0]["status"] == "done"


def test_an_item_id_with_a_lone_surrogate_gets_a_loop_folder(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"1": {"say": "LOOP_COMPLETE"}}
    items = "for_each: {file: items.jsonl}"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", task_extra=items)
    (tmp_path / "items.jsonl").write_text('{"id": "a\\ud800"}\n')
    result = case.apply(ralph)
    assert result.code == 0, result.err
    (folder,) = (case.out / "build").iterdir()
    assert folder.name.startswith("a_ud800-")


# -- resume after kill -9 -------------------------------------------------------------------


def test_resume_after_kill_9_goes_on_at_the_next_iteration(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"sleep": 0.05, "8": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, max_iterations: 8}")
    process = start_apply(case.recipe, case.out)
    try:
        wait_for(case.iterations() / "0003.answer.md", process)
    finally:
        process.kill()
        process.communicate(timeout=10)
    state = json.loads((case.out / "build" / "state.json").read_text())
    # the state is saved just after the answer: the kill may fall in between
    assert 2 <= state["iteration"] < 8
    assert case.apply(ralph).code == 0
    calls = case.calls()
    assert calls.count(1) == 1, f"the loop started over: {calls}"
    resumed = calls[calls.index(state["iteration"]) + 1 :]
    assert resumed[-(8 - state["iteration"]) :] == list(range(state["iteration"] + 1, 9))
    assert case.lines()[0]["iterations"] == 8
    assert not list(case.out.rglob("*.tmp")), "a temp file was left behind"


def wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{path.name} did not appear within 20 s"
        time.sleep(0.005)


def test_ctrl_c_exits_130_and_the_loop_resumes(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"sleep": 0.05, "5": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}")
    process = start_apply(case.recipe, case.out)
    try:
        wait_for(case.iterations() / "0002.answer.md", process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err.decode()
    state = json.loads((case.out / "build" / "state.json").read_text())
    assert state["stop"] is None and 2 <= state["iteration"] < 5
    assert_stopped(
        case, case.apply(ralph), "done", 5 - state["iteration"], first=state["iteration"] + 1
    )
    assert case.calls().count(1) == 1


def test_an_answer_whose_check_ctrl_c_cut_off_is_judged_on_resume(
    ralph: Ralph, tmp_path: Path
) -> None:
    slow = "{until: {command: [sh, -c, 'touch judging; sleep 30']}}"
    case = loop_case(tmp_path, {}, slow)
    process = start_apply(case.recipe, case.out)
    try:
        wait_for(case.work / "judging", process)  # the answer is in; its check is running
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err.decode()
    case.recipe.write_text(case.recipe.read_text().replace("'touch judging; sleep 30'", "'true'"))
    assert_stopped(case, case.apply(ralph), "done", 0, first=2)
    assert case.calls() == [1], "the answer paid for before Ctrl-C was judged, not asked again"


def test_a_loop_that_hit_max_iterations_goes_on_when_the_limit_is_raised(
    ralph: Ralph, tmp_path: Path
) -> None:
    plan = {"4": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, max_iterations: 2}")
    assert case.apply(ralph).code == 3
    assert case.apply(ralph).code == 3
    assert case.calls() == [1, 2], "a loop at its limit was run again"
    case.recipe.write_text(
        case.recipe.read_text().replace("max_iterations: 2", "max_iterations: 4")
    )
    assert case.apply(ralph).code == 0
    assert case.calls() == [1, 2, 3, 4]
    assert case.lines()[0]["iterations"] == 4


def test_a_finished_loop_writes_its_output_again_without_running(
    ralph: Ralph, server: FakeLLMServer, tmp_path: Path
) -> None:
    server.script(["done: LOOP_COMPLETE"])
    case = LoopCase(tmp_path)
    write_recipe(
        tmp_path,
        f"""
        version: 1
        name: loop-output
        agents:
          writer: {{provider: openai, base_url: "{server.base_url}", model: m,
                    api_key_env: OPENAI_API_KEY}}
        tasks:
          - name: build
            agent: writer
            prompt: "Iteration {{{{ iteration }}}}. Say {MARKER}"
            output: "result-{{{{ iteration }}}}.md"
            loop: {{until: LOOP_COMPLETE, max_iterations: 5}}
        """,
    )
    assert case.apply(ralph).code == 0
    result_file = case.out / "result-1.md"
    assert result_file.read_text() == "done: LOOP_COMPLETE"
    result_file.unlink()
    server.reset()
    assert case.apply(ralph).code == 0
    assert server.counts.get(CHAT, 0) == 0, "a loop that ended done is not run again"
    assert result_file.read_text() == "done: LOOP_COMPLETE"


def test_a_loop_state_is_not_reused_after_a_var_changed(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}")
    recipe = case.recipe.read_text().replace(
        "prompt_file: prompt.txt", "prompt: 'Build {{ vars.feature }}, iteration {{ iteration }}'"
    )
    case.recipe.write_text(recipe.replace("limits: {}", "vars: {feature: login}\nlimits: {}"))
    assert case.apply(ralph).code == 0
    assert case.apply(ralph, "--set", "feature=payments").code == 0
    assert case.calls() == [1, 2, 1, 2], "the payments loop ran: the login one was not reused"
    prompt = (case.iterations() / "0001.prompt.md").read_text()
    assert prompt == "Build payments, iteration 1"


def test_two_items_with_one_key_cannot_share_a_loop(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"1": {"say": "LOOP_COMPLETE"}}
    items = "for_each: [{id: '1', name: alpha}, {name: beta}]"  # beta, at position 1, is '1' too
    prompt = "Item {{ item.name }}, iteration {{ iteration }}\n"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE}", prompt=prompt, task_extra=items)
    assert case.apply(ralph).code == 3
    lines = case.lines()
    assert [(r["item"]["name"], r["status"]) for r in lines] == [
        ("alpha", "done"),
        ("beta", "failed"),
    ]
    assert lines[1]["error"].startswith("an earlier item has the key '1' too")
    assert case.apply(ralph).code == 3
    assert case.calls() == [1], "alpha's finished loop is kept, not paid for again"


def test_a_previous_size_of_nothing_holds_nothing(ralph: Ralph, tmp_path: Path) -> None:
    prompt = "Iteration {{ iteration }}; previous: [{{ previous }}]\n"
    loop = "{until: LOOP_COMPLETE, max_iterations: 2, previous_size: 0B}"
    case = loop_case(tmp_path, {}, loop, prompt=prompt)
    assert case.apply(ralph).code == 3
    assert (case.iterations() / "0002.prompt.md").read_text() == "Iteration 2; previous: []\n"


def test_answers_that_only_end_alike_do_not_stall(ralph: Ralph, tmp_path: Path) -> None:
    # previous_size keeps only their common ending; the stall rule compares them whole
    ending = "\nStill working; next step pending."
    plan = {
        str(n): {"say": f"{word} " * 60 + ending}
        for n, word in enumerate(["alpha", "bravo", "charlie", "delta"], start=1)
    }
    loop = "{until: LOOP_COMPLETE, max_iterations: 4, previous_size: 40B}"
    case = loop_case(tmp_path, plan, loop)
    assert_stopped(case, case.apply(ralph), "max_iterations", 4)


def test_a_state_edited_into_nonsense_is_not_reused(ralph: Ralph, tmp_path: Path) -> None:
    case = loop_case(tmp_path, {"2": {"say": "LOOP_COMPLETE"}}, "{until: LOOP_COMPLETE}")
    assert case.apply(ralph).code == 0
    state = case.out / "build" / "state.json"
    state.write_text(state.read_text().replace('"iteration": 2', '"iteration": "2"'))
    result = case.apply(ralph)
    assert result.code == 0, result.out + result.err
    assert case.calls() == [1, 2, 1, 2]


def test_a_plan_counts_finished_loops_as_cached_and_what_others_have_left(
    ralph: Ralph, tmp_path: Path
) -> None:
    prompt = "Item {{ item.id }}, iteration {{ iteration }}\n"
    items = "for_each: [{id: a}, {id: b}]"
    loop = "{until: LOOP_COMPLETE, max_iterations: 5}"
    case = loop_case(
        tmp_path, {"2": {"say": "LOOP_COMPLETE"}}, loop, prompt=prompt, task_extra=items
    )
    assert case.apply(ralph).code == 0

    def planned() -> tuple[int, dict[str, Any]]:
        shown = ralph(
            "plan", str(case.recipe), "--out", str(case.out), "-f", "json", "--detailed-exitcode"
        )
        return shown.code, json.loads(shown.out)["tasks"][0]

    code, task = planned()
    assert (code, task["cached"], task["requests"]) == (0, 2, 0)
    state = case.out / "build" / "b" / "state.json"  # b as a stop would have left it
    data = json.loads(state.read_text())
    data.update(stop=None, answer=None, iteration=1)
    state.write_text(json.dumps(data))
    code, task = planned()
    assert (code, task["cached"], task["requests"], task["max_requests"]) == (2, 1, 1, 4)


def test_a_loops_worst_case_has_previous_and_history_at_their_full_size(
    ralph: Ralph, tmp_path: Path
) -> None:
    prompt = "Iteration {{ iteration }}\n{{ previous }}\n{{ history | join('\n') }}\n"
    loop = "{until: LOOP_COMPLETE, max_iterations: 3, history: 2, previous_size: 1KB}"
    case = loop_case(tmp_path, {}, loop, prompt=prompt)
    shown = ralph("plan", str(case.recipe), "--out", str(case.out), "-f", "json")
    task = json.loads(shown.out)["tasks"][0]
    assert task["max_requests"] == 3
    assert task["max_input_tokens"] >= 3 * 3 * 1000  # previous and two history entries, 3 times


def test_a_huge_previous_size_is_priced_not_built(ralph: Ralph, tmp_path: Path) -> None:
    prompt = "Iteration {{ iteration }}\n{{ previous }}\n"
    loop = "{until: LOOP_COMPLETE, max_iterations: 2, previous_size: 100GB}"
    case = loop_case(tmp_path, {}, loop, prompt=prompt)
    shown = ralph("plan", str(case.recipe), "--out", str(case.out), "-f", "json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["tasks"][0]["max_input_tokens"] >= 2 * 100 * 10**9


def test_a_second_ctrl_c_kills_an_until_command_that_ignores_the_first(
    ralph: Ralph, tmp_path: Path
) -> None:
    check = tmp_path / "check.py"  # ignores SIGTERM, as a stuck test runner might
    check.write_text(
        "import os, pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(tmp_path / 'checking')!r}).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    case = loop_case(tmp_path, {}, f"{{until: {{command: [{sys.executable}, {check}]}}}}")
    process = start_apply(case.recipe, case.out)
    try:
        wait_for(tmp_path / "checking", process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # the check ignores the SIGTERM that follows
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130
    assert gone(int((tmp_path / "checking").read_text())), "the check outlived ralph"


def test_a_loops_files_are_never_written_through_links_planted_in_the_output_folder(
    ralph: Ralph, tmp_path: Path
) -> None:
    """A clone can carry an output folder with links in it: state and iteration files are
    replaced, not written through, and a linked folder that leads out is refused."""
    case = loop_case(tmp_path, {"1": {"say": "LOOP_COMPLETE"}}, "{until: LOOP_COMPLETE}")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (case.out / "build" / "iterations").mkdir(parents=True)
    (case.out / "build" / "state.json").symlink_to(victim)
    (case.out / "build" / "iterations" / "0001.prompt.md").symlink_to(victim)
    assert case.apply(ralph).code == 0
    assert victim.read_text() == "precious"
    assert not (case.out / "build" / "state.json").is_symlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in [case.out / "build", case.out / "build.jsonl"]:
        subprocess.run(["rm", "-rf", str(path)], check=True)
    (case.out / "build").symlink_to(elsewhere, target_is_directory=True)
    result = case.apply(ralph)
    assert result.code == 1, result.out
    assert result.err.endswith(": a link on the way leads out of the output folder\n")
    assert list(elsewhere.iterdir()) == []
