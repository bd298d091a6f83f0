"""The deployment examples stay true: examples/github-actions (a sharded workflow) and
examples/kubernetes (an Indexed Job). No network and no cluster: the YAML is parsed, checked
against the ralph command lines it holds, and its shell snippets run with a stand-in `ralph`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ralph.secrets import looks_like_secret
from tests.conftest import ROOT, Result

GHA = ROOT / "examples" / "github-actions"
K8S = ROOT / "examples" / "kubernetes"
WORKFLOW = GHA / "ralph-sharded.yml"
MANIFESTS = ("secret.yaml", "configmap.yaml", "job.yaml", "merge-job.yaml")
YAML_FILES = sorted(
    p for folder in (GHA, K8S) for p in folder.iterdir() if p.suffix in {".yaml", ".yml"}
)

K8S_SHARD = re.compile(r"--shard \$\(\(JOB_COMPLETION_INDEX \+ 1\)\)/(\d+)")
GHA_SHARD = re.compile(r"--shard \$\{\{ matrix\.shard \}\}/(\d+)")
SERVE = re.compile(r"--serve [0-9.]+:(\d+)")
OUT = re.compile(r"--out (\S+)")


def load_all(path: Path) -> list[Any]:
    """The documents of `path`. Kubernetes reads manifests as YAML 1.1, where `0400` is octal
    (256), and ruamel's default, YAML 1.2, reads decimal 400; its load_all does not keep a version
    for every document, so each manifest is loaded on its own. GitHub reads `on:` as a string, as
    YAML 1.2 does (YAML 1.1 would make it True)."""
    text = path.read_text("utf-8")
    if path.parent != K8S or path.name not in MANIFESTS:
        return list(YAML(typ="safe", pure=True).load_all(text))
    documents = []
    for part in re.split(r"^---[ \t]*$", text, flags=re.MULTILINE):
        yaml = YAML(typ="safe", pure=True)
        yaml.version = (1, 1)
        if (document := yaml.load(part)) is not None:
            documents.append(document)
    return documents


def load(path: Path) -> Any:
    (document,) = load_all(path)
    return document


# -- every file -----------------------------------------------------------------------------------


def test_the_examples_are_there() -> None:
    names = {p.name for p in YAML_FILES}
    assert {"ralph-sharded.yml", "recipe.yaml", *MANIFESTS} <= names
    assert (GHA / "README.md").is_file() and (K8S / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_all(path)
    assert documents and all(isinstance(d, dict) for d in documents)
    if path.name in MANIFESTS:
        assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in documents)


@pytest.mark.parametrize("recipe", [GHA / "recipe.yaml", K8S / "recipe.yaml"], ids=["gha", "k8s"])
def test_the_recipes_validate(recipe: Path, ralph: Callable[..., Result]) -> None:
    result = ralph("validate", str(recipe))
    assert result.code == 0, result.out + result.err
    assert result.out.strip().endswith("1 recipe checked, 0 invalid, 0 errors")


def test_no_file_holds_anything_shaped_like_a_key() -> None:
    files = [p for folder in (GHA, K8S) for p in sorted(folder.rglob("*")) if p.is_file()]
    assert len(files) >= 10
    assert [p.name for p in files if looks_like_secret(p.read_text("utf-8"))] == []


# -- a stand-in ralph -----------------------------------------------------------------------------

FAKE_RALPH = """\
#!/bin/sh
# records its arguments; `plan` exits $FAKE_PLAN_EXIT; `summary merge ... -o FILE` writes FILE
# and exits $FAKE_MERGE_EXIT
echo "$*" >> "$RALPH_CALLS"
case "$1" in
  plan) echo "8 requests to send"; exit "${FAKE_PLAN_EXIT:-0}" ;;
  summary) while [ $# -gt 0 ]; do [ "$1" = -o ] && echo '{}' > "$2"; shift; done
           exit "${FAKE_MERGE_EXIT:-0}" ;;
esac
"""


@pytest.fixture
def fake_ralph(tmp_path: Path) -> dict[str, str]:
    """An environment whose `ralph` is FAKE_RALPH, writing its calls to $RALPH_CALLS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ralph"
    script.write_text(FAKE_RALPH)
    script.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RALPH_CALLS": str(tmp_path / "calls.txt"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
    }


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["RALPH_CALLS"])
    return path.read_text().splitlines() if path.exists() else []


