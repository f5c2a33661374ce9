"""VP schedule constants, noising marginals and grids."""

from __future__ import annotations

import math

import pytest
import torch

from cds.sde import VPSchedule, power_of_two_budgets, sub_grid, uniform_grid


def test_schedule_constants_match_spec():
    s = VPSchedule()
    assert s.beta(0.0) == pytest.approx(10.0) and s.beta(1.0) == pytest.approx(0.1)
    assert s.integrated_noising_beta(1.0) == pytest.approx(5.05)
    assert s.alpha(1.0) == pytest.approx(0.0801, abs=1e-4)
    assert s.noising_variance(1.0) == pytest.approx(0.9936, abs=1e-4)


@pytest.mark.parametrize(
    ("n_steps", "c_n"),
    [(1, 0.733), (2, 0.456), (4, 0.283), (32, 0.050), (128, 0.0133), (256, 0.0067)],
)
def test_drift_divergence_is_the_discrete_normaliser(n_steps, c_n):
    """Δdiv_k = D·log(1 + ½β_kΔt_k); the continuous-time integral ½·D·∫β = 2.525·D exceeds
    it by D·c_N (c_N per dimension as measured for the default schedule)."""
    s = VPSchedule()
    grid = uniform_grid(n_steps)
    increments = s.drift_divergence_increments(grid, 3)
    beta = 10.0 - 9.9 * torch.arange(n_steps, dtype=torch.float64) / n_steps
    torch.testing.assert_close(increments, 3 * torch.log1p(0.5 * beta / n_steps))
    assert 2.525 - float(increments.sum()) / 3 == pytest.approx(c_n, abs=6e-4)


def test_schedule_respects_T():
    s = VPSchedule(T=2.0)
    assert s.beta(2.0) == pytest.approx(0.1) and s.beta(1.0) == pytest.approx(5.05)
    grid = uniform_grid(64, T=2.0)
    beta = s.beta(grid[:-1].double())
    expected = torch.log1p(0.5 * beta * 2.0 / 64).sum()
    assert float(s.drift_divergence_increments(grid, 1).sum()) == pytest.approx(float(expected))


@pytest.mark.slow
def test_noising_marginal_matches_simulated_ou():
    """Simulate the noising SDE from a point mass; compare mean and variance with α(τ)."""
    s = VPSchedule()
    g = torch.Generator().manual_seed(0)
    y = torch.full((200000,), 2.0, dtype=torch.float64)
    n = 2000
    for k in range(n):
        tau = (k + 0.5) / n
        b = s.beta_min + (s.beta_max - s.beta_min) * tau
        y = (
            y
            - 0.5 * b * y / n
            + math.sqrt(b / n) * torch.randn(y.shape, generator=g, dtype=y.dtype)
        )
    assert float(y.mean()) == pytest.approx(2.0 * s.alpha(1.0), abs=0.01)
    assert float(y.var()) == pytest.approx(s.noising_variance(1.0), abs=0.01)


def test_grids():
    g = uniform_grid(8, T=2.0)
    assert g.numel() == 9 and float(g[-1]) == 2.0
    assert sub_grid(g, 2).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="divisor"):
        sub_grid(g, 3)
    assert power_of_two_budgets(8) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="power of two"):
        power_of_two_budgets(6)
    with pytest.raises(ValueError, match="n_steps"):
        uniform_grid(0)


@pytest.mark.parametrize(("field", "value"), [("beta_min", -1.0), ("T", 0.0), ("beta_max", 0.05)])
def test_bad_schedule(field, value):
    with pytest.raises(ValueError, match=field):
        VPSchedule(**{field: value})
