"""Git checkpoints of a loop's workdir, in real repositories in tmp dirs: the commits ralph makes,
rollbacks that restore files, and the repositories (or folders) it must leave alone."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from ralph.run.checkpoint import loop_folder
from tests.conftest import Result
from tests.run.loop_fixtures.helpers import LoopCase, loop_case

Ralph = Callable[..., Result]
USER = ("-c", "user.name=someone", "-c", "user.email=someone@example.com")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *USER, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def repository(case: LoopCase, files: dict[str, str]) -> None:
    """Make the agent's workdir a git repository with one commit of `files` by its user."""
    git(case.work, "init", "-q", ".")
    for name, text in files.items():
        (case.work / name).write_text(text)
    git(case.work, "add", "-A")
    git(case.work, "commit", "-q", "-m", "start")


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


def test_commits_every_n_iterations_and_at_the_end(ralph: Ralph, tmp_path: Path) -> None:
    plan = {str(n): {"write": {f"step{n}.txt": str(n)}} for n in range(1, 6)}
    plan["5"]["say"] = "LOOP_COMPLETE"
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, checkpoint: {every: 2}}")
    repository(case, {"README.md": "hello\n"})
    result = case.apply(ralph)
    assert result.code == 0, result.out
    assert subjects(case.work) == [
        "ralph: build iteration 5",
        "ralph: build iteration 4",
        "ralph: build iteration 2",
        "start",
    ]
    assert git(case.work, "log", "-1", "--format=%an <%ae> / %cn <%ce>") == (
        "ralph <ralph@localhost> / ralph <ralph@localhost>"
    )
    assert git(case.work, "show", "--name-only", "--format=", "HEAD~1").split() == [
        "step3.txt",
        "step4.txt",
    ]
    assert git(case.work, "status", "--porcelain") == ""
    state = json.loads((case.out / "build" / "state.json").read_text())
    assert state["checkpoint"] == git(case.work, "rev-parse", "HEAD")
    assert [e["status"] for e in case.events("loop_checkpoint")] == ["committed"] * 3


def test_only_the_workdir_is_committed(ralph: Ralph, tmp_path: Path) -> None:
    """A workdir inside a bigger repository: the user's other changes stay uncommitted."""
    plan = {"1": {"write": {"made.txt": "by the agent"}, "say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, checkpoint: {every: 1}}")
    git(tmp_path, "init", "-q", ".")
    (tmp_path / "mine.txt").write_text("the user's work in progress")
    result = case.apply(ralph)
    assert result.code == 0, result.out
    assert subjects(tmp_path) == ["ralph: build iteration 1"]
    assert git(tmp_path, "show", "--name-only", "--format=", "HEAD").split() == ["work/made.txt"]
    assert "?? mine.txt" in git(tmp_path, "status", "--porcelain").splitlines()


def test_rollback_after_consecutive_failures_restores_the_checkpoint(
    ralph: Ralph, tmp_path: Path
) -> None:
    plan = {
        "1": {"write": {"code.py": "good = True\n"}},
        "*": {"write": {"code.py": "broken(\n", "junk.txt": "x"}, "exit": 1},
    }
    loop = """
        until: LOOP_COMPLETE
        max_consecutive_failures: 2
        checkpoint: {every: 1, on_failure: rollback}
    """
    case = loop_case(tmp_path, plan, loop)
    repository(case, {"code.py": "good = False\n"})
    result = case.apply(ralph)
    assert result.code == 3, result.out
    assert case.lines()[0]["stop"] == "max_consecutive_failures"
    assert (case.work / "code.py").read_text() == "good = True\n"
    assert not (case.work / "junk.txt").exists()
    assert subjects(case.work) == ["ralph: build iteration 1", "start"]
    assert "ralph: build rollback after iteration 3" in git(case.work, "stash", "list")
    (rollback,) = case.events("loop_rollback")
    assert rollback["status"].startswith("rolled back to ")


def test_no_rollback_when_head_is_not_ralphs_commit(ralph: Ralph, tmp_path: Path) -> None:
    commit = ["git", *USER, "commit", "-qam", "the agent's own commit"]
    plan = {
        "1": {"write": {"code.py": "good = True\n"}},
        "2": {"write": {"code.py": "committed by the agent\n"}, "run": commit, "exit": 1},
        "*": {"write": {"code.py": "after that\n"}, "exit": 1},
    }
    loop = """
        until: LOOP_COMPLETE
        max_consecutive_failures: 2
        checkpoint: {every: 1, on_failure: rollback}
    """
    case = loop_case(tmp_path, plan, loop)
    repository(case, {"code.py": "good = False\n"})
    assert case.apply(ralph).code == 3
    assert (case.work / "code.py").read_text() == "after that\n"
    assert subjects(case.work) == [
        "the agent's own commit",
        "ralph: build iteration 1",
        "start",
    ]
    assert git(case.work, "stash", "list") == ""
    (rollback,) = case.events("loop_rollback")
    assert rollback["status"].startswith("skipped: HEAD is ")


def test_a_folder_that_is_not_a_repository_is_left_alone(ralph: Ralph, tmp_path: Path) -> None:
    plan = {"2": {"write": {"made.txt": "x"}, "say": "LOOP_COMPLETE"}}
    case = loop_case(tmp_path, plan, "{until: LOOP_COMPLETE, checkpoint: {every: 1}}")
    result = case.apply(ralph)
    assert result.code == 0, result.out
    assert sorted(p.name for p in case.work.iterdir()) == ["made.txt"]
    assert not (tmp_path / ".git").exists()
    (event,) = case.events("loop_checkpoint")
    assert event["status"] == "not a git repository"


def test_a_key_with_a_lone_surrogate_still_gets_its_own_folder(tmp_path: Path) -> None:
    folders = {loop_folder(tmp_path, "t", key) for key in ("a\ud800", "a\udc00", "a_")}
    assert len(folders) == 3 and all(f.parent == tmp_path / "t" for f in folders)
    assert loop_folder(tmp_path, "t", "a\ud800").name.startswith("a_-")


def test_ralphs_own_files_are_never_committed_or_stashed(ralph: Ralph, tmp_path: Path) -> None:
    """The workdir holds the output folder and the response cache: they stay ralph's."""
    plan = {
        "1": {"write": {"code.py": "good = True\n"}},
        "*": {"write": {"code.py": "broken(\n"}, "exit": 1},
    }
    loop = """
        until: LOOP_COMPLETE
        max_consecutive_failures: 2
        checkpoint: {every: 1, on_failure: rollback}
    """
    case = loop_case(tmp_path, plan, loop)
    case.recipe.write_text(case.recipe.read_text().replace("workdir: work", "workdir: ."))
    git(tmp_path, "init", "-q", ".")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "start")
    result = case.apply(ralph)
    assert result.code == 3, result.out
    start = git(tmp_path, "rev-list", "--max-parents=0", "HEAD")
    committed = git(tmp_path, "log", "--name-only", "--format=", f"{start}..HEAD").split()
    stashed = git(tmp_path, "stash", "show", "--include-untracked", "--name-only", "stash@{0}")
    assert "code.py" in committed and "code.py" in stashed.split()
    for path in [*committed, *stashed.split()]:
        assert not path.startswith((".ralph/", "out/", "log.jsonl")), path
    assert (case.out / "build" / "state.json").is_file()
    assert (tmp_path / ".ralph" / "cache" / "cache.db").is_file()
    untracked = git(tmp_path, "status", "--porcelain", "--untracked-files=normal").splitlines()
    assert {"?? .ralph/", "?? log.jsonl", "?? out/"} <= set(untracked)
