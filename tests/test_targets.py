"""Targets: normalization, exact samplers against densities, scores against autograd, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from cds.targets import (
    InvalidUserTargetError,
    NoExactSamplesError,
    StandardNormalPrior,
    Target,
    TargetInputError,
    UnknownTargetError,
    get_target,
    target_names,
)
from cds.targets.image import ImageDensity
from cds.targets.lgcp import LogGaussianCoxProcess, bin_points
from cds.targets.manywell import double_well_log_normalizer

ALL = [
    "gmm9",
    "funnel",
    "mw54",
    "mw52",
    "lgcp",
    "image",
    "logreg_cancer",
    "banana",
    "rotmix4",
    "student5",
]


@pytest.fixture(scope="module")
def targets() -> dict[str, Target]:
    return {name: get_target(name) for name in ALL}


def test_registry_lists_every_paper_target():
    assert target_names() == ALL


@pytest.mark.parametrize(
    ("name", "dim", "exact", "log_z"),
    [
        ("gmm9", 2, True, 0.0),
        ("funnel", 10, True, 0.0),
        ("mw54", 5, True, -0.541056),
        ("mw52", 50, True, 42.81724),
        ("lgcp", 1600, False, None),
        ("image", 2, True, "known"),
        ("logreg_cancer", 31, False, None),
        ("banana", 2, True, math.log(2 * math.pi * 1.5 * 0.5)),
        ("rotmix4", 4, True, 0.0),
        ("student5", 5, True, "known"),
    ],
)
def test_target_metadata(targets, name, dim, exact, log_z):
    t = targets[name]
    assert t.dim == dim
    assert t.has_exact_samples is exact
    if log_z is None:
        assert t.log_Z is None
    elif log_z == "known":
        assert math.isfinite(t.log_Z)
    else:
        assert t.log_Z == pytest.approx(log_z, abs=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_score_matches_autograd_and_shapes(targets, name):
    t = targets[name]
    g = torch.Generator().manual_seed(0)
    scale = 0.3 if name in ("lgcp", "logreg_cancer") else 2.0
    offset = 4.0 if name == "lgcp" else 0.0
    x = offset + scale * torch.randn(16, t.dim, generator=g, dtype=torch.float64)
    lp = t.log_prob(x)
    assert lp.shape == (16,) and lp.dtype == torch.float64
    xg = x.clone().requires_grad_(True)
    auto = torch.autograd.grad(t.log_prob(xg).sum(), xg)[0]
    torch.testing.assert_close(t.score(x), auto, rtol=1e-6, atol=1e-6)
    assert t.score(x.float()).dtype == torch.float32


@pytest.mark.parametrize("name", ["gmm9", "funnel", "mw54"])
def test_low_dimensional_normalization_by_quadrature(targets, name):
    """log Z by integration: 2-D grid for gmm9; exact factorization for funnel and mw54."""
    t = targets[name]
    if name == "gmm9":
        grid = torch.linspace(-12, 12, 1201, dtype=torch.float64)
        xx, yy = torch.meshgrid(grid, grid, indexing="ij")
        pts = torch.stack([xx.ravel(), yy.ravel()], 1)
        h = float(grid[1] - grid[0])
        log_z = float(torch.logsumexp(t.log_prob(pts), 0)) + 2 * math.log(h)
    elif name == "funnel":
        # ∫ over x_2..10 is Gaussian, leaving a 1-D integral over x_1 of N(x_1; 0, 9).
        def inner(x1: float) -> float:
            x = torch.zeros(1, 10, dtype=torch.float64)
            x[0, 0] = x1
            return math.exp(float(t.log_prob(x))) * (2 * math.pi * math.exp(x1)) ** 4.5

        log_z = math.log(integrate.quad(inner, -40, 40, limit=200)[0])
    else:
        one = integrate.quad(lambda v: math.exp(-((v * v - 4) ** 2)), -10, 10)[0]
        log_z = 5 * math.log(one)
    assert log_z == pytest.approx(t.log_Z, abs=1e-4)


def test_manywell_normalizers_match_spec():
    assert double_well_log_normalizer(4.0) == pytest.approx(math.log(0.897438), abs=1e-6)
    assert double_well_log_normalizer(2.0) == pytest.approx(math.log(1.340445), abs=1e-6)


def test_gmm9_samples_mode_frequencies_and_within_mode_ks(targets, gen):
    t = targets["gmm9"]
    x = t.sample(18000, gen)
    counts = torch.bincount(t.mode_assignment(x), minlength=9).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    first = x[t.mode_assignment(x) == 4]  # the mode at the origin
    assert stats.kstest(first[:, 0].numpy(), "norm", args=(0, math.sqrt(0.3))).pvalue > 1e-3


def test_funnel_samples_match_density(targets, gen):
    t = targets["funnel"]
    x = t.sample(20000, gen).double()
    assert stats.kstest(x[:, 0].numpy(), "norm", args=(0, 3)).pvalue > 1e-3
    z = (x[:, 1:] / torch.exp(0.5 * x[:, :1])).ravel().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize(("name", "delta"), [("mw54", 4.0), ("mw52", 2.0)])
def test_manywell_samples_match_double_well_cdf(targets, gen, name, delta):
    t = targets[name]
    x = t.sample(4000, gen)
    wells = x[:, :5].ravel().double().numpy()
    log_z1 = double_well_log_normalizer(delta)
    grid = np.linspace(-4, 4, 20001)
    dens = np.exp(-((grid**2 - delta) ** 2) - log_z1)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    assert stats.kstest(wells, lambda v: np.interp(v, grid, cdf)).pvalue > 1e-3
    counts = torch.bincount(t.mode_assignment(x), minlength=32).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    if t.dim > 5:
        assert stats.kstest(x[:, 5:].ravel().numpy(), "norm").pvalue > 1e-3


def test_image_density_sampler_and_log_z(targets, gen):
    t: ImageDensity = targets["image"]
    # log Z: a fine midpoint grid over the image (the outside penalty adds < 1 % mass).
    h = 0.0025
    axis = torch.arange(-3.5 + h / 2, 3.5, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    log_z_grid = float(torch.logsumexp(t.log_prob(pts), 0)) + 2 * math.log(h)
    assert log_z_grid == pytest.approx(t.log_Z, abs=0.01)
    # Exact samples: quadrant frequencies against the density's mass per quadrant.
    x = t.sample(40000, gen).double()
    sample_quadrant = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
    grid_quadrant = (pts[:, 0] > 0).long() * 2 + (pts[:, 1] > 0).long()
    w = torch.softmax(t.log_prob(pts), 0)
    expected = torch.stack([w[grid_quadrant == q].sum() for q in range(4)]).numpy()
    observed = torch.bincount(sample_quadrant, minlength=4).numpy()
    assert stats.chisquare(observed, expected * len(x)).pvalue > 1e-3


def test_image_outside_penalty_has_restoring_gradient(targets):
    t = targets["image"]
    x = torch.tensor([[4.0, 0.0], [-4.2, 0.0], [0.0, 5.0], [0.0, -3.8]])
    s = t.score(x)
    assert s[0, 0] < -10 and s[1, 0] > 10 and s[2, 1] < -10 and s[3, 1] > 10


def test_lgcp_binning_and_custom_csv(tmp_path):
    pts = np.array([[0.0, 0.0], [0.999, 0.5], [1.0, 1.0], [0.5, 0.0251]])
    counts = bin_points(pts).reshape(40, 40)
    assert counts[0, 0] == 1 and counts[39, 20] == 1 and counts[39, 39] == 1 and counts[20, 1] == 1
    path = tmp_path / "points.csv"
    path.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in pts) + "\n")
    t = LogGaussianCoxProcess(data=path)
    assert t.n_points == 4
    assert t.prior_mean == pytest.approx(math.log(4) - 1.91 / 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1.5,0.2\n")
    with pytest.raises(ValueError, match="unit square"):
        LogGaussianCoxProcess(data=bad)


def test_lgcp_prior_term_is_a_normalized_gaussian(targets):
    """With no points the target is the GP prior: compare with scipy's multivariate normal."""
    t: LogGaussianCoxProcess = targets["lgcp"]
    x = t.prior_mean + torch.randn(3, t.dim, dtype=torch.float64) * 0.5
    counts_term = (t.counts.double() * x - torch.exp(x) / 1600).sum(1)
    cov = t.chol.double() @ t.chol.double().T
    ref = stats.multivariate_normal(mean=np.full(t.dim, t.prior_mean), cov=cov.numpy())
    expected = torch.tensor(ref.logpdf(x.numpy())) + counts_term
    torch.testing.assert_close(t.log_prob(x), expected, rtol=1e-5, atol=1e-3)


