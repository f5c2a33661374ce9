"""The `cds` command line through typer's runner (the real commands, in-process): bad input is
refused with a message naming the field and value, before any work, and leaves no output that
looks valid."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

import cds
from cds.pipeline.cli import app
from cds.pipeline.layout import Layout
from cds.pipeline.timings import read_timings
from cds.targets import target_names

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


class PatchyDensity:
    """A user density that is NaN outside the unit ball (finite on most probe points)."""

    dim = 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        value = -0.5 * x.square().sum(1)
        return torch.where(x.norm(dim=1) > 2.5, torch.full_like(value, float("nan")), value)


def test_targets_lists_every_target_with_dim_and_log_z():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + len(target_names())
    assert lines[1].split() == ["gmm9", "2", "yes", "0.000000"]
    assert lines[7].split() == ["logreg_cancer", "31", "no", "unknown"]
    assert lines[-1].split() == ["student5", "5", "yes", "3.841412"]


def test_version_is_the_installed_distribution():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cds {version('cds-samplers')}"


def test_schedule_and_its_deprecated_alias_refuse_without_a_prefect_server(project, monkeypatch):
    """`cds schedule` needs a running Prefect server; `cds serve`, its old name, says it is
    deprecated and does the same."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for command in ("schedule", "serve"):
        result = runner.invoke(app, [command, "--cron", "0 3 * * *", "--project", str(project)])
        assert result.exit_code == 2
        assert "prefect server start" in result.stderr
    assert "deprecated: use `cds schedule`" in result.stderr


def test_run_rejects_bad_params_before_any_stage(project):
    before = (project / "params.yaml").read_text()
    result = runner.invoke(
        app,
        [
            "run",
            "--project",
            str(project),
            "--set",
            "teacher.optim.batch_size=0",
            "--set",
            "teacher.bogus=1",
            "--set",
            "target.name=nosuch",
        ],
    )
    assert result.exit_code == 2
    assert "teacher.optim.batch_size = 0" in result.stderr
    assert "teacher.bogus = 1: unknown key" in result.stderr
    assert "unknown target 'nosuch'" in result.stderr
    assert (project / "params.yaml").read_text() == before
    assert not (project / "data" / "target").exists()


def test_run_needs_a_project(tmp_path):
    result = runner.invoke(app, ["run", "--project", str(tmp_path)])
    assert result.exit_code == 2 and "has no dvc.yaml" in result.stderr


def test_stage_names_are_checked(project):
    result = runner.invoke(app, ["stage", "train", "--project", str(project)])
    assert result.exit_code == 2 and "stage = 'train': unknown" in result.stderr


def test_stage_refuses_missing_upstream_output(project):
    result = runner.invoke(app, ["stage", "student", "--project", str(project)])
    assert result.exit_code == 2
    assert "data/target/manifest.json is missing: run `cds stage target`" in result.stderr


def test_target_stage_refuses_a_density_that_is_not_finite(project):
    params = project / "params.yaml"
    text = params.read_text().replace("name: gmm9", "name: tests.test_cli:PatchyDensity")
    params.write_text(text)
    result = runner.invoke(app, ["stage", "target", "--project", str(project), "--no-progress"])
    assert result.exit_code == 2
    assert "log density is nan" in result.stderr and "prior samples" in result.stderr
    assert not Layout(project).manifest.exists()


def test_corrupt_checkpoint_fails_evaluation_and_leaves_no_metrics(trained_copy):
    layout = Layout(trained_copy)
    assert layout.metrics.is_file()
    layout.student.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["stage", "evaluate", "--project", str(trained_copy)])
    assert result.exit_code == 2
    assert "student.pt' is corrupt or unreadable" in result.stderr
    assert not layout.metrics.exists() and not layout.eval_dir.exists()


def test_stage_rerun_after_completion_trains_again_to_the_same_weights(trained_copy):
    """A finished checkpoint is not handed back (what DVC re-runs, e.g. `dvc repro -f`, is
    trained again); training is seeded, so the weights come out the same."""
    layout = Layout(trained_copy)
    before = torch.load(layout.student, weights_only=True)["ema"]
    result = runner.invoke(
        app, ["stage", "student", "--project", str(trained_copy), "--no-progress"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["iterations"] == 40
    after = torch.load(layout.student, weights_only=True)["ema"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    timings = read_timings(trained_copy, "student")
    assert 0 < timings["train_seconds"] < timings["stage_seconds"]


def test_sample_reports_an_unknown_model(trained_copy, tmp_path):
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "models:/nosuch@champion",
            "-n",
            "5",
            "--out",
            str(tmp_path / "x.npy"),
        ],
    )
    assert result.exit_code == 2 and "cannot load 'models:/nosuch@champion'" in result.stderr
    assert not (tmp_path / "x.npy").exists()


def test_init_writes_a_project_for_a_user_density(tmp_path, monkeypatch):
    """`cds init DIR --target module:Class` copies ./module.py into inputs/, writes complete
    params (the user's target with the default preset: budgets that stop by convergence),
    links the installed cds, and commits it all to new git and DVC repositories."""
    import subprocess

    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydens.py").write_text("class MyDensity:\n    dim = 2\n")
    result = runner.invoke(app, ["init", "proj", "--target", "mydens:MyDensity"])
    assert result.exit_code == 0, result.stderr
    root = tmp_path / "proj"
    assert (root / "inputs" / "mydens.py").read_text() == "class MyDensity:\n    dim = 2\n"
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["target"] == {"name": "mydens:MyDensity", "options": {}}
    assert params["teacher"]["stopping"]["rule"] == "plateau"
    assert (root / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert (root / "cds").resolve() == Path(cds.__file__).resolve().parent
    assert (root / ".dvc").is_dir()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
    )
    assert status.stdout == ""  # everything committed, the cds link ignored


def test_init_refuses_bad_input_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, message in [
        (["init", "a", "--target", "pkg.mod:Cls"], "target = 'pkg.mod:Cls'"),
        (["init", "a", "--target", "nowhere:Cls"], "nowhere.py does not exist"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "a").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["init", "full"])
    assert result.exit_code == 2 and "directory = 'full'" in result.stderr
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
