"""The Laplace prior (`sde.prior: laplace`): the map of a Gaussian is its mean and covariance,
whitening keeps weights and log Z exact, the map travels in every checkpoint, and what cannot
be whitened is refused by name."""

from __future__ import annotations

import contextlib
import logging
import math

import pytest
import torch

import cds
from cds.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cds.config import NetworkParams, ParamsError, SDEParams, load_params
from cds.networks import ConsistencyStudent
from cds.pipeline.layout import Layout
from cds.pipeline.stages import evaluate, fragments, student, target, teacher
from cds.pipeline.tracking import flatten
from cds.preconditioning import (
    PRIOR_MAP_KEY,
    AffineMap,
    LaplaceError,
    WhitenedTarget,
    laplace_map,
    recorded_prior_map,
)
from cds.presets import read_preset
from cds.run_config import make_control, make_schedule, teacher_space
from cds.samplers import (
    ConsistencySampler,
    DiffusionSampler,
    WhitenedSampler,
    sampler_from_checkpoint,
)
from cds.scoring import sampler_weights
from cds.targets import StandardNormalPrior, get_target
from cds.targets.base import Target
from cds.teacher import train_teacher
from tests.conftest import TINY

MEAN = torch.tensor([5.0, -3.0, 8.0])
#: A correlated covariance whose scales differ 40-fold.
SCALE = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.3, 0.0], [0.2, -0.5, 0.05]])
COVARIANCE = SCALE @ SCALE.T
PRECISION = torch.linalg.inv(COVARIANCE.double())
LOG_Z = 1.5 * math.log(2 * math.pi) + 0.5 * math.log(float(torch.linalg.det(COVARIANCE)))


class Gaussian(Target):
    """ρ(x) = exp(−½(x − m)ᵀS⁻¹(x − m)), so Z = (2π)^{D/2}·|S|^{1/2}."""

    name = "gaussian"
    dim = 3
    log_Z = LOG_Z

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = x - MEAN.to(x)
        return -0.5 * (d @ PRECISION.to(x) * d).sum(1)


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    return Gaussian()._log_prob(x)


def starts() -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(0))


def test_laplace_map_of_a_gaussian_is_its_mean_and_covariance_and_whitens_it_exactly():
    prior_map = laplace_map(Gaussian(), starts())
    assert torch.allclose(prior_map.shift, MEAN.double(), atol=1e-5)
    covariance = prior_map.scale_tril @ prior_map.scale_tril.T
    assert torch.allclose(covariance, COVARIANCE.double(), rtol=1e-5, atol=1e-7)
    assert bool((prior_map.scale_tril.diagonal() > 0).all())
    assert AffineMap.from_state(prior_map.state()).equals(prior_map)
    assert not AffineMap(prior_map.shift + 1e-12, prior_map.scale_tril).equals(prior_map)
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(prior_map.inverse(prior_map.forward(z)), z, atol=1e-10)
    # log ρ_z(z) = log N(z; 0, I) + log Z: N(0, I) is the whitened target, Z unchanged
    whitened = WhitenedTarget(Gaussian(), prior_map)
    standard = StandardNormalPrior(3).log_prob(z)
    assert torch.allclose(whitened.log_prob(z), standard + LOG_Z, atol=1e-6)
    assert torch.allclose(whitened.score(z), -z, atol=1e-6)
    assert whitened.log_Z == LOG_Z and whitened.name == "gaussian"
    assert not whitened.has_exact_samples


def test_a_whitened_diffusion_sampler_of_a_gaussian_gives_its_moments_and_log_z():
    """For ρ_z ∝ N(0, I) the initial control is optimal (docs/methods.md §2), so the 128-step
    SDE in whitened coordinates, mapped back, draws N(m, S): mean and every covariance entry
    within 4 standard errors at n = 10,000, and its weights give log Z within 0.01 (they are
    nearly constant)."""
    prior_map = laplace_map(Gaussian(), starts())
    control = make_control(3, make_schedule(SDEParams()), NetworkParams(), 10.0)
    inner = DiffusionSampler(
        control, WhitenedTarget(Gaussian(), prior_map), StandardNormalPrior(3), 128
    )
    sampler = WhitenedSampler(inner, prior_map)
    x, log_w, signs, estimator = sampler_weights(
        sampler, Gaussian(), 10_000, torch.Generator().manual_seed(2)
    )
    assert estimator == "sde" and signs is None
    n, variances = len(x), COVARIANCE.diagonal()
    assert bool(((x.mean(0) - MEAN).abs() < 4 * (variances / n).sqrt()).all())
    # the standard error of a sample covariance: √((S_ii·S_jj + S_ij²)/n)
    se = ((variances[:, None] * variances[None, :] + COVARIANCE.square()) / n).sqrt()
    assert bool(((torch.cov(x.T) - COVARIANCE).abs() < 4 * se).all())
    log_z = float(torch.logsumexp(log_w.double(), 0) - math.log(len(log_w)))
    assert abs(log_z - LOG_Z) < 0.01
    assert torch.equal(
        sampler.sample(5, torch.Generator().manual_seed(9)),
        prior_map.forward(inner.sample(5, torch.Generator().manual_seed(9))).float(),
    )


