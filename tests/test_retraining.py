"""Retraining notices what changed: the code, a user density module and a data file are DVC
dependencies, so an edit makes exactly the stages that use them stale, an unchanged re-run does
nothing, a scheduled `retrain` after new data retrains and registers a new version (and after
no change registers none), and a forced `dvc repro -f teacher` trains again with the new code.

One tiny project (real git, DVC, Prefect API server and MLflow SQLite registry) shared by the
tests below, in order. Its target is a user module in `inputs/` reading a data file there, and
its `cds` package is a copy (imported by its stages through PYTHONPATH), so that the tests can
edit code without touching the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from cds.checkpoints import load_checkpoint
from cds.pipeline.dvc import dvc, is_clean
from cds.pipeline.dvc_lock import lock_hashes
from cds.pipeline.flows import retrain
from cds.pipeline.layout import Layout
from cds.pipeline.stage_graph import STAGES
from cds.pipeline.timings import read_timings
from tests.conftest import make_project

pytestmark = pytest.mark.slow  # real pipelines: run by CI, not in the edit-test loop

DENSITY = '''"""N(m, I) in two dimensions, its mean m read from a CSV line "m1,m2"."""
import math
from pathlib import Path

import torch


class Shifted:
    dim = 2
    log_Z = 0.0

    def __init__(self, data: str):
        self.mean = torch.tensor([float(v) for v in Path(data).read_text().split(",")])

    def log_prob(self, x):
        return -0.5 * ((x - self.mean) ** 2).sum(-1) - math.log(2 * math.pi)

    def sample(self, n, generator):
        return self.mean + torch.randn(n, 2, generator=generator)
'''


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True
    )


def stale(root: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    code, out = dvc(root, "status", "--json", echo=False)
    assert code == 0, out
    return set(json.loads(out.strip().splitlines()[-1]))


def would_run(root: Path, *args: str) -> list[str]:
    """The stages `dvc repro --dry` would run."""
    code, out = dvc(root, "repro", "--dry", *args, echo=False)
    assert code == 0, out
    return re.findall(r"Running stage '(\w+)'", out)


def edited(path: Path, text: str) -> str:
    """Append `text` to `path`; returns the original content (to restore)."""
    original = path.read_text()
    path.write_text(original + text)
    return original


@pytest.fixture(scope="module")
def project(prefect_api, tmp_path_factory):
    root = make_project(
        tmp_path_factory.mktemp("retrain") / "project",
        "target.name=dens:Shifted",
        "target.options.data=inputs/mean.csv",
    )
    (root / "inputs" / "dens.py").write_text(DENSITY)
    (root / "inputs" / "mean.csv").write_text("1.0,-1.0\n")
    (root / "cds").unlink()  # a private copy of the code, which the tests edit
    shutil.copytree(Path(__import__("cds").__file__).parent, root / "cds")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "user target")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("PYTHONPATH", str(root))  # stage processes import the copy
        yield root


def test_first_scheduled_run_trains_everything_and_logs_live(project):
    summary = retrain(str(project), echo=False)
    assert summary["stages"] == dict.fromkeys(STAGES, "ran")
    assert summary["version"] == summary["champion"] == "1"
    assert summary["dvc_status_clean"]
    # the training stages logged into nested runs of the pipeline run while they ran
    children = mlflow.search_runs(
        experiment_ids=[mlflow.get_run(summary["run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'",
        output_format="list",
    )
    assert sorted(c.info.run_name for c in children) == sorted(STAGES)
    live = {c.info.run_name for c in children if c.data.tags.get("cds.live") == "true"}
    assert live == {"teacher", "student"}
    teacher = next(c for c in children if c.info.run_name == "teacher")
    curve = mlflow.MlflowClient().get_metric_history(teacher.info.run_id, "loss")
    assert len(curve) == 40 and curve[-1].step == 40  # tiny run: one point per iteration
    assert teacher.info.status == "FINISHED"


def test_live_logging_thins_the_curve_and_marks_failed_stages(project):
    """A 5000-iteration stage logs its loss every 5th iteration (window means), in batches;
    a stage that raises ends its live run FAILED."""
    from cds.pipeline.live_tracking import PARENT_RUN_ENV, LiveRun, stage_monitor

    client = mlflow.MlflowClient()
    parent = client.create_run(client.get_experiment_by_name("cds").experiment_id)
    run = client.create_run(parent.info.experiment_id)
    live = LiveRun(client, run.info.run_id, iterations=5000)
    for step in range(1, 5001):
        live.iteration(step, float(step % 5), 0.1, 0)
    live.flush()
    curve = client.get_metric_history(run.info.run_id, "loss")
    assert len(curve) == 1000 and {m.value for m in curve} == {2.0}  # mean of 1, 2, 3, 4, 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PARENT_RUN_ENV, parent.info.run_id)
        with pytest.raises(RuntimeError), stage_monitor("teacher", 10) as monitor:
            monitor.iteration(1, 0.5, 0.1, 0)
            raise RuntimeError("a stage failing")
    (failed,) = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    assert failed.info.status == "FAILED" and failed.data.metrics["loss"] == 0.5


def test_unchanged_rerun_does_nothing(project):
    start = time.perf_counter()
    code, out = dvc(project, "repro", echo=False)
    assert code == 0 and "Running stage" not in out, out
    assert is_clean(project) and stale(project) == set()
    assert time.perf_counter() - start < 30


def test_code_edit_stales_exactly_the_stages_that_run_it(project):
    losses = project / "cds" / "losses.py"
    original = edited(losses, "\n# edited\n")
    assert stale(project) == {"teacher", "fragments", "student", "evaluate"}
    assert would_run(project) == ["teacher", "fragments", "student", "evaluate"]
    losses.write_text(original)
    assert stale(project) == set()

    scoring = project / "cds" / "scoring.py"
    original = edited(scoring, "\n# edited\n")
    assert stale(project) == {"evaluate"}
    scoring.write_text(original)
    # byte code written by imports is not a change
    (project / "cds" / "__pycache__").mkdir(exist_ok=True)
    (project / "cds" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert stale(project) == set()


def test_user_module_edit_stales_every_stage(project):
    module = project / "inputs" / "dens.py"
    original = edited(module, "\n# edited\n")
    assert stale(project) == set(STAGES)
    module.write_text(original)
    assert stale(project) == set()


def test_new_data_is_retrained_evaluated_and_registered_behind_the_gate(project):
    data = project / "inputs" / "mean.csv"
    data.write_text("0.5,0.5\n")  # new observations at the same path
    assert stale(project) == set(STAGES)
    summary = retrain(str(project), echo=False)
    assert summary["stages"] == dict.fromkeys(STAGES, "ran")
    assert summary["version"] == "2" and not summary["already_registered"]
    # the champion was scored on other data: the candidate is judged on its own
    assert "inputs changed" in summary["gate_reason"]
    assert summary["gate"] == "passed" and summary["champion"] == "2"
    protocol = json.loads(Layout(project).report.read_text())["protocol"]
    assert set(protocol["inputs_sha256"]) == {"inputs/dens.py", "inputs/mean.csv"}

    again = retrain(str(project), echo=False)
    assert again["stages"] == dict.fromkeys(STAGES, "cached")
    assert again["already_registered"] and again["version"] == "2"
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{summary['model']}'")
    assert len(versions) == 2


def test_run_with_overrides_is_a_dvc_experiment(project, prefect_api):
    git(project, "add", "-A")
    git(project, "commit", "-qm", "new data")
    result = subprocess.run(
        [sys.executable, "-m", "cds.pipeline.cli", "run", "--project", str(project),
         "--set", "evaluation.floor_repeats=2"],
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    name = re.search(r"experiment: (\S+)", result.stdout).group(1)
    code, out = dvc(project, "exp", "show", "--json", echo=False)
    assert code == 0 and name in out
    shown = json.loads(out.strip().splitlines()[-1])
    experiments = [e for row in shown for e in (row.get("experiments") or [])]
    runs = [r for e in experiments for r in e["revs"] if r.get("name") == name]
    assert runs, out
    params = runs[0]["data"]["params"]["params.yaml"]["data"]
    assert params["evaluation"]["floor_repeats"] == 2


def test_forced_teacher_stage_trains_again(project):
    """`dvc repro -f teacher` with nothing changed trains again (the finished checkpoint DVC
    recorded is not handed back), to the same bytes; after a code change, with the new code."""
    layout = Layout(project)
    lock_before = lock_hashes(project)
    code, out = dvc(project, "repro", "-f", "--single-item", "teacher", echo=False)
    assert code == 0 and "training again from scratch" in out, out
    assert read_timings(project, "teacher")["train_seconds"] > 0
    assert lock_hashes(project) == lock_before and stale(project) == set()

    before = json.loads(load_checkpoint(layout.teacher)["metadata"]["config"])
    edited(project / "cds" / "losses.py", "\n# a new version of the code\n")
    code, out = dvc(project, "repro", "-f", "--single-item", "teacher", echo=False)
    assert code == 0 and "Running stage 'teacher'" in out, out
    after = json.loads(load_checkpoint(layout.teacher)["metadata"]["config"])
    assert after["code_version"] != before["code_version"]
    assert load_checkpoint(layout.teacher)["step"] == 40
