"""The Prefect `retrain` flow under Prefect's test harness (a real temporary API server, one
per test session), against a real git + DVC project and a real MLflow SQLite registry; and the
scheduled deployment served by `cds serve`, triggered and run to completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch

from cds.checkpoints import load_checkpoint
from pipelines.dvc import dvc, is_clean, lock_hashes
from pipelines.flows import retrain


def test_retrain_flow_equals_manual_repro_and_registers(prefect_api, project, tmp_path):
    from tests.conftest import make_project

    summary = retrain(str(project), echo=False)
    assert summary["stages"] == {
        "target": "ran",
        "teacher": "ran",
        "fragments": "ran",
        "student": "ran",
        "evaluate": "ran",
    }
    assert summary["model"] == "cds-gmm9" and summary["gate"] == "passed"
    assert summary["champion"] == summary["version"] == "1"
    assert is_clean(project)

    manual = make_project(tmp_path / "manual")
    code, out = dvc(manual, "repro", echo=False)
    assert code == 0, out
    # Same trained weights and fragment bank (the files also hold wall times, so compare
    # the tensors, exactly).
    for path in ("data/teacher/teacher.pt", "data/student/student.pt", "data/fragments/bank.pt"):
        a, b = load_checkpoint(project / path), load_checkpoint(manual / path)
        keys = ("ema",) if "ema" in a else ("x_lo", "x_hi", "pair")
        for key in keys:
            left, right = a[key], b[key]
            if isinstance(left, dict):
                assert all(torch.equal(left[k], right[k]) for k in left), path
            else:
                assert torch.equal(left, right), path
    by_flow = lock_hashes(project)

    # One parent run with a nested run per stage, holding params, metrics and DVC hashes.
    parent = mlflow.get_run(summary["run_id"])
    assert parent.data.metrics["sinkhorn"] > 0
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    assert sorted(c.info.run_name for c in children) == sorted(summary["stages"])
    student = next(c for c in children if c.info.run_name == "student")
    assert (
        student.data.tags["dvc.md5.data/student/student.pt"]
        == by_flow["student"]["data/student/student.pt"]
    )

    # A second run has nothing to do and registers nothing new.
    again = retrain(str(project), echo=False)
    assert set(again["stages"].values()) == {"cached"}
    assert again["already_registered"] and again["version"] == "1"


def test_retrain_stops_at_a_failing_stage_without_retrying_it(prefect_api, project):
    (project / "data" / "target").mkdir(parents=True)
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("name: gmm9", "name: nosuch.mod:Cls"))
    with pytest.raises(Exception, match="stage 'target' failed"):
        retrain(str(project), echo=False)
    assert not (project / "data" / "teacher").exists()


def _wait_for_deployment(client_url: str, name: str, timeout: float) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(name)
                return
            except Exception:
                time.sleep(1)
    raise TimeoutError(f"deployment {name} did not appear at {client_url}")


def test_served_deployment_runs_retrain_to_completion(prefect_api, project):
    from prefect.deployments import run_deployment

    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "--cron",
            "0 3 * * *",
            "--project",
            str(project),
            "--name",
            "nightly",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_deployment(prefect_api, "retrain/nightly", timeout=120)
        flow_run = run_deployment("retrain/nightly", timeout=600)
        assert flow_run.state.is_completed(), flow_run.state
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert is_clean(project)
    registered = mlflow.MlflowClient().get_model_version_by_alias("cds-gmm9", "champion")
    assert str(registered.version) == "1"