# -- kubernetes -----------------------------------------------------------------------------------


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in MANIFESTS:
        for document in load_all(K8S / name):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def jobs() -> list[dict[str, Any]]:
    return [doc for (kind, _), doc in resources().items() if kind == "Job"]


def shard_job() -> dict[str, Any]:
    (job,) = [j for j in jobs() if j["spec"].get("completionMode") == "Indexed"]
    return job


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def line(container: dict[str, Any]) -> str:
    return " ".join([*container.get("command", []), *container.get("args", [])])


def ralph_container() -> dict[str, Any]:
    (container,) = [c for c in pod(shard_job())["containers"] if "ralph apply" in line(c)]
    return container


def shards_in_job() -> int:
    match = K8S_SHARD.search(line(ralph_container()))
    assert match, line(ralph_container())
    return int(match[1])


def volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in spec["volumes"] if v["name"] == name]
    return found


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def test_the_job_is_indexed_with_one_pod_per_shard() -> None:
    spec = shard_job()["spec"]
    n = shards_in_job()
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == n
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    command = line(ralph_container())
    assert "JOB_COMPLETION_INDEX" in command
    assert "--summary-file /out/shard-$((JOB_COMPLETION_INDEX + 1)).json" in command
    (merge,) = [line(c) for j in jobs() for c in pod(j)["containers"] if "summary merge" in line(c)]
    assert "ralph summary merge /out/shard-*.json -o /out/run.json" in merge
    assert f"-eq {n} ]" in merge


def test_each_pod_runs_its_own_shard(fake_ralph: dict[str, str]) -> None:
    container = ralph_container()
    n = shards_in_job()
    for index in range(n):
        env = {**fake_ralph, "JOB_COMPLETION_INDEX": str(index)}
        done = subprocess.run(
            [*container["command"], *container["args"]], env=env, check=False, timeout=30
        )
        assert done.returncode == 0
    runs = [r.split() for r in calls(fake_ralph)]
    assert [r[r.index("--shard") + 1] for r in runs] == [f"{k}/{n}" for k in range(1, n + 1)]
    summaries = [r[r.index("--summary-file") + 1] for r in runs]
    assert summaries == [f"/out/shard-{k}.json" for k in range(1, n + 1)]


def test_probes_and_scrape_annotations_use_the_serve_port() -> None:
    container = ralph_container()
    match = SERVE.search(line(container))
    assert match
    port = int(match[1])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port}
    assert port in [p["containerPort"] for p in container["ports"]]
    annotations = shard_job()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_configmap_holds_the_recipe_and_its_items() -> None:
    configmap = resources()[("ConfigMap", "ralph-recipe")]
    assert configmap["data"] == {
        "recipe.yaml": (K8S / "recipe.yaml").read_text("utf-8"),
        "items.jsonl": (K8S / "items.jsonl").read_text("utf-8"),
    }
    container = ralph_container()
    recipe = re.search(r"ralph apply (\S+)", line(container))
    assert recipe
    mount = mounts(container)[str(Path(recipe[1]).parent)]
    assert volume(pod(shard_job()), mount["name"])["configMap"]["name"] == "ralph-recipe"


