"""Shared fixtures: seeded generators, quiet offline settings for Prefect, DVC and MLflow, and
tiny-budget pipeline projects (real git + DVC repositories in temporary directories)."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

from cds.config import Params, load_params
from cds.pipeline.tracking import flatten
from cds.presets import read_preset
from cds.targets import Target

# Before Prefect or MLflow are imported anywhere: private Prefect home, no telemetry.
_HOME = tempfile.mkdtemp(prefix="cds-tests-")
os.environ.setdefault("PREFECT_HOME", str(Path(_HOME) / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_SITE_CACHE_DIR", str(Path(_HOME) / "dvc-site"))

ROOT = Path(__file__).resolve().parents[1]

#: A pipeline small enough to run end to end in seconds (quality is not the point): the `smoke`
#: preset, as `key=value` overrides.
TINY = [f"{key}={value}" for key, value in flatten(read_preset("smoke")).items()]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def make_project(dest: Path, *overrides: str) -> Path:
    """A committed git + DVC working copy of this project with the tiny params."""
    from cds.config import load_params
    from cds.pipeline.workspace import create_workspace

    return create_workspace(ROOT, dest, load_params(None, [*TINY, *overrides]))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh tiny project whose MLflow store is its own mlflow.db."""
    root = make_project(tmp_path / "project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """Prefect's test harness (a real, temporary API server), once per test session; returns
    its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose stages were run once, in-process (reference for copies)."""
    from cds.config import load_params
    from cds.pipeline.layout import Layout
    from cds.pipeline.stages import evaluate, fragments, student, target, teacher

    root = make_project(tmp_path_factory.mktemp("trained") / "project")
    layout = Layout(root)
    params = load_params(layout.params)
    with contextlib.chdir(root):  # as `cds stage` runs them: params' paths are the project's
        for stage in (target, teacher, fragments, student, evaluate):
            stage.run(params, layout, progress=False)
    return root


@pytest.fixture
def trained_copy(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained project, with its own MLflow store."""
    import shutil

    root = Path(shutil.copytree(trained_project, tmp_path / "project", symlinks=True))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


class ScaledGaussian(Target):
    """ρ = Z₀·N(0, I): the interpolated score of the untrained control is exactly optimal."""

    name = "scaled_gaussian"
    box = (-4.0, 4.0)

    def __init__(self, dim: int, log_z0: float):
        self.dim = dim
        self.log_z0 = log_z0
        self.log_Z = log_z0

    def _log_prob(self, x):
        return self.log_z0 - 0.5 * x.square().sum(1) - 0.5 * self.dim * math.log(2 * math.pi)

    def _score(self, x):
        return -x


def tiny_teacher_params(**overrides: object) -> Params:
    """Params of a teacher that trains in about a second (30 iterations, evaluated twice)."""
    base = [
        "teacher.n_steps=16",
        "teacher.optim.iterations=30",
        "teacher.stopping.rule=fixed",
        "teacher.optim.batch_size=64",
        "teacher.optim.checkpoint_every=10",
        "teacher.optim.ema_window=12",
        "teacher.network.width=16",
        "teacher.eval_every=15",
        "teacher.eval_samples=200",
    ]
    return load_params(None, base + [f"{k}={v}" for k, v in overrides.items()])
