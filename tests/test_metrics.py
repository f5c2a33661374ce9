"""Metrics on analytic cases, the fast paper Sinkhorn against slow references, estimators."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from scipy.special import logsumexp

from cds.jacobians import log_abs_det_jacobian
from cds.metrics import (
    FOLD_THRESHOLD,
    effective_sample_size,
    elbo,
    log_mean_exp,
    log_mean_exp_std_error,
    log_z_report,
    marginal_std_errors,
    marginal_std_rel_error,
    mmd_rbf,
    mode_coverage,
    mode_mass_errors,
    paper_sinkhorn,
    sinkhorn,
    sinkhorn_divergence,
)
from cds.metrics.sinkhorn import (
    _SHIFT_TOLERANCE,
    PAPER_EPSILON,
    _row_logsumexp2,
    _scaled_cost,
)


def slow_paper_sinkhorn(x: np.ndarray, y: np.ndarray, eps=1e-3, max_iter=100, tol=1e-5) -> float:
    """Obviously-correct float64 transcription of docs/methods.md §7 definition."""
    n, m = len(x), len(y)
    M = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    log_a, log_b = np.full(n, -np.log(n)), np.full(m, -np.log(m))
    u, v = np.zeros(n), eps * log_b
    for _ in range(max_iter):
        u_new = eps * (log_a - logsumexp((v[None, :] - M) / eps, axis=1))
        v_new = eps * (log_b - logsumexp((u_new[:, None] - M) / eps, axis=0))
        done = np.abs(u_new - u).max() < tol and np.abs(v_new - v).max() < tol
        u, v = u_new, v_new
        if done:
            break
    return float((np.exp((u[:, None] + v[None, :] - M) / eps) * M).sum())


@pytest.mark.parametrize("dim", [2, 10])
def test_fast_sinkhorn_matches_slow_reference(dim):
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(300, dim, generator=g) * 2
    y = torch.randn(280, dim, generator=g) * 2 + 0.3
    slow = slow_paper_sinkhorn(x.double().numpy(), y.double().numpy())
    fast = paper_sinkhorn(x, y).value
    chunked = paper_sinkhorn(x, y, max_cost_bytes=0, chunk_rows=37).value
    # room for C alone: the v-update reads Cᵀ through a strided view of it
    viewed = paper_sinkhorn(x, y, max_cost_bytes=4 * 300 * 280 + 4, chunk_rows=37).value
    assert fast == pytest.approx(slow, rel=1e-4)
    assert chunked == pytest.approx(fast, rel=1e-6)
    assert viewed == pytest.approx(fast, rel=1e-6)


def test_converged_sinkhorn_agrees_with_pot():
    """Where the iterations converge (large ε), the plan is POT's sinkhorn_log plan."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 1
    res = paper_sinkhorn(x, y, epsilon=0.5, max_iter=5000, tolerance=1e-5)
    assert res.converged
    a = np.full(200, 1 / 200)
    M = ot.dist(x.double().numpy(), y.double().numpy(), metric="euclidean")
    plan = ot.sinkhorn(a, a, M, 0.5, method="sinkhorn_log", numItermax=10000, stopThr=1e-12)
    assert res.value == pytest.approx(float((plan * M).sum()), rel=1e-4)


def test_sinkhorn_identical_sets_and_permutation_invariance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 2, generator=g) * 3
    assert paper_sinkhorn(x, x).value < 1e-3
    perm = torch.randperm(500, generator=g)
    y = torch.randn(500, 2, generator=g) * 3
    assert paper_sinkhorn(x[perm], y).value == pytest.approx(paper_sinkhorn(x, y).value, rel=1e-4)


def test_the_sinkhorn_cost_needs_float64():
    """The cost's ‖x‖² + ‖y‖² − 2x·y expansion in float32 puts zero distances about ε = 1e-3
    away from zero (catastrophic cancellation at |x|² ≈ 20); float64 keeps them exact to 1e-6,
    which is why the metric computes its cost in float64 on every device."""
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1)) * 3

    def self_distances(z: torch.Tensor) -> torch.Tensor:
        sq = z.square().sum(1, keepdim=True) + z.square().sum(1) - 2 * z @ z.T
        return sq.clamp_min(0).sqrt().diagonal()

    assert float(self_distances(x.double()).max()) < 1e-6
    assert float(self_distances(x).max()) > 0.3 * PAPER_EPSILON


