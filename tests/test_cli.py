"""The `cds` command line, through typer's runner (the real commands, in-process)."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def test_targets_lists_every_target_with_dim_and_log_z():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8
    assert lines[1].split() == ["gmm9", "2", "yes", "0.000000"]
    assert lines[-1].split() == ["logreg_cancer", "31", "no", "unknown"]


def test_run_rejects_bad_params_before_training(tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "--out",
            str(tmp_path),
            "--set",
            "teacher.optim.batch_size=0",
            "--set",
            "teacher.bogus=1",
        ],
    )
    assert result.exit_code == 2
    assert "teacher.optim.batch_size = 0" in result.stderr
    assert "teacher.bogus = 1: unknown key" in result.stderr
    assert not any(tmp_path.iterdir())


def test_run_rejects_methods_it_cannot_run_yet(tmp_path):
    result = runner.invoke(app, ["run", "--out", str(tmp_path), "--set", "method=scds"])
    assert result.exit_code == 2 and "method = 'scds'" in result.stderr
