"""`dvc repro` on a tiny project in a temporary git repository (the real DVC CLI): the first
run builds every stage, the second is a no-op, a param change re-runs exactly the stages that
depend on it, and `dvc metrics show|diff` and `dvc exp run --set-param` work."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cds.config import Params, load_params
from cds.pipeline.dvc import dvc, is_clean
from cds.pipeline.layout import Layout
from cds.pipeline.stage_graph import STAGES

pytestmark = pytest.mark.slow  # real pipelines: run by CI, not in the edit-test loop

PROJECT = Path(__file__).resolve().parents[1]


def test_committed_params_file_holds_every_key_at_its_default():
    """DVC reads each stage's params from params.yaml itself, so the committed file must hold
    every key (a missing one makes `cds run` rewrite the file); it is the embedded default, so
    its values are the model's defaults with gmm9's own preset (its target's)."""
    committed = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert committed == load_params(None, preset="gmm9").model_dump(mode="json")
    assert Params().teacher.stopping.rule == "plateau" != committed["teacher"]["stopping"]["rule"]


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def set_param(root: Path, dotted: str, value: object) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_repro_builds_then_noop_then_reruns_only_what_changed(project):
    layout = Layout(project)
    code, out = dvc(project, "repro", echo=False)
    assert code == 0, out
    assert ran_stages(out) == list(STAGES)
    outputs = (layout.manifest, layout.reference_validation, layout.reference_test)
    for path in (*outputs, layout.teacher, layout.bank, layout.student):
        assert path.is_file(), path
    metrics = json.loads(layout.metrics.read_text())
    assert metrics["method"] == "cdds" and metrics["nfe"] == 1
    assert metrics["sinkhorn"] > 0 and metrics["sinkhorn_floor"] > 0

    code, out = dvc(project, "repro", echo=False)
    assert code == 0 and ran_stages(out) == [] and "up to date" in out

    set_param(project, "evaluation.floor_repeats", 2)
    code, out = dvc(project, "repro", echo=False)
    assert code == 0 and ran_stages(out) == ["evaluate"], out

    set_param(project, "teacher.optim.iterations", 30)
    code, out = dvc(project, "repro", echo=False)
    assert code == 0 and ran_stages(out) == ["teacher", "fragments", "student", "evaluate"], out
    assert is_clean(project)

    code, out = dvc(project, "metrics", "show", "--json", echo=False)
    assert code == 0 and '"sinkhorn_ratio"' in out

    # The researcher's loop: commit a result, try a param in an experiment, diff the metrics.
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "result"],
        cwd=project,
        check=True,
    )
    code, out = dvc(project, "exp", "run", "--set-param", "evaluation.floor_repeats=3", echo=False)
    assert code == 0 and ran_stages(out) == ["evaluate"], out
    code, out = dvc(project, "metrics", "diff", "--json", echo=False)
    assert code == 0 and "sinkhorn_floor" in json.loads(out)["data/eval/metrics.json"]