def test_logreg_convention_and_prior(targets):
    t = targets["logreg_cancer"]
    w = torch.zeros(1, 31, dtype=torch.float64)
    # At w = 0 every likelihood term is log ½ and the prior is log N(0; 0, I).
    expected = 569 * math.log(0.5) - 0.5 * 31 * math.log(2 * math.pi)
    assert float(t.log_prob(w)) == pytest.approx(expected, rel=1e-6)
    # p(y=1|x,w) = σ(wᵀx): a positive bias raises the likelihood of the majority label y=1.
    w_bias = w.clone()
    w_bias[0, 0] = 0.5
    assert t.labels.mean() > 0.5
    assert float(t.log_prob(w_bias)) > float(t.log_prob(w))
    with pytest.raises(NoExactSamplesError):
        t.sample(3)


def test_truncated_prior_log_density_integrates_to_one():
    prior = StandardNormalPrior(1, truncation=1.5)
    grid = torch.linspace(-1.5, 1.5, 30001, dtype=torch.float64)[:, None]
    mass = torch.trapezoid(prior.log_prob(grid).exp(), grid[:, 0])
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    s = prior.sample(10000, torch.Generator().manual_seed(0))
    assert float(s.abs().max()) <= 1.5
    assert float(prior.log_prob(torch.tensor([[2.0]]))) == -math.inf


