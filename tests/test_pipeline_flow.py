"""The Prefect `retrain` flow under Prefect's test harness (a real temporary API server, one
per test session), against a real git + DVC project and a real MLflow SQLite registry; and the
scheduled deployment served by `cds schedule`, triggered and run to completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from cds.pipeline.dvc import StageFailedError, TransientStageError, dvc, is_clean
from cds.pipeline.dvc_lock import lock_hashes
from cds.pipeline.flows import is_transient, retrain
from cds.pipeline.layout import Layout
from cds.pipeline.stage_graph import STAGES
from tests.conftest import make_project

pytestmark = pytest.mark.slow  # real pipelines: run by CI, not in the edit-test loop


@pytest.fixture(scope="module")
def retrained(prefect_api, tmp_path_factory):
    """One tiny project, run once through the flow (shared by the tests below, in order)."""
    root = make_project(tmp_path_factory.mktemp("flow") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root, retrain(str(root), echo=False)


def test_retrain_runs_every_stage_logs_and_registers(retrained):
    project, summary = retrained
    assert summary["stages"] == dict.fromkeys(STAGES, "ran")
    assert summary["model"] == "cds-gmm9" and summary["gate"] == "passed"
    assert summary["champion"] == summary["version"] == "1"
    assert summary["dvc_status_clean"] and is_clean(project)

    # One parent run with a nested run per stage, holding params, metrics and DVC hashes.
    parent = mlflow.get_run(summary["run_id"])
    assert parent.data.metrics["sinkhorn"] > 0 and parent.data.params["method"] == "cdds"
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    assert sorted(c.info.run_name for c in children) == sorted(STAGES)
    student = next(c for c in children if c.info.run_name == "student")
    recorded = lock_hashes(project)["student"]["data/student/student.pt"]
    assert student.data.tags["dvc.md5.data/student/student.pt"] == recorded


def test_flow_and_manual_repro_write_the_same_lock(retrained, tmp_path):
    """Outputs hold no wall times or other run-specific values: a manual `dvc repro` in another
    directory records the same hash for every output as the flow did, so a committed dvc.lock
    is a baseline for any clone."""
    project, _ = retrained
    manual = make_project(tmp_path / "manual")
    code, out = dvc(manual, "repro", echo=False)
    assert code == 0, out
    assert lock_hashes(manual) == lock_hashes(project)


def test_second_retrain_is_a_noop_and_registers_nothing(retrained):
    project, _ = retrained
    again = retrain(str(project), echo=False)
    assert again["stages"] == dict.fromkeys(STAGES, "cached")
    assert again["already_registered"] and again["version"] == "1"


def _wait_for_deployment(name: str, timeout: float) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(name)
                return
            except Exception:  # not registered yet
                time.sleep(1)
    raise TimeoutError(f"deployment {name} did not appear within {timeout} s")


def test_served_deployment_run_completes(retrained, prefect_api):
    """`cds schedule --cron` registers the scheduled deployment; a triggered run re-runs what the
    params change made stale (here: evaluation only)."""
    from prefect.deployments import run_deployment

    project, _ = retrained
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("floor_repeats: 1", "floor_repeats: 2"))
    server = subprocess.Popen(
        [sys.executable, "-m", "cds.pipeline.cli", "schedule", "--cron", "0 3 * * *",
         "--project", str(project), "--name", "nightly"],
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_deployment("retrain/nightly", timeout=120)
        flow_run = run_deployment("retrain/nightly", timeout=600)
        assert flow_run.state.is_completed(), flow_run.state
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert is_clean(project)
    assert json.loads(Layout(project).report.read_text())["floor"]["repeats"] == 2


def test_retrain_stops_at_a_failing_stage(prefect_api, project: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("name: gmm9", "name: nosuch.mod:Cls"))
    with pytest.raises(Exception, match="stage 'target' failed"):
        retrain(str(project), echo=False)
    assert not (project / "data" / "teacher").exists()


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientStageError("teacher", 75, "busy"), True),
        (RuntimeError("sqlite3.OperationalError: database is locked"), True),
        (StageFailedError("teacher", 2, "teacher.optim.batch_size = 0"), False),
        (ValueError("unknown target"), False),
    ],
)
def test_only_transient_failures_are_retried(error, retried):
    from prefect.states import Failed

    assert is_transient(None, None, Failed(data=error)) is retried