def test_the_key_is_a_0400_file_made_from_the_secret(tmp_path: Path) -> None:
    secret = resources()[("Secret", "ralph-openai")]
    assert secret["stringData"] == {"openai-api-key": "REPLACE_ME"}
    spec = pod(shard_job())
    (secret_volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert secret_volume["secret"] == {"secretName": "ralph-openai", "defaultMode": 0o400}
    key_file = Path(load(K8S / "recipe.yaml")["agents"]["writer"]["api_key_file"])
    # ralph's container sees the copy, read-only, and not the Secret itself
    ralph_mounts = mounts(ralph_container())
    assert ralph_mounts[str(key_file.parent)]["readOnly"] is True
    assert secret_volume["name"] not in [m["name"] for m in ralph_mounts.values()]
    # the init container's copy, run on local folders, is a 0400 file of the user who made it
    (init,) = spec["initContainers"]
    script = line(init).removeprefix("sh -c ")
    for mount in mounts(init):
        (tmp_path / mount.strip("/")).mkdir()
        script = script.replace(f"{mount}/", f"{tmp_path}/{mount.strip('/')}/")
    source = tmp_path / "secret" / "openai-api-key"
    source.write_text("REPLACE_ME")
    source.chmod(0o440)  # what the kubelet makes of defaultMode 0400 with fsGroup
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    copy = tmp_path / key_file.parent.name / key_file.name
    assert stat.S_IMODE(copy.stat().st_mode) == 0o400


def test_the_pods_are_locked_down() -> None:
    for job in jobs():
        spec = pod(job)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys()
    # everything ralph writes lands on a volume: outputs, the cache, temporary files
    container = ralph_container()
    spec = pod(shard_job())
    written = mounts(container)
    out = OUT.search(line(container))
    assert out and "persistentVolumeClaim" in volume(spec, written[out[1]]["name"])
    (cache_dir,) = [e["value"] for e in container["env"] if e["name"] == "RALPH_CACHE_DIR"]
    assert "emptyDir" in volume(spec, written[cache_dir]["name"])
    assert "/tmp" in written


# -- github actions -------------------------------------------------------------------------------


def workflow() -> dict[str, Any]:
    return load(WORKFLOW)


def step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    (found,) = [s for s in job["steps"] if s.get("uses", "").startswith(uses)]
    return found


def run_step(job: dict[str, Any], text: str) -> dict[str, Any]:
    (found,) = [s for s in job["steps"] if text in s.get("run", "")]
    return found


def matrix_job() -> tuple[str, dict[str, Any]]:
    (found,) = [(k, j) for k, j in workflow()["jobs"].items() if "matrix" in j.get("strategy", {})]
    return found


def test_the_workflow_runs_on_pull_requests_and_by_hand() -> None:
    triggers = workflow()["on"]
    assert {"pull_request", "workflow_dispatch"} <= triggers.keys()
    assert workflow()["env"]["RECIPE"] == str((GHA / "recipe.yaml").relative_to(ROOT))
    assert workflow()["env"]["RECIPE_DIR"] == str(GHA.relative_to(ROOT))


def test_the_matrix_is_one_job_per_shard() -> None:
    _, job = matrix_job()
    apply = run_step(job, "ralph apply")
    match = GHA_SHARD.search(apply["run"])
    assert match, apply["run"]
    n = int(match[1])
    assert job["strategy"]["matrix"]["shard"] == list(range(1, n + 1))
    assert job["strategy"]["fail-fast"] is False
    assert "--summary-file shard-${{ matrix.shard }}.json --out out" in apply["run"]
    assert apply["env"] == {"OPENAI_API_KEY": "${{ secrets.OPENAI_API_KEY }}"}
    upload = step(job, "actions/upload-artifact@v4")
    assert upload["with"]["name"] == "shard-${{ matrix.shard }}"
    assert upload["with"]["path"].splitlines() == ["out/", "shard-${{ matrix.shard }}.json"]
    assert upload["if"] == "${{ !cancelled() }}"


def test_a_merge_job_joins_the_shard_summaries() -> None:
    name, _ = matrix_job()
    (merge,) = [j for j in workflow()["jobs"].values() if "download-artifact" in str(j["steps"])]
    assert merge["needs"] in (name, [name])
    assert "!cancelled()" in merge["if"]
    download = step(merge, "actions/download-artifact@v4")
    assert download["with"]["merge-multiple"] is True
    assert download["with"]["pattern"] == "shard-*"
    assert "ralph summary merge shard-*.json -o run.json" in run_step(merge, "summary merge")["run"]


def test_the_cache_is_per_shard_and_keyed_on_the_recipe() -> None:
    _, job = matrix_job()
    restore = step(job, "actions/cache/restore@v4")
    save = step(job, "actions/cache/save@v4")
    assert restore["with"]["path"] == save["with"]["path"] == "${{ env.RECIPE_DIR }}/.ralph/cache"
    key = restore["with"]["key"]
    assert "${{ hashFiles(env.RECIPE) }}" in key and "${{ matrix.shard }}" in key
    assert all(k and key.startswith(k) for k in restore["with"]["restore-keys"].splitlines())
    assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}"
    assert save["if"] == "${{ !cancelled() }}"
    steps = job["steps"]
    assert steps.index(restore) < steps.index(run_step(job, "ralph apply")) < steps.index(save)


