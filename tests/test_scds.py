"""SCDS: step conditioning, the self-consistency loss, (t, d) sampling, flow weights, training."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from cds.config import load_params
from cds.integrators import sample_pf_ode, simulate_sde
from cds.metrics import paper_sinkhorn
from cds.networks import Control
from cds.run_config import scds_fingerprint
from cds.scds import (
    SelfConsistencyObjective,
    draw_shortcut_pairs,
    extra_steps_at,
    flow_log_weights,
    load_scds,
    pf_ode_step,
    train_scds,
)
from cds.sde import VPSchedule, sub_grid, uniform_grid
from cds.targets import StandardNormalPrior, get_target
from tests.conftest import ScaledGaussian


def test_base_step_reduces_to_teacher_parametrization():
    """u(x, t, h₀) of the step-conditioned net equals a teacher whose input bias absorbs E_d(h₀)."""
    torch.manual_seed(0)
    schedule = VPSchedule()
    scds = Control(2, schedule, step_conditioned=True)
    teacher = Control(2, schedule)
    with torch.no_grad():
        for p in scds.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = {k: v for k, v in scds.state_dict().items() if not k.startswith("net.step_embedding")}
    teacher.load_state_dict(state)
    h0 = 1.0 / 128
    with torch.no_grad():
        teacher.net.input.bias += scds.net.step_embedding(torch.tensor([h0]))[0]
    x = torch.randn(20, 2)
    score = get_target("gmm9").score
    torch.testing.assert_close(scds(x, 0.3, score, d=h0), teacher(x, 0.3, score))


class ExactShortcutControl(Control):
    """For ρ = N(0, s²I) the PF ODE is linear, x(t') = r(t, t')·x(t) with
    r = √(v(t')/v(t)), v(t) = α(T−t)²s² + 1 − α(T−t)². This control makes one Euler step of any
    size exact: u = (2/σ)·((r − 1)/s − ½β)·x."""

    def __init__(self, scale: float):
        super().__init__(2, VPSchedule(), step_conditioned=True)
        self.scale = scale

    def variance(self, t):
        a = self.schedule.alpha(self.schedule.T - t)
        return a * a * self.scale**2 + 1 - a * a

    def forward(self, x, t, score_fn, d=None):
        r = torch.sqrt(self.variance(t + d) / self.variance(t))
        coef = 2.0 / self.schedule.sigma(t) * ((r - 1) / d - 0.5 * self.schedule.beta(t))
        return coef[:, None] * x


def test_self_consistency_loss_vanishes_for_the_exact_linear_control():
    target = ScaledGaussian(2, 0.0)
    target._log_prob = lambda x: -0.5 * (x / 2.0).square().sum(1)
    control = ExactShortcutControl(scale=2.0)
    x = torch.randn(64, 2)
    t = torch.rand(64) * 0.5
    d = torch.rand(64) * 0.25
    two_halves = pf_ode_step(control, target, pf_ode_step(control, target, x, t, d), t + d, d)
    one_full = pf_ode_step(control, target, x, t, 2 * d)
    closed_form = x * torch.sqrt(control.variance(t + 2 * d) / control.variance(t))[:, None]
    torch.testing.assert_close(two_halves, closed_form, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one_full, closed_form, rtol=1e-5, atol=1e-5)


def test_shortcut_pairs_stay_in_range_and_cover_every_allowed_pair():
    n_steps, levels = 16, 4
    j, start = draw_shortcut_pairs(n_steps, 200_000, torch.Generator().manual_seed(0))
    end = start + 2 ** (j + 1)
    assert int(start.min()) >= 0 and int(end.max()) <= n_steps
    assert torch.all(start % 2 ** (j + 1) == 0)  # on the powers-of-two lattice
    counts = Counter(zip(j.tolist(), start.tolist(), strict=True))
    allowed = {(lv, m * 2 ** (lv + 1)) for lv in range(levels) for m in range(n_steps >> (lv + 1))}
    assert set(counts) == allowed
    # j uniform over levels; start uniform within each level (4σ tolerance on frequencies).
    for lv in range(levels):
        n_level = sum(c for (a, _), c in counts.items() if a == lv)
        assert abs(n_level / 200_000 - 1 / levels) < 4 * math.sqrt(0.25 * 0.75 / 200_000)
        slots = n_steps >> (lv + 1)
        for m in range(slots):
            p = 1 / slots
            freq = counts[(lv, m * 2 ** (lv + 1))] / n_level
            assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n_level) + 1e-9


@pytest.mark.parametrize("bias", [1.0, -0.5])
def test_level_bias_tilts_the_step_size_distribution_and_keeps_every_pair(bias):
    """`scds.level_bias`: P(j) ∝ 2^(bias·j), starts still uniform within a level and on the
    lattice (4σ tolerance on the frequencies)."""
    n_steps, levels, n = 16, 4, 200_000
    j, start = draw_shortcut_pairs(n_steps, n, torch.Generator().manual_seed(1), bias)
    assert int(start.min()) >= 0 and int((start + 2 ** (j + 1)).max()) <= n_steps
    allowed = {(lv, m * 2 ** (lv + 1)) for lv in range(levels) for m in range(n_steps >> (lv + 1))}
    assert set(zip(j.tolist(), start.tolist(), strict=True)) == allowed
    weights = [2 ** (bias * lv) for lv in range(levels)]
    for lv in range(levels):
        p = weights[lv] / sum(weights)
        assert abs(float((j == lv).double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_training_reads_the_level_bias(tmp_path):
    """The same seed with a biased step-size draw trains different weights."""
    uniform = train_three_iterations(tmp_path / "uniform")
    biased = train_three_iterations(tmp_path / "biased", "scds.level_bias=2")
    key = "net.output.weight"
    assert not torch.equal(uniform["model"][key], biased["model"][key])


@pytest.mark.parametrize("divergence", ["exact_logdet", "exact_trace", "hutchinson"])
def test_flow_weights_are_exact_for_the_gaussian_with_an_untrained_control(divergence):
    """PF drift v ≡ 0 for ρ = Z₀·N(0, I) and the untrained control, so log w = log Z₀ exactly."""
    target = ScaledGaussian(3, log_z0=0.8)
    control = Control(3, VPSchedule(), step_conditioned=True)
    _, log_w, signs = flow_log_weights(
        control,
        target,
        StandardNormalPrior(3),
        uniform_grid(8),
        4,
        200,
        torch.Generator().manual_seed(0),
        divergence,
    )
    torch.testing.assert_close(
        log_w, torch.full((200,), 0.8, dtype=torch.float64), rtol=0, atol=1e-4
    )
    if divergence == "exact_logdet":  # the identity map: every step's determinant is +1
        assert signs.shape == (4, 200) and bool((signs == 1).all())
    else:
        assert signs is None


def test_exact_logdet_flow_weights_match_a_linear_flow():
    """With the exact-shortcut control on N(0, s²I) every K-step map is x ↦ r·x with
    r = √(v(T)/v(0)), so log w = log ρ(r·x₀) − log N(x₀; 0, I) + D·log r in closed form."""
    control = ExactShortcutControl(scale=2.0)
    target = ScaledGaussian(2, 0.0)
    target._log_prob = lambda x: -0.5 * (x / 2.0).square().sum(1)
    v_end, v_start = control.variance(torch.tensor(1.0)), control.variance(torch.tensor(0.0))
    r = math.sqrt(float(v_end / v_start))
    for k in (1, 4):
        x, log_w, _ = flow_log_weights(
            control,
            target,
            StandardNormalPrior(2),
            uniform_grid(8),
            k,
            300,
            torch.Generator().manual_seed(1),
        )
        x0 = x.double() / r
        log_p0 = -0.5 * x0.square().sum(1) - math.log(2 * math.pi)
        closed = target.log_prob(x).double() - log_p0 + 2 * math.log(r)
        torch.testing.assert_close(log_w, closed, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_short_training_on_gmm9_improves_one_step_sampler(tmp_path):
    """300 iterations (batch 256, N = 32) at the default SCDS settings: the one-step Sinkhorn
    at n = 1000 falls by > 85% relative to the untrained network (measured: 92%; the paper's
    self-consistency target without extra steps gives 80%, `benchmarks/scds_short_runs.py`)."""
    params = load_params(
        None,
        [
            "scds.n_steps=32",
            "scds.optim.iterations=300",
            "scds.stopping.rule=fixed",
            "scds.optim.batch_size=256",
            "scds.optim.ema_window=100",
        ],
    )
    target = get_target("gmm9")
    prior = StandardNormalPrior(2)
    ref = target.sample(1000, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    untrained = Control(2, VPSchedule(), step_conditioned=True)
    one_step = sub_grid(uniform_grid(32), 1)

    def one_step_sinkhorn(control: Control) -> float:
        x = sample_pf_ode(
            control, target, prior, one_step, 1000, torch.Generator().manual_seed(3), step_size=1.0
        )
        return paper_sinkhorn(x, ref).value

    before = one_step_sinkhorn(untrained)
    train_scds(params, target, tmp_path / "s.pt", progress=False)
    control, _ = load_scds(tmp_path / "s.pt")
    after = one_step_sinkhorn(control)
    assert after < 0.15 * before


def test_objective_combines_both_losses():
    params = load_params(None, ["scds.n_steps=8", "scds.optim.batch_size=16"])
    torch.manual_seed(0)
    control = Control(2, VPSchedule(), step_conditioned=True)
    with torch.no_grad():  # the zero-initialized output layer would block gradients upstream
        control.net.output.weight.normal_(0, 0.1)
    values = {}
    for lam in (0.0, 1.0):
        p = params.scds.model_copy(update={"lambda_sc": lam})
        objective = SelfConsistencyObjective(
            control, get_target("gmm9"), StandardNormalPrior(2), uniform_grid(8), p
        )
        loss, info = objective(0, torch.Generator().manual_seed(0))
        values[lam] = float(loss.detach())
        assert math.isfinite(values[lam]) and info["dropped_paths"] == 0
    assert values[1.0] > values[0.0]  # same paths and pairs: the difference is L_SC > 0
    control.zero_grad()
    loss.backward()
    assert control.net.step_embedding.mlp[0].weight.grad.abs().sum() > 0


def test_alternating_update_takes_two_steps_but_advances_schedules_once(tmp_path):
    """`update: alternating` (the authors' two optimizer steps): the first loss is λ_S·L_S, the
    follow-up is λ_SC·L_SC on the same paths and pairs; Adam steps twice per iteration while
    the LR scheduler advances once (docs/methods.md §5 (d); §12, pitfall 2)."""
    params = load_params(
        None, ["scds.n_steps=8", "scds.optim.batch_size=16", "scds.sc_extra_steps=0"]
    )
    torch.manual_seed(0)
    control = Control(2, VPSchedule(), step_conditioned=True)
    with torch.no_grad():
        control.net.output.weight.normal_(0, 0.1)

    def objective(**update):
        cfg = params.scds.model_copy(update=update)
        return SelfConsistencyObjective(
            control, get_target("gmm9"), StandardNormalPrior(2), uniform_grid(8), cfg
        )

    joint, _ = objective(update="joint")(0, torch.Generator().manual_seed(0))
    sampling_only, _ = objective(update="joint", lambda_sc=0.0)(0, torch.Generator().manual_seed(0))
    first, info = objective(update="alternating")(0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, sampling_only)
    (follow_up,) = info["follow_ups"]
    torch.testing.assert_close(first + follow_up(), joint)

    payload = train_three_iterations(tmp_path, "scds.update=alternating", "scds.sc_extra_steps=0")
    assert payload["skipped"] == 0
    assert adam_steps(payload) == {6}
    assert payload["scheduler"]["last_epoch"] == 3


THREE_ITERATIONS = [
    "scds.n_steps=8",
    "scds.optim.iterations=3",
    "scds.stopping.rule=fixed",
    "scds.optim.batch_size=16",
    "scds.optim.ema_window=2",
]


def train_three_iterations(tmp_path, *overrides: str) -> dict:
    """The checkpoint of a 3-iteration gmm9 run on an 8-step grid, batch 16."""
    params = load_params(None, [*THREE_ITERATIONS, *overrides])
    tmp_path.mkdir(parents=True, exist_ok=True)
    train_scds(params, get_target("gmm9"), tmp_path / "run.pt", progress=False)
    return torch.load(tmp_path / "run.pt", weights_only=True)


def adam_steps(payload: dict) -> set[int]:
    return {int(s["step"]) for s in payload["optimizer"]["state"].values()}


def test_extra_self_consistency_steps_draw_fresh_pairs_and_count_as_adam_steps(tmp_path):
    """`sc_extra_steps: 2`: two more optimizer steps per iteration on λ_SC·L_SC alone, each on
    newly drawn (d, t) pairs; the LR scheduler still advances once per iteration."""
    params = load_params(None, ["scds.n_steps=8", "scds.optim.batch_size=16"])
    torch.manual_seed(0)
    control = Control(2, VPSchedule(), step_conditioned=True)
    with torch.no_grad():
        control.net.output.weight.normal_(0, 0.1)
    cfg = params.scds.model_copy(update={"sc_extra_steps": 2, "sc_extra_ramp": 0.0})
    objective = SelfConsistencyObjective(
        control, get_target("gmm9"), StandardNormalPrior(2), uniform_grid(8), cfg
    )
    _, info = objective(0, torch.Generator().manual_seed(0))
    first, second = (float(f().detach()) for f in info["follow_ups"])
    assert first > 0 and second > 0 and first != second  # different pairs, same parameters

    payload = train_three_iterations(tmp_path, "scds.sc_extra_steps=2", "scds.sc_extra_ramp=0")
    assert adam_steps(payload) == {9}
    assert payload["scheduler"]["last_epoch"] == 3


def test_extra_steps_ramp_from_zero_to_their_number():
    """`sc_extra_ramp: r`: ⌊M·i / (r·I)⌋ extra steps at iteration i of I, M from i = r·I on;
    r = 0 gives M throughout."""
    counts = [extra_steps_at(i, 100, 32, 0.5) for i in range(100)]
    assert counts[0] == 0 and counts[25] == 16 and counts[49] == 31
    assert counts[50:] == [32] * 50
    assert counts == sorted(counts)
    assert {extra_steps_at(i, 100, 32, 0.0) for i in range(100)} == {32}


def test_training_reads_the_extra_steps_ramp(tmp_path):
    """4 extra steps ramped over the whole 3-iteration run: 0, 1 and 2 of them, so 3 + 3 Adam
    steps in all (12 without the ramp)."""
    payload = train_three_iterations(tmp_path, "scds.sc_extra_steps=4", "scds.sc_extra_ramp=1")
    assert adam_steps(payload) == {6}
    assert payload["scheduler"]["last_epoch"] == 3


def test_fingerprint_covers_the_ramp_and_is_what_a_run_records(tmp_path):
    """Every scds field enters the fingerprint (ramp 0 and 0.5 differ), and a run records the
    fingerprint that decides its resume."""
    unramped = load_params(None, ["scds.sc_extra_steps=4", "scds.sc_extra_ramp=0"])
    ramped = load_params(None, ["scds.sc_extra_steps=4", "scds.sc_extra_ramp=0.5"])
    assert scds_fingerprint(ramped) != scds_fingerprint(unramped)

    payload = train_three_iterations(tmp_path, "scds.sc_extra_ramp=0.25")
    recorded = load_params(None, [*THREE_ITERATIONS, "scds.sc_extra_ramp=0.25"])
    assert payload["fingerprint"] == scds_fingerprint(recorded)


def test_fine_ode_target_is_the_state_later_on_a_base_step_ode_path(tmp_path):
    """`sc_target: fine_ode`: the pairs' states come from B PF-ODE paths integrated at the base
    step h₀ (each state is one Euler step Φ(·, t_k, h₀) of the one before), and the target of
    the step 2^(j+1)·h₀ from grid index k is the path's state at k + 2^(j+1): the objective's
    L_SC equals that mean squared distance computed by hand from the same random draws."""
    params = load_params(None, ["scds.n_steps=8", "scds.optim.batch_size=16"])
    cfg = params.scds.model_copy(update={"sc_target": "fine_ode", "lambda_s": 0.0})
    torch.manual_seed(0)
    control = Control(2, VPSchedule(), step_conditioned=True)
    with torch.no_grad():
        control.net.output.weight.normal_(0, 0.1)
    target, prior, grid = get_target("gmm9"), StandardNormalPrior(2), uniform_grid(8)
    objective = SelfConsistencyObjective(control, target, prior, grid, cfg)
    loss, _ = objective(0, torch.Generator().manual_seed(0))

    generator = torch.Generator().manual_seed(0)
    simulate_sde(control, target, prior, grid, 16, generator, step_size=1 / 8)
    states = objective._fine_ode_states(generator, 1 / 8)
    h0 = torch.full((16,), 1 / 8)
    with torch.no_grad():
        for k in range(8):
            step = pf_ode_step(control, target, states[k], grid[k].expand(16), h0)
            torch.testing.assert_close(states[k + 1], step, rtol=1e-5, atol=1e-6)
    j, start = draw_shortcut_pairs(8, 16, generator)
    rows = torch.arange(16)
    end = start + 2 ** (j + 1)
    x = states[start, rows]
    pred = pf_ode_step(control, target, x, grid[start], grid[end] - grid[start])
    expected = (pred - states[end, rows]).square().mean() / 2
    assert float(expected.detach()) > 0
    torch.testing.assert_close(loss, expected)

    half_steps = train_three_iterations(tmp_path / "half_steps", "scds.sc_target=half_steps")
    fine_ode = train_three_iterations(tmp_path / "fine_ode", "scds.sc_target=fine_ode")
    key = "net.output.weight"
    assert not torch.equal(half_steps["model"][key], fine_ode["model"][key])
