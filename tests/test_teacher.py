"""DIS teacher: LV gradient, Gaussian sanity checks, one-call ODE sampling, short training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cds.config import load_params
from cds.integrators import path_rnd, sample_pf_ode, sample_sde, simulate_sde
from cds.losses import log_variance_loss
from cds.networks import Control
from cds.run_config import make_control, make_schedule
from cds.sde import VPSchedule, uniform_grid
from cds.targets import StandardNormalPrior, get_target
from cds.teacher import evaluate_sde_sampler, load_teacher, train_teacher
from cds.training import ema_decay
from tests.conftest import ScaledGaussian


def test_lv_gradient_matches_finite_differences():
    """∇L_LV from the batched recomputation equals central differences of the LV objective
    with the path (states, noises) and ū held fixed, evaluated step by step."""
    torch.manual_seed(0)
    schedule = VPSchedule()
    control = Control(2, schedule, width=8, depth=3)
    with torch.no_grad():  # move off the zero-initialized output so every parameter matters
        for p in control.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = get_target("gmm9")
    prior = StandardNormalPrior(2)
    grid = uniform_grid(6)
    paths = simulate_sde(control, target, prior, grid, 32, torch.Generator().manual_seed(1))
    control.double()
    grid = grid.double()
    for field in ("states", "noises", "guidance", "log_prior", "log_target"):
        setattr(paths, field, getattr(paths, field).double())
    u_bar = [control(paths.states[k], float(grid[k]), target.score).detach() for k in range(6)]

    def stepwise_loss(model: Control) -> torch.Tensor:
        rnd = paths.log_prior - paths.log_target
        for k in range(6):
            x, t, dt = paths.states[k], float(grid[k]), float(grid[k + 1] - grid[k])
            u = model(x, t, target.score)
            rnd = rnd + (u * (u_bar[k] - 0.5 * u)).sum(1) * dt
            rnd = rnd + math.sqrt(dt) * (u * paths.noises[k]).sum(1)
        return rnd.var() / 2

    loss, _ = log_variance_loss(path_rnd(control, paths, grid), 2)
    grads = torch.autograd.grad(loss, list(control.parameters()))
    # The stored guidance is float32, so the two agree to float32 precision.
    with torch.no_grad():
        stepwise = float(stepwise_loss(control))
    assert float(loss.detach()) == pytest.approx(stepwise, rel=1e-6)
    h = 1e-6
    checked = 0
    for (name, param), grad in zip(control.named_parameters(), grads, strict=True):
        for idx in [0, param.numel() // 2]:
            with torch.no_grad():
                flat = param.view(-1)
                flat[idx] += h
                up = float(stepwise_loss(control))
                flat[idx] -= 2 * h
                down = float(stepwise_loss(control))
                flat[idx] += h
            fd = (up - down) / (2 * h)
            assert grad.view(-1)[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), name
            checked += 1
    assert checked >= 20


def test_untrained_control_is_exact_for_a_gaussian_target():
    """u = −σx: Var(R) → 0 and mean(−R) → log Z₀ (Δdiv included), both O(1/N) for
    Euler–Maruyama (measured: Var 0.87, 0.21, 0.05 at N = 64, 256, 1024); PF ODE = identity."""
    target = ScaledGaussian(3, log_z0=1.7)
    prior = StandardNormalPrior(3)
    control = Control(3, VPSchedule())
    variances, gaps = [], []
    for n_steps in (64, 256, 1024):
        w = sample_sde(
            control, target, prior, uniform_grid(n_steps), 4000, torch.Generator().manual_seed(0)
        )
        variances.append(float(w.log_weights.var()))
        gaps.append(abs(float(w.log_weights.mean()) - 1.7))
    for coarse, fine in itertools.pairwise(variances):
        assert 2.5 < coarse / fine < 6.0  # ≈ 4 for a 4× finer grid
    assert gaps[0] > gaps[1] > gaps[2]
    assert variances[2] < 0.1 and gaps[2] < 0.03
    x0 = prior.sample(500, torch.Generator().manual_seed(1))
    x1 = sample_pf_ode(control, target, prior, uniform_grid(32), 500, x0=x0)
    torch.testing.assert_close(x1, x0, rtol=0, atol=1e-5)


def test_one_step_ode_sampler_makes_exactly_one_network_call():
    control = Control(2, VPSchedule())
    calls = []
    original = control.net.body
    control.net.body = lambda x, e: calls.append(len(x)) or original(x, e)  # type: ignore[method-assign]
    out = sample_pf_ode(control, None, StandardNormalPrior(2), uniform_grid(1), 100)
    assert out.shape == (100, 2) and calls == [100]


def test_ema_decay_matches_spec():
    assert ema_decay(1500) == pytest.approx(1 - 1501**-0.9)
    assert 0.9985 < ema_decay(1500) < 0.9987
    assert ema_decay(10**9) == 0.9999


@pytest.mark.slow
def test_short_training_on_gmm9_improves_sinkhorn(tmp_path):
    """200 iterations at batch 256: the Sinkhorn at n = 1000 drops below 0.25 (floor ≈ 0.155,
    untrained ≈ 0.5) and the LV loss falls (measured: mean of the last 20 iterations 0.70× the
    first 20)."""
    params = load_params(
        None,
        [
            "teacher.optim.iterations=200",
            "teacher.stopping.rule=fixed",
            "teacher.optim.batch_size=256",
            "teacher.optim.ema_window=50",
            "teacher.eval_every=1000",
        ],
    )
    target = get_target("gmm9")
    ref = target.sample(1000, torch.Generator().manual_seed(9))
    prior = StandardNormalPrior(2)
    grid = uniform_grid(128)
    torch.manual_seed(0)
    untrained = make_control(2, make_schedule(params.sde), params.teacher.network, 10.0)
    gen = torch.Generator().manual_seed(3)
    before = evaluate_sde_sampler(untrained, target, prior, grid, 1000, gen, ref)["sinkhorn"]
    result = train_teacher(params, target, tmp_path / "t.pt", progress=False)
    control, _ = load_teacher(tmp_path / "t.pt")
    gen = torch.Generator().manual_seed(3)
    after = evaluate_sde_sampler(control, target, prior, grid, 1000, gen, ref)["sinkhorn"]
    assert after < 0.25 < before
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    assert last < 0.85 * first


def test_log_variance_loss_drops_nonfinite_and_huge_paths():
    rnd = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf"), 1e8, 5.0])
    loss, dropped = log_variance_loss(rnd, dim=2)
    assert dropped == 3
    assert float(loss) == pytest.approx(float(torch.tensor([1.0, 2.0, 3.0, 5.0]).var()) / 2)
    loss, dropped = log_variance_loss(torch.tensor([1.0, float("nan")]), dim=1)
    assert dropped == 1 and math.isnan(float(loss))
