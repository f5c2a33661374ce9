"""Concurrent and stopped runs, with real `cds` processes: one run holds the project from
params validation to registration, a second is refused and changes nothing, registration is
idempotent, and SIGTERM stops a run within seconds with resumable checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cds.checkpoints import load_checkpoint
from cds.pipeline.layout import Layout

pytestmark = pytest.mark.slow

CDS = shutil.which("cds") or str(Path(sys.executable).with_name("cds"))


def start(project: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    return subprocess.Popen(
        [CDS, *args, "--project", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.2)


def test_a_second_run_is_refused_and_changes_nothing(project):
    holder = project / ".cds" / "run.holder.json"
    first = start(project, "run", "--set", "seed=3")
    wait_for(holder.exists)
    second = start(project, "run", "--set", "seed=4")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 75, err
    assert f"pid {first.pid}" in err and "is busy" in err
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert "seed: 3" in (project / "params.yaml").read_text()
    for path in (Layout(project).teacher, Layout(project).student):
        assert json.loads(load_checkpoint(path)["metadata"]["config"])["seed"] == 3
    assert not holder.exists()

    # Two simultaneous registrations of the same checkpoint create no second version.
    a, b = start(project, "stage", "register"), start(project, "stage", "register")
    results = [p.communicate(timeout=300) for p in (a, b)]
    assert a.returncode == b.returncode == 0, results
    versions = [json.loads(out)["version"] for out, _ in results]
    assert versions == ["1", "1"]


def test_sigterm_stops_a_run_within_seconds_and_leaves_a_resumable_checkpoint(project):
    run = start(
        project,
        "run",
        "--set",
        "teacher.optim.iterations=100000",
        "--set",
        "teacher.stopping.rule=fixed",
    )
    teacher = Layout(project).teacher
    wait_for(teacher.exists, timeout=300)
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert time.monotonic() - sent < 15
    assert run.returncode == 128 + signal.SIGTERM and "stopped by signal" in err
    payload = load_checkpoint(teacher)
    assert 0 < payload["step"] < payload["iterations"]
    assert not (project / ".cds" / "run.holder.json").exists()
