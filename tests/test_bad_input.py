"""Bad input is refused before anything is written or started: exit 2, the field and value
named, params.yaml and earlier outputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cds.pipeline import cli
from cds.pipeline.cli import app
from cds.pipeline.layout import Layout
from cds.pipeline.model_registry import gate
from cds.samplers import sampler_from_checkpoint

runner = CliRunner()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sde.T=.inf"], "sde.T = inf: Input should be a finite number"),
        (["sde.beta_max=.nan"], "sde.beta_max = nan"),
        (["teacher.optim.lr=.inf"], "teacher.optim.lr = inf"),
        (["registry.sinkhorn_tolerance=.inf"], "registry.sinkhorn_tolerance = inf"),
        (["seed=true"], "seed = True: Input should be a valid integer"),
        (["teacher.optim.iterations=true"], "teacher.optim.iterations = True"),
        (["seed=100000000000000000000000"], "seed = 100000000000000000000000"),
        (["target.name=':'"], "unknown target ':'"),
        (["sde.beta_min=20"], "beta_min = 20.0 must not exceed beta_max = 10.0"),
        (["cdds.n_coarse=200"], "cdds: n_coarse = 200 must be at most n_fine + 1"),
        (["cdds.bank_size=3"], "cdds: bank_size = 3 must be at least n_coarse - 1 = 4"),
        (["registry.model_name=team/sampler"], "registry.model_name = 'team/sampler'"),
        (["teacher.optim.lr=[1"], "override 'teacher.optim.lr=[1': the value is not valid YAML"),
        (["target.name=nosuch_module_xyz:Density"], "cannot import module 'nosuch_module_xyz'"),
        (["target.options.scale=2"], "invalid options {'scale': 2} for target 'gmm9'"),
        (["target.name=lgcp", "target.options.data=/nonexistent.csv"], "does not exist"),
        (["target.name=tests.test_cli:PatchyDensity"], "log density is nan"),
        (["device=gpu"], "device = 'gpu'"),
        (["device=cuda:7"], "device = 'cuda:7'"),
    ],
)
def test_run_refuses_bad_input_before_writing_anything(trained_copy, overrides, message):
    layout = Layout(trained_copy)
    params_before = layout.params.read_text()
    manifest_before = layout.manifest.read_bytes()
    args = ["run", "--project", str(trained_copy)]
    for item in overrides:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert layout.params.read_text() == params_before
    assert layout.manifest.read_bytes() == manifest_before and layout.teacher.is_file()
    assert not (trained_copy / ".cds" / "run.holder.json").exists()


def test_an_empty_params_file_is_refused(trained_copy, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = runner.invoke(app, ["run", "--project", str(trained_copy), "--params", str(empty)])
    assert result.exit_code == 2 and "is empty" in result.stderr


def test_sample_checks_seed_and_output_before_loading(trained_copy, tmp_path):
    student = str(Layout(trained_copy).student)
    base = ["sample", "--model", student, "-n", "5"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "x.npy"), "--seed", str(10**23)])
    assert result.exit_code == 2 and f"--seed = {10**23}" in result.stderr
    result = runner.invoke(app, [*base, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "must be a file path" in result.stderr
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "x.npy"), "--device", "cuda:7"])
    assert result.exit_code == 2 and "--device = 'cuda:7'" in result.stderr
    result = runner.invoke(
        app, ["sample", "--model", student, "-n", str(10**13), "--out", str(tmp_path / "huge.npy")]
    )
    assert result.exit_code == 2 and "GB of samples" in result.stderr
    assert not (tmp_path / "huge.npy").exists()


def test_sample_streams_in_chunks_and_matches_one_batch(trained_copy, tmp_path, monkeypatch):
    sampler = sampler_from_checkpoint(Layout(trained_copy).student)
    cli.write_samples(sampler, 20, 3, tmp_path / "one.npy")
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 7)
    cli.write_samples(sampler, 20, 3, tmp_path / "chunked.npy")
    chunked = np.load(tmp_path / "chunked.npy")
    assert chunked.shape == (20, 2) and chunked.dtype == np.float32
    assert np.isfinite(chunked).all()
    assert np.array_equal(
        np.load(tmp_path / "one.npy"), sampler.sample(20, torch.Generator().manual_seed(3)).numpy()
    )


def test_gate_refuses_targets_that_were_not_finite_in_training():
    from cds.config import RegistryParams

    ok, reason = gate({"dropped_path_fraction": 0.02}, None, RegistryParams())
    assert not ok and "dropped_path_fraction = 0.02" in reason
    assert gate({"nonfinite_weight_fraction": 0.0}, None, RegistryParams())[0]