def check_job() -> dict[str, Any]:
    (found,) = [j for j in workflow()["jobs"].values() if "pull_request" in j.get("if", "")]
    return found


def bash_step(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub runs it on Linux: `bash -e {0}`."""
    assert "${{" not in script
    path = cwd / "step.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", "-e", str(path)], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def test_pull_requests_are_validated_with_annotations() -> None:
    validate = run_step(check_job(), "ralph validate")
    assert validate["run"].startswith("ralph validate --format github ")


@pytest.mark.parametrize(("plan_exit", "step_exit"), [(0, 0), (2, 0), (1, 1)])
def test_the_plan_step_accepts_exit_2(
    plan_exit: int, step_exit: int, fake_ralph: dict[str, str], tmp_path: Path
) -> None:
    plan = run_step(check_job(), "ralph plan")
    env = {**fake_ralph, "FAKE_PLAN_EXIT": str(plan_exit), "RECIPE": "recipe.yaml"}
    done = bash_step(plan["run"], env, tmp_path)
    assert done.returncode == step_exit, done.stdout + done.stderr
    assert calls(fake_ralph) == ["plan recipe.yaml --detailed-exitcode"]
    assert "8 requests to send" in done.stdout
    assert "8 requests to send" in Path(fake_ralph["GITHUB_STEP_SUMMARY"]).read_text()


@pytest.mark.parametrize(
    ("summaries", "merge_exit", "step_exit"), [(4, 0, 0), (4, 3, 3), (4, 4, 4), (3, 0, 1)]
)
def test_the_merge_step_exits_with_the_run_and_fails_on_a_missing_summary(
    summaries: int, merge_exit: int, step_exit: int, fake_ralph: dict[str, str], tmp_path: Path
) -> None:
    (merge,) = [j for j in workflow()["jobs"].values() if "download-artifact" in str(j["steps"])]
    assert len(matrix_job()[1]["strategy"]["matrix"]["shard"]) == 4
    for k in range(1, summaries + 1):
        (tmp_path / f"shard-{k}.json").write_text("{}")
    env = {**fake_ralph, "FAKE_MERGE_EXIT": str(merge_exit)}
    done = bash_step(run_step(merge, "summary merge")["run"], env, tmp_path)
    assert done.returncode == step_exit, done.stdout + done.stderr
    assert (tmp_path / "run.json").exists()
    files = " ".join(f"shard-{k}.json" for k in range(1, summaries + 1))
    assert calls(fake_ralph) == [f"summary merge {files} -o run.json"]
    upload = step(merge, "actions/upload-artifact@v4")
    assert upload["if"] == "${{ !cancelled() }}"


@pytest.mark.parametrize(
    ("summaries", "merge_exit", "job_exit"), [(4, 0, 0), (4, 3, 0), (4, 4, 0), (4, 1, 1), (3, 0, 1)]
)
def test_the_merge_job_fails_only_when_the_merge_does(
    summaries: int, merge_exit: int, job_exit: int, fake_ralph: dict[str, str], tmp_path: Path
) -> None:
    (merge,) = [c for j in jobs() for c in pod(j)["containers"] if "summary merge" in line(c)]
    assert shards_in_job() == 4
    script = merge["args"][0].replace("/out/", f"{tmp_path}/")
    for k in range(1, summaries + 1):
        (tmp_path / f"shard-{k}.json").write_text("{}")
    env = {**fake_ralph, "FAKE_MERGE_EXIT": str(merge_exit)}
    done = subprocess.run(
        [*merge["command"], script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == job_exit, done.stdout + done.stderr
    assert (tmp_path / "run.json").exists()


def test_the_readmes_name_the_commands_they_explain() -> None:
    gha = (GHA / "README.md").read_text("utf-8")
    k8s = (K8S / "README.md").read_text("utf-8")
    assert "ralph summary merge shard-*.json -o run.json" in gha
    assert "ralph summary merge /out/shard-*.json -o /out/run.json" in k8s
    assert f"--shard $((JOB_COMPLETION_INDEX + 1))/{shards_in_job()}" in k8s
