"""`cds.fit` on a density given as a function or an object, saved samplers that load back to
the same samples, no silent target swap, resume from a workdir, and the example."""

from __future__ import annotations

import math
import runpy

import pytest
import torch

import cds
from cds.config import load_params
from cds.samplers import TargetNeededError
from cds.targets import IN_MEMORY_TARGET, get_target
from cds.teacher import train_teacher
from tests.conftest import ROOT, ScaledGaussian


def shifted_gaussian(x: torch.Tensor) -> torch.Tensor:
    """log ρ of N((1, −1), 0.5²·I), scaled by Z = e²."""
    return 2.0 - 0.5 * ((x - torch.tensor([1.0, -1.0])) / 0.5).square().sum(1)


@pytest.mark.slow  # trains a teacher and a student
def test_fit_a_function_samples_weights_saves_and_loads_back(tmp_path):
    fitted = cds.fit(shifted_gaussian, dim=2, preset="smoke", device="cpu", progress=False)
    assert fitted.method == "cdds" and fitted.nfe == 1
    x = fitted.sample(500, torch.Generator().manual_seed(3))
    assert x.shape == (500, 2) and torch.equal(
        x, fitted.sample(500, torch.Generator().manual_seed(3))
    )
    weighted = fitted.weighted_samples(200, torch.Generator().manual_seed(4))
    assert weighted.samples.shape == (200, 2) and bool(torch.isfinite(weighted.log_weights).all())
    log_z = fitted.log_z
    assert log_z.valid and log_z.n == 300 and log_z.std_error > 0  # smoke: 300 weighted samples
    assert math.isfinite(log_z.value) and log_z.elbo <= log_z.value + 1e-9
    assert fitted.device.type == "cpu"
    for run in ("teacher", "cdds"):  # smoke: the plateau rule, cooled down by iteration 30
        budget = fitted.budgets[run]
        assert budget["rule"] == "plateau" and budget["iterations"] == 40
        assert budget["cooldown_from"] <= 30 and budget["reason"]
    assert torch.equal(fitted.sample(7, fitted.generator(2)), fitted.sample(7, fitted.generator(2)))
    path = fitted.save(tmp_path / "s.pt")
    again = cds.load_sampler(path).sample(500, torch.Generator().manual_seed(3))  # CDDS: no target
    assert torch.equal(again, x)


@pytest.mark.slow  # trains a teacher and a student
def test_a_sampler_that_needs_an_in_memory_target_refuses_to_guess_it(tmp_path):
    fitted = cds.fit(
        shifted_gaussian, dim=2, method="scds", preset="smoke", device="cpu", progress=False
    )
    path = fitted.save(tmp_path / "scds.pt")
    with pytest.raises(TargetNeededError, match="passed as a Python object"):
        cds.load_sampler(path)
    with pytest.raises(TargetNeededError):
        cds.load_sampler(path, trust_target_code=True)
    from cds.fitting import FunctionTarget

    target = FunctionTarget(shifted_gaussian, 2, "shifted")
    loaded = cds.load_sampler(path, target=target)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(loaded.sample(50, g), fitted.sample(50, torch.Generator().manual_seed(0)))


def test_fit_refuses_bad_input_before_training(tmp_path):
    from cds.targets import TargetInputError

    def nan_density(x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), float("nan"))

    with pytest.raises(TargetInputError, match="log density is nan"):
        cds.fit(nan_density, dim=2, workdir=tmp_path)
    with pytest.raises(ValueError, match="must have shape \\(4,\\)"):
        cds.fit(lambda x: x, dim=2)
    with pytest.raises(ValueError, match="method = 'nuts'"):
        cds.fit(shifted_gaussian, dim=2, method="nuts")
    with pytest.raises(ValueError, match="device = 'gpu'"):
        cds.fit(shifted_gaussian, dim=2, device="gpu")
    with pytest.raises(ValueError, match="preset = 'fast': unknown"):
        cds.fit(shifted_gaussian, dim=2, preset="fast")
    assert not list(tmp_path.iterdir())  # nothing written


def test_training_refuses_a_target_other_than_the_one_params_name(tmp_path):
    # target.name: gmm9
    params = load_params(None, ["teacher.optim.iterations=2", "teacher.stopping.rule=fixed"])
    with pytest.raises(ValueError, match=r"target\.name = 'gmm9', but the target given is"):
        train_teacher(params, ScaledGaussian(2, 0.0), tmp_path / "t.pt", progress=False)
    assert not (tmp_path / "t.pt").exists()
    named = load_params(
        None,
        [
            "teacher.optim.iterations=2",
            "teacher.stopping.rule=fixed",
            f"target.name={IN_MEMORY_TARGET}",
        ],
    )
    train_teacher(named, ScaledGaussian(2, 0.0), tmp_path / "t.pt", progress=False)


@pytest.mark.slow  # trains a teacher and a student
def test_fit_by_name_records_the_target_and_resumes_from_its_workdir(tmp_path):
    fitted = cds.fit("gmm9", preset="smoke", device="cpu", workdir=tmp_path, progress=False)
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")}
    assert set(files) == {"teacher.pt", "student.pt"}
    again = cds.fit("gmm9", preset="smoke", device="cpu", workdir=tmp_path, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")} == files  # reused
    g = torch.Generator().manual_seed(1)
    assert torch.equal(again.sample(20, g), fitted.sample(20, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="dim = 3, but the target has dim 2"):
        cds.fit(get_target("gmm9"), dim=3)
    with pytest.raises(ValueError, match="needs its dimension"):
        cds.fit(shifted_gaussian)
    with pytest.raises(ValueError, match=r"overrides\['target.name'\]"):
        cds.fit(shifted_gaussian, dim=2, overrides={"target.name": "mw54"})


@pytest.mark.slow  # trains a teacher and a student
def test_the_example_runs():
    example = runpy.run_path(str(ROOT / "examples" / "fit_own_density.py"))
    out = example["main"]("smoke")
    assert out["reloaded_equal"] == 1.0 and math.isfinite(out["log_z"])