def test_a_row_shift_near_its_log_sum_exp_gives_the_result_of_its_maximum():
    """Once the potentials move by less than `_SHIFT_TOLERANCE`, the iterations shift each row
    by its previous log-sum-exp instead of its maximum: any shift that close gives the same
    values up to float rounding (rtol 1e-6), even where a row's terms span thousands of binary
    orders of magnitude."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 3, generator=g) * 2
    y = torch.randn(150, 3, generator=g) * 2
    cost, _, buffer = _scaled_cost(x, y, PAPER_EPSILON, chunk_rows=16, max_cost_bytes=None)
    v = torch.randn(150, generator=g) * 50
    exact = _row_logsumexp2(v, cost, buffer)
    for largest in (0.0, 0.5 * _SHIFT_TOLERANCE, _SHIFT_TOLERANCE):
        offset = largest * (2 * torch.rand(200, generator=g) - 1)
        shifted = _row_logsumexp2(v, cost, buffer, near=exact + offset)
        torch.testing.assert_close(shifted, exact, rtol=1e-6, atol=0.0)
    far = _row_logsumexp2(v, cost, buffer, near=exact + 200.0)  # outside float32's exponents
    assert not torch.isfinite(far).all() or (far - exact).abs().max() > 1.0


@pytest.mark.parametrize("same_set", [False, True])
def test_the_iterations_shift_rows_by_their_previous_log_sum_exp(monkeypatch, same_set):
    """Each shift `_log_domain_iterations` passes is the same rows' log-sum-exp of the previous
    iteration and lies within `_SHIFT_TOLERANCE` of the new one; most passes are shifted; and
    the potentials after 40 iterations equal those of the iterations that always shift by the
    maximum (tolerance 0) up to float rounding, for two sets and for a set against itself (C
    serving as Cᵀ)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 2, generator=g) * 2
    y = x if same_set else torch.randn(250, 2, generator=g) * 2 + 0.3
    real = sinkhorn._row_logsumexp2
    calls: list[tuple[torch.Tensor | None, torch.Tensor]] = []

    def spy(v, cost, buffer, near=None):
        out = real(v, cost, buffer, near)
        calls.append((near, out))
        return out

    monkeypatch.setattr(sinkhorn, "_row_logsumexp2", spy)

    def iterate() -> tuple[torch.Tensor, torch.Tensor, int]:
        cost, cost_t, buffer = _scaled_cost(x, y, PAPER_EPSILON, None, None)
        u, v, n_iter, _ = sinkhorn._log_domain_iterations(cost, cost_t, 40, 0.0, buffer)
        return u, v, n_iter

    u, v, n_iter = iterate()
    shifted = 0
    for i, (near, out) in enumerate(calls):  # u-updates at even calls, v-updates at odd ones
        if near is not None:
            shifted += 1
            torch.testing.assert_close(near, calls[i - 2][1], rtol=1e-6, atol=1e-4)
            assert float((out - near).abs().max()) < _SHIFT_TOLERANCE
    assert calls[0][0] is None and calls[1][0] is None
    assert shifted > len(calls) // 2
    calls.clear()
    monkeypatch.setattr(sinkhorn, "_SHIFT_TOLERANCE", 0.0)
    u_max, v_max, n_iter_max = iterate()
    assert all(near is None for near, _ in calls)
    assert n_iter == n_iter_max
    # U and V are potentials times log₂e/ε ≈ 1443: 1e-3 here is 7e-7 in distance units
    torch.testing.assert_close(u, u_max, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(v, v_max, rtol=1e-6, atol=1e-3)


def test_sinkhorn_of_shifted_copy_is_shift_norm():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1000, 2, generator=g) * 0.2
    shift = torch.tensor([3.0, 4.0])
    assert paper_sinkhorn(x, x + shift).value == pytest.approx(5.0, rel=0.01)


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="equal D"):
        paper_sinkhorn(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        paper_sinkhorn(torch.tensor([[float("inf"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="must not be empty"):
        paper_sinkhorn(torch.zeros(0, 2), torch.zeros(3, 2))


def test_mmd_and_divergence_analytic_cases():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(800, 2, generator=g)
    y = torch.randn(800, 2, generator=g)
    same = mmd_rbf(x, y)
    shifted = mmd_rbf(x, y + 2.0)
    assert 0 <= same < 0.01 < shifted
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    d_same = sinkhorn_divergence(x, y)
    d_far = sinkhorn_divergence(x, y + 2.0)
    assert d_far > 1.5 and d_same < 0.3 * d_far


def test_estimators_on_known_weights():
    assert effective_sample_size(torch.zeros(100)) == pytest.approx(1.0)
    one_hot = torch.full((100,), -1e4)
    one_hot[3] = 0.0
    assert effective_sample_size(one_hot) == pytest.approx(0.01)
    big = torch.tensor([1e4, 1e4 + math.log(3.0)], dtype=torch.float64)
    assert log_mean_exp(big) == pytest.approx(1e4 + math.log(2.0), abs=1e-9)
    assert log_mean_exp(-big) == pytest.approx(-1e4 + math.log((1 + 1 / 3) / 2), abs=1e-9)
    assert elbo(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    rep = log_z_report(torch.tensor([0.0, 0.0]), true_log_Z=0.5)
    assert rep["abs_dlogZ_is"] == pytest.approx(0.5) and rep["abs_dlogZ_elbo"] == pytest.approx(0.5)
    assert log_z_report(torch.zeros(3), None)["abs_dlogZ_is"] is None


def test_importance_sampling_recovers_gaussian_normalizer():
    """IS with a wider Gaussian proposal recovers log Z of Z·N(0,1) within a stated tolerance."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(200000, generator=g, dtype=torch.float64) * 1.5
    log_q = -0.5 * (z / 1.5) ** 2 - math.log(1.5 * math.sqrt(2 * math.pi))
    log_rho = -0.5 * z**2 + 2.0  # Z = e²·√(2π)
    assert log_mean_exp(log_rho - log_q) == pytest.approx(
        2.0 + 0.5 * math.log(2 * math.pi), abs=0.01
    )
    assert effective_sample_size(log_rho - log_q) > 0.5


def test_standard_errors_match_the_spread_over_repeats():
    """The delta-method standard error of log Ẑ_IS and std/√n of the ELBO agree within 15 %
    with the spread of 200 independent estimates (log-normal weights, σ = 1, n = 2000)."""
    g = torch.Generator().manual_seed(11)
    draws = torch.randn(200, 2000, generator=g, dtype=torch.float64) - 0.5  # E[w] = 1
    reports = [log_z_report(row, 0.0) for row in draws]
    is_values = torch.tensor([r["log_Z_is"] for r in reports])
    elbo_values = torch.tensor([r["elbo"] for r in reports])
    mean_se = sum(r["log_Z_is_se"] for r in reports) / len(reports)
    assert mean_se == pytest.approx(float(is_values.std()), rel=0.15)
    assert reports[0]["elbo_se"] == pytest.approx(float(elbo_values.std()), rel=0.15)
    assert abs(float(is_values.mean())) < 3 * mean_se / math.sqrt(200) + 1e-3  # unbiased to O(1/n)
    assert log_mean_exp_std_error(torch.zeros(50)) == 0.0  # equal weights: no error


def test_weights_of_a_folding_map_are_reported_invalid():
    """x ↦ x² folds the line: half the samples have det < 0 and the weights over-count, so
    the estimates are withheld; a monotone map with one (negative) sign everywhere is valid."""
    x0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, signs = log_abs_det_jacobian(lambda v: v.square(), x0)
    folded = log_z_report(torch.zeros(4000), 0.0, det_signs=signs)
    assert folded["weights_valid"] is False and "folds" in folded["invalid_reason"]
    assert folded["negative_det_fraction"] == pytest.approx(0.5, abs=0.03)
    assert folded["log_Z_is"] is None and folded["ess"] is None
    assert folded["invalid_estimates"]["log_Z_is"] == pytest.approx(0.0)
    _, signs = log_abs_det_jacobian(lambda v: -(v**3) - v, x0)
    reversing = log_z_report(torch.zeros(4000), 0.0, det_signs=signs)
    assert reversing["weights_valid"] and reversing["negative_det_fraction"] == 1.0
    # a flow folds when any of its steps does, even if the product of signs is positive
    steps = torch.ones(2, 1000)
    steps[:, :20] = -1  # 2 % of samples fold at both steps
    flow = log_z_report(torch.zeros(1000), 0.0, det_signs=steps)
    assert flow["negative_det_fraction"] == 0.0 and flow["folded_fraction"] == 0.02
    assert not flow["weights_valid"]
    steps[:, :20] = 1
    steps[0, 0] = -1  # one sample in 1000 is below the threshold
    assert FOLD_THRESHOLD >= 1e-3
    assert log_z_report(torch.zeros(1000), 0.0, det_signs=steps)["weights_valid"]


def test_mode_coverage_and_marginals():
    full = mode_coverage(torch.arange(9).repeat(10), 9)
    assert full["entropic_coverage"] == pytest.approx(1.0) and full["modes_hit"] == 1.0
    single = mode_coverage(torch.zeros(90, dtype=torch.long), 9)
    assert single["entropic_coverage"] == pytest.approx(1 / 9) and single[
        "modes_hit"
    ] == pytest.approx(1 / 9)
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(50000, 3, generator=g) * 3
    err = marginal_std_errors(torch.randn(50000, 3, generator=g) * 3, ref)
    assert err["std_abs_err_max"] < 0.1 and err["std_x0"] == pytest.approx(3.0, abs=0.05)


def test_mode_masses_and_relative_marginal_stds():
    assignments = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    exact = mode_mass_errors(assignments, torch.tensor([0.5, 0.3, 0.2]))
    assert exact["mode_mass_err_max"] == pytest.approx(0.0, abs=1e-7)  # float32 weights
    assert exact["mode_mass_min"] == pytest.approx(0.2)
    missed = mode_mass_errors(torch.zeros(10, dtype=torch.long), torch.tensor([0.6, 0.4]))
    assert missed["mode_mass_err_max"] == pytest.approx(0.4) and missed["mode_mass_min"] == 0.0
    x = torch.tensor([[-1.0, -2.0], [1.0, 2.0]])  # stds √2 and 2√2
    err = marginal_std_rel_error(x, torch.tensor([math.sqrt(2.0), 2.0]))
    assert err == pytest.approx(math.sqrt(2.0) - 1.0)


def test_sample_quality_reports_mode_masses_against_the_targets_weights():
    from cds.metrics.report import sample_quality
    from cds.targets import get_target

    target = get_target("rotmix4")
    g = torch.Generator().manual_seed(2)
    exact = sample_quality(target, target.sample(3000, g), target.sample(3000, g))
    assert exact["mode_mass_err_max"] < 0.03 and exact["std_rel_err_max"] < 0.05
    heavy = target.sample(6000, g)
    lopsided = heavy[target.mode_assignment(heavy) == 0][:3000]  # only the 0.5 mode
    report = sample_quality(target, lopsided, target.sample(len(lopsided), g))
    assert report["mode_mass_err_max"] == pytest.approx(0.5, abs=1e-9)
    assert report["std_rel_err_max"] > 0.3


def test_a_curve_point_scores_the_paper_sinkhorn_alone():
    """`sinkhorn_only` (a budget-curve point) gives the same Sinkhorn and floor ratio as the full
    quality report, from the same draws, without the metrics a curve point does not keep."""
    from cds.metrics import noise_floor
    from cds.networks import ConsistencyStudent
    from cds.samplers import ConsistencySampler
    from cds.scoring import References, score_sampler
    from cds.sde import VPSchedule
    from cds.targets import StandardNormalPrior, get_target

    target = get_target("gmm9")
    schedule = VPSchedule()
    sampler = ConsistencySampler(
        ConsistencyStudent(2, schedule.T), StandardNormalPrior(2), schedule.alpha, [schedule.T]
    )
    g = torch.Generator().manual_seed(3)
    refs = References(target.sample(400, g), target.sample(400, g))
    floor = noise_floor(target, 400, g)
    full, _ = score_sampler(sampler, target, refs, floor, 0, "student_K1", 400)
    alone, _ = score_sampler(sampler, target, refs, floor, 0, "student_K1", 400, sinkhorn_only=True)
    assert alone["sinkhorn"] == full["sinkhorn"]
    assert alone["sinkhorn_ratio"] == full["sinkhorn_ratio"] > 1.0
    assert {"mmd", "sinkhorn_divergence", "mode_mass_err_max"} <= full.keys()
    assert not {"mmd", "sinkhorn_divergence", "mode_mass_err_max"} & alone.keys()