def test_a_whitened_one_step_sampler_weighs_its_samples_by_the_composite_map():
    """One-step CDDS in whitened coordinates: the weights `sampler_weights` gives against the
    target equal log ρ(x) − log q(x) of the composite map x = μ + L·f(x₀), computed here from
    its full Jacobian by autograd: log q(x) = log p(x₀) − log|det L·∂f/∂x₀|."""
    prior_map = laplace_map(Gaussian(), starts())
    torch.manual_seed(0)
    network = ConsistencyStudent(3, 1.0, width=16)
    with torch.no_grad():  # a student that is not the identity
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    sampler = WhitenedSampler(
        ConsistencySampler(
            network, StandardNormalPrior(3), make_schedule(SDEParams()).alpha, [1.0]
        ),
        prior_map,
    )
    x, log_w, signs, estimator = sampler_weights(
        sampler, Gaussian(), 6, torch.Generator().manual_seed(4)
    )
    assert estimator == "exact_logdet" and bool((signs > 0).all())
    x0 = StandardNormalPrior(3).sample(6, torch.Generator().manual_seed(4))
    for i in range(6):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: prior_map.forward(network(v[None], 1.0))[0], x0[i]
        )
        assert torch.allclose(x[i], prior_map.forward(network(x0[i][None], 1.0))[0].detach())
        log_q = StandardNormalPrior(3).log_prob(x0[i][None])[0] - torch.linalg.slogdet(jacobian)[1]
        expected = Gaussian().log_prob(x[i][None])[0] - log_q
        assert abs(float(log_w[i]) - float(expected)) < 1e-3


class Float32Only(Target):
    """The Gaussian computed with float32 data, as a user's density often is: float64 input
    fails in its matrix product."""

    name, dim = "float32_gaussian", 3

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = x - MEAN
        return -0.5 * (d @ PRECISION.float() * d).sum(1)


def test_a_density_that_takes_float32_only_is_searched_in_float32():
    with pytest.raises(RuntimeError):
        Float32Only().log_prob(starts().double())
    prior_map = laplace_map(Float32Only(), starts())
    assert torch.allclose(prior_map.shift, MEAN.double(), atol=1e-2)
    covariance = prior_map.scale_tril @ prior_map.scale_tril.T
    assert torch.allclose(covariance, COVARIANCE.double(), rtol=1e-2, atol=1e-4)


def test_what_is_built_from_a_teacher_takes_its_map_and_refuses_another_prior():
    prior_map, gaussian = laplace_map(Gaussian(), starts()), Gaussian()
    laplace, standard = load_params(None, ["sde.prior=laplace"]), load_params(None)
    whitened = teacher_space(laplace, gaussian, prior_map)
    assert isinstance(whitened, WhitenedTarget) and whitened.prior_map.equals(prior_map)
    assert teacher_space(standard, gaussian, None) is gaussian
    with pytest.raises(ValueError, match="'laplace', but no map was given: pass the one"):
        teacher_space(laplace, gaussian, None)
    with pytest.raises(
        ValueError, match="'standard', but the teacher was trained with the Laplace"
    ):
        teacher_space(standard, gaussian, prior_map)


class Unbounded(Target):
    name, dim = "unbounded", 2

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)


class Flat(Target):
    """No dependence on the second coordinate: the Hessian is singular."""

    name, dim = "flat", 2

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x[:, 0].square()


class TwoModes(Target):
    """Modes at ±3 on the first axis, unit scale."""

    name, dim = "two_modes", 2

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        left = -0.5 * ((x - torch.tensor([-3.0, 0.0]).to(x)).square().sum(1))
        right = -0.5 * ((x - torch.tensor([3.0, 0.0]).to(x)).square().sum(1))
        return torch.logaddexp(left, right)


