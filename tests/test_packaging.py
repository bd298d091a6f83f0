"""The wheel the Dockerfile installs builds, and carries the schema and the `ralph` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_wheel_builds_with_schema_and_entry_point(tmp_path: Path) -> None:
    # build from a copy, as the Dockerfile does: nothing but these files goes into the wheel,
    # and the checkout gets no build/ or egg-info of its own
    source = tmp_path / "src"
    shutil.copytree(ROOT / "ralph", source / "ralph", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("ralph-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "ralph/schemas/recipe.schema.json" in names
        assert "ralph/py.typed" in names
        assert "ralph/testing/fake_server.py" in names
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        assert "ralph = ralph.cli:main" in archive.read(entry_points).decode()
        packaged = archive.read("ralph/schemas/recipe.schema.json")
    assert packaged == (ROOT / "schemas" / "recipe.schema.json").read_bytes()


def test_dockerfile_installs_that_wheel_as_a_non_root_user() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert "RUN python -m build --wheel --outdir /dist" in lines
    assert any(line.startswith("USER ") and line != "USER root" for line in lines)
    assert 'ENTRYPOINT ["ralph"]' in lines