def test_unknown_target_lists_valid_names():
    with pytest.raises(UnknownTargetError, match=r"valid names are gmm9, funnel, mw54"):
        get_target("gmm8")


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(4, 3), r"shape \(B, 2\), got shape \(4, 3\)"),
        (torch.zeros(2), r"shape \(B, 2\), got shape \(2,\)"),
        (torch.tensor([[0.0, float("nan")]]), "1 sample"),
        (torch.zeros(2, 2, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_input_gives_clear_error(targets, x, match):
    with pytest.raises(TargetInputError, match=match):
        targets["gmm9"].log_prob(x)


class DuckGaussian:
    dim = 3
    log_Z = 0.5 * 3 * math.log(2 * math.pi)

    def log_prob(self, x):
        return -0.5 * (x * x).sum(1)


class MissingLogProb:
    dim = 2


class WrongShape:
    dim = 2

    def log_prob(self, x):
        return x


class NonFinite:
    dim = 2

    def log_prob(self, x):
        return torch.full((x.shape[0],), float("nan"))


def test_user_target_is_wrapped_with_autograd_score():
    t = get_target(f"{__name__}:DuckGaussian")
    x = torch.randn(5, 3)
    torch.testing.assert_close(t.score(x), -x)
    assert not t.has_exact_samples


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        ("MissingLogProb", "no attribute 'log_prob'"),
        ("WrongShape", r"must have shape \(4,\)"),
        ("NonFinite", "not finite"),
    ],
)
def test_bad_user_target_is_rejected(cls, match):
    with pytest.raises(InvalidUserTargetError, match=match):
        get_target(f"{__name__}:{cls}")


def test_user_target_bad_module():
    with pytest.raises(UnknownTargetError, match="cannot import module"):
        get_target("no_such_module_xyz:Foo")


def test_new_densities_match_scipy_and_quadrature(targets):
    """log ρ − log Z is the normalised density: scipy's multivariate t, the mixture of scipy
    Gaussians with each component's covariance R·diag(s²)·Rᵀ, and a 2-D grid for banana."""
    g = torch.Generator().manual_seed(3)
    t = targets["student5"]
    x = 2 * torch.randn(64, 5, generator=g, dtype=torch.float64)
    cov = (t.chol @ t.chol.T).numpy()
    want = stats.multivariate_t(np.zeros(5), cov, df=t.dof).logpdf(x.numpy())
    np.testing.assert_allclose(t.log_prob(x).numpy() - t.log_Z, want, rtol=1e-10, atol=1e-10)

    t = targets["rotmix4"]
    x = 3 * torch.randn(64, 4, generator=g, dtype=torch.float64)
    covs = (t.roots @ t.roots.transpose(1, 2)).numpy()
    dens = sum(
        w * stats.multivariate_normal(m, c).pdf(x.numpy())
        for w, m, c in zip(t.weights.numpy(), t.means.numpy(), covs, strict=True)
    )
    np.testing.assert_allclose(t.log_prob(x).numpy(), np.log(dens), rtol=1e-9)
    assert torch.allclose(
        torch.linalg.det(t.roots @ t.roots.transpose(1, 2)),
        torch.tensor(
            [
                float(np.prod(np.square(s)))
                for s in ((1.2, 0.3, 0.6, 0.8), (0.4, 1.0, 0.8, 0.3), (0.9, 0.5, 0.3, 1.1))
            ],
            dtype=torch.float64,
        ),
    )  # rotations keep the axis variances

    t = targets["banana"]
    x1 = torch.linspace(-9, 9, 721, dtype=torch.float64)  # ±6σ₁
    x2 = torch.linspace(-5, 36, 1641, dtype=torch.float64)
    xx, yy = torch.meshgrid(x1, x2, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    cell = float(x1[1] - x1[0]) * float(x2[1] - x2[0])
    log_z = float(torch.logsumexp(t.log_prob(pts), 0)) + math.log(cell)
    assert log_z == pytest.approx(t.log_Z, abs=1e-4)


@pytest.mark.parametrize("name", ["banana", "rotmix4", "student5", "gmm9", "mw54"])
def test_exact_samples_have_the_stated_marginal_stds_and_mode_masses(targets, name):
    """200,000 exact draws: every marginal std within 1.5 % of `marginal_stds` (the std of a
    sample std is ≈ 0.2 % for Gaussian tails here and ≈ 0.6 % for student5's ν = 5 tails,
    so this is > 2.5 standard errors), and every mode's share within 0.005 of its mass
    (standard error ≤ 0.0012)."""
    t = targets[name]
    x = t.sample(200_000, torch.Generator().manual_seed(11)).double()
    torch.testing.assert_close(x.std(0), t.marginal_stds(), rtol=0.015, atol=0.0)
    if t.mode_weights() is not None:
        share = torch.bincount(t.mode_assignment(x), minlength=t.n_modes) / len(x)
        torch.testing.assert_close(share.double(), t.mode_weights(), rtol=0.0, atol=0.005)