@pytest.mark.parametrize(
    ("density", "message"),
    [
        (Unbounded(), "no mode of log ρ found"),
        (Flat(), "not negative definite"),
        (TwoModes(), "several modes"),
    ],
)
def test_laplace_prior_refuses_what_it_cannot_whiten(density, message):
    many = torch.randn(8, 2, generator=torch.Generator().manual_seed(5)) * 3
    with pytest.raises(
        LaplaceError, match=rf"sde.prior = 'laplace': .*{message}.*sde.prior=standard"
    ):
        laplace_map(density, many)


def test_an_unknown_prior_is_refused_by_name():
    with pytest.raises(ParamsError, match=r"sde.prior.*'gauss'"):
        load_params(None, ["sde.prior=gauss"])


@pytest.mark.slow  # trains a teacher and two students
def test_fit_with_the_laplace_prior_records_its_map_and_samples_in_the_targets_coordinates(
    tmp_path,
):
    """The smoke budget is tiny, but the map puts the draws around the far-off mean (a sampler
    from N(0, I) trained 40 iterations stays near the origin); every checkpoint records the
    map, and the saved samplers load back to the same samples."""
    records = {}
    for method in ("cdds", "scds"):
        fitted = cds.fit(
            gaussian_log_prob,
            dim=3,
            method=method,
            preset="posterior",
            overrides=_smoke(),
            device="cpu",
            workdir=tmp_path / method,
            progress=False,
        )
        x = fitted.sample(2000, torch.Generator().manual_seed(3))
        assert float((x.mean(0) - MEAN).abs().max()) < 1.0
        assert fitted.log_z.valid and math.isfinite(fitted.log_z.value)
        records[method] = recorded_prior_map(load_checkpoint(tmp_path / method / "student.pt"))
        assert torch.allclose(records[method].shift, MEAN.double(), atol=1e-4)
        path = fitted.save(tmp_path / f"{method}.pt")
        given = {} if method == "cdds" else {"target": Gaussian()}  # SCDS needs its density
        again = cds.load_sampler(path, **given)
        assert isinstance(again, WhitenedSampler)
        assert torch.equal(again.sample(2000, torch.Generator().manual_seed(3)), x)
    # SCDS run as its N-step SDE keeps the map too
    sde = sampler_from_checkpoint(tmp_path / "scds" / "student.pt", sde=True, target=Gaussian())
    assert isinstance(sde, WhitenedSampler) and sde.method == "scds-sde"
    assert float((sde.sample(2000).mean(0) - MEAN).abs().max()) < 1.0
    teacher_map = recorded_prior_map(load_checkpoint(tmp_path / "cdds" / "teacher.pt"))
    assert teacher_map.equals(records["cdds"])  # the student takes its teacher's
    assert teacher_map.equals(records["scds"])  # one map per target and seed


def _smoke() -> dict[str, object]:
    """The smoke preset's settings as `cds.fit` overrides (laid over the posterior preset)."""
    return flatten(read_preset("smoke"))


@pytest.mark.slow  # each stage in turn
def test_every_stage_runs_a_laplace_prior_run_and_evaluates_it_in_the_targets_coordinates(
    tmp_path,
):
    layout = Layout(tmp_path)
    params = load_params(None, [*TINY, "target.name=student5", "sde.prior=laplace"])
    with contextlib.chdir(tmp_path):
        for stage in (target, teacher, fragments, student, evaluate):
            stage.run(params, layout, progress=False)
    teacher_map = recorded_prior_map(load_checkpoint(layout.teacher))
    assert recorded_prior_map(load_checkpoint(layout.student)).equals(teacher_map)
    assert isinstance(sampler_from_checkpoint(layout.teacher), WhitenedSampler)


@pytest.mark.slow  # two short teacher runs
def test_a_checkpoint_resumes_only_under_its_own_map_and_a_malformed_map_is_refused(
    tmp_path, caplog
):
    params = load_params(None, [*TINY, "target.name=student5", "sde.prior=laplace"])
    path = tmp_path / "teacher.pt"
    train_teacher(params, get_target("student5"), path, progress=False, stop_after=20)
    payload = load_checkpoint(path)
    own = recorded_prior_map(payload)
    payload[PRIOR_MAP_KEY] = AffineMap(own.shift + 1e-9, own.scale_tril).state()
    save_checkpoint(path, payload)
    with caplog.at_level(logging.WARNING, logger="cds.training"):
        train_teacher(params, get_target("student5"), path, progress=False, stop_after=30)
    assert "another Laplace prior map" in caplog.text
    assert recorded_prior_map(load_checkpoint(path)).equals(own)  # trained again, own map
    payload = load_checkpoint(path)
    payload[PRIOR_MAP_KEY] = {"shift": torch.zeros(5), "scale_tril": -torch.eye(5)}
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="'prior_map' is not a map"):
        recorded_prior_map(load_checkpoint(path))
