"""dvc.yaml's code dependencies are exactly the source files each stage runs: a stage run in a
fresh process imports precisely the `cds` modules (`cds.pipeline` included) its deps list (a
directory stands for every module in it), so editing any of them makes that stage stale and
editing any other leaves it alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cds.pipeline.stage_graph import STAGES

pytestmark = pytest.mark.slow  # real pipelines: run by CI, not in the edit-test loop

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cds",)

#: Run one stage in this process's environment and print the source files it imported.
PROBE = """
import importlib, json, sys
from pathlib import Path
from cds.config import load_params
from cds.pipeline.layout import Layout
layout = Layout(Path.cwd())
importlib.import_module("cds.pipeline.stages." + sys.argv[1]).run(
    load_params(layout.params), layout, progress=False
)
root = Path(sys.argv[2])
print(json.dumps(sorted(
    Path(m.__file__).resolve().relative_to(root).as_posix()
    for name, m in list(sys.modules.items())
    if name.split(".")[0] == "cds" and getattr(m, "__file__", None)
)))
"""


def declared_code(stage: str) -> set[str]:
    """The .py files a stage's deps name (directories expanded), relative to the checkout."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    files: set[str] = set()
    for dep in deps:
        if dep.split("/")[0] not in PACKAGES:
            continue
        path = ROOT / dep
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        assert found and all(p.is_file() for p in found), f"{stage}: {dep} does not exist"
        files |= {p.relative_to(ROOT).as_posix() for p in found}
    return files


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_are_the_modules_it_runs(stage, trained_project, tmp_path):
    project = Path(shutil.copytree(trained_project, tmp_path / "p", symlinks=True))
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, stage, str(ROOT)],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    imported = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    declared = declared_code(stage)
    assert imported - declared == set(), f"{stage} runs modules dvc.yaml does not list"
    assert declared - imported == set(), f"{stage} lists modules it does not run"


def test_every_stage_depends_on_the_project_inputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert all("inputs" in stages[stage]["deps"] for stage in STAGES)
    assert (ROOT / "inputs").is_dir()
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored  # byte code never makes code dependencies stale
