"""Training budgets (docs/methods.md §10, "Budgets"): the plateau rule ends a run by its
validation, cools the LR down with the EMA inside the cool-down, respects its cap, records why it
stopped, and resumes exactly; the budgets are validated with the params."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cds.config import OptimParams, ParamsError, StoppingParams, load_params
from cds.training import Criterion, Trainer

OPTIM = OptimParams(
    iterations=1000, batch_size=2, lr=0.01, lr_decay_every=5, lr_final_factor=0.1, ema_window=10
)


def quadratic(model: nn.Linear):
    """Loss (w − 1)² on the one weight of a 1 → 1 linear map."""

    def objective(iteration: int, generator: torch.Generator):
        return (model.weight - 1.0).square().sum(), {}

    return objective


def trainer(tmp_path, validation, stopping: StoppingParams, name: str = "run.pt") -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(1, 1, bias=False)
    return Trainer(
        model,
        quadratic(model),
        OPTIM,
        seed=0,
        kind="toy",
        fingerprint="toy",
        checkpoint_path=tmp_path / name,
        progress=False,
        stopping=stopping,
        validation=validation,
    )


def test_a_criterion_gains_only_beyond_its_tolerance():
    assert Criterion(1.0, 0.1).gains_over(None)
    assert Criterion(1.2, 0.1).gains_over(1.0) and not Criterion(1.05, 0.1).gains_over(1.0)
    assert Criterion(0.8, 0.1, higher_is_better=False).gains_over(1.0)
    assert not Criterion(0.95, 0.1, higher_is_better=False).gains_over(1.0)
    assert not Criterion(math.nan, 0.1).gains_over(None)


def test_the_cool_down_starts_after_patience_checks_without_gain(tmp_path):
    """Scripted errors 10, 9, …, 5 then flat: the 6th check (iteration 60) is the last gain, so
    with patience 2 the cool-down starts at 80 and the run ends at 80 + 20."""
    checks = []

    def validation(model):
        checks.append(len(checks))
        return {"err": Criterion(max(10.0 - len(checks) + 1, 5.0), 0.1, higher_is_better=False)}

    rule = StoppingParams(check_every=10, patience=2, min_iterations=0, cooldown=20)
    run = trainer(tmp_path, validation, rule)
    result = run.run()
    assert result.iterations == 100 and len(checks) == 8
    assert result.stop["cooldown_from"] == 80 and result.stop["reason"].startswith("plateau")
    # the LR is constant until the cool-down, then decays every 5 iterations towards 0.1·lr
    assert run._plateau_lr(79) == OPTIM.lr
    assert run._plateau_lr(84) == OPTIM.lr and run._plateau_lr(85) < OPTIM.lr
    assert run._plateau_lr(99) == pytest.approx(OPTIM.lr * 0.1 ** (15 / 20))
    assert run.ema_start == 90 and run.ema_started
    assert torch.load(tmp_path / "run.pt", weights_only=True)["iterations"] == 100


def test_the_cap_cools_down_in_time_and_says_so(tmp_path):
    checks = []

    def always_better(model):
        checks.append(1)
        return {"gain": Criterion(float(len(checks)), 0.1)}

    rule = StoppingParams(check_every=10, patience=2, min_iterations=0, cooldown=300)
    result = trainer(tmp_path, always_better, rule).run()
    assert result.iterations == OPTIM.iterations == 1000
    assert result.stop["cooldown_from"] == 700 and result.stop["reason"].startswith("cap")


def test_minimum_iterations_hold_off_the_cool_down(tmp_path):
    def flat(model):
        return {"err": Criterion(1.0, 0.1)}

    rule = StoppingParams(check_every=10, patience=2, min_iterations=200, cooldown=20)
    result = trainer(tmp_path, flat, rule).run()
    assert result.stop["cooldown_from"] == 200 and result.iterations == 220


def test_an_interrupted_plateau_run_resumes_to_the_same_weights(tmp_path):
    """The validation reads the model (|w − 1| to 2 decimals), so the decision depends on the
    weights; stopped inside the cool-down and resumed, the run ends exactly as one that ran
    through."""

    def distance(model):
        return {"err": Criterion(round(abs(float(model.weight.detach()) - 1.0), 2), 0.0, False)}

    rule = StoppingParams(check_every=10, patience=2, min_iterations=0, cooldown=40)
    whole = trainer(tmp_path, distance, rule, "whole.pt").run()
    cut = whole.stop["cooldown_from"] + 7
    trainer(tmp_path, distance, rule, "cut.pt").run(stop_after=cut)
    resumed = trainer(tmp_path, distance, rule, "cut.pt")
    assert resumed.try_resume() and resumed.plateau.cooldown_from == whole.stop["cooldown_from"]
    result = resumed.run()
    assert result.iterations == whole.iterations and result.stop == whole.stop
    assert torch.equal(result.ema_model.weight, whole.ema_model.weight)


def test_a_criterion_diverges_when_non_finite_or_an_error_grows_past_the_factor():
    assert Criterion(math.inf, 0.1, higher_is_better=False).diverged_from(1.0, 3.0)
    assert Criterion(math.nan, 0.1).diverged_from(None, 3.0)
    assert Criterion(3.5, 0.1, higher_is_better=False).diverged_from(1.0, 3.0)
    assert not Criterion(2.9, 0.1, higher_is_better=False).diverged_from(1.0, 3.0)
    assert not Criterion(3.5, 0.1, higher_is_better=False).diverged_from(None, 3.0)
    assert not Criterion(-50.0, 0.1).diverged_from(1.0, 3.0)  # an ELBO may fall: no ratio


def weight(run: Trainer) -> float:
    return float(run.model.weight.detach())


def scripted(errors: list[float], seen: dict[int, float]):
    """A validation every 10 iterations that reports `errors` in turn (then the last one again)
    and notes the weight it saw at each iteration."""

    def validation(model):
        seen[10 * (len(seen) + 1)] = float(model.weight.detach())
        value = errors[min(len(seen), len(errors)) - 1]
        return {"err": Criterion(value, 0.1, higher_is_better=False)}

    return validation


def test_the_cool_down_starts_from_the_last_check_with_a_gain(tmp_path):
    """Errors 10, 9, 8 then flat: the 3rd check (iteration 30) is the last gain; with patience 2
    the cool-down starts at 50 from the weights (and Adam state) the model had at 30."""
    seen: dict[int, float] = {}
    rule = StoppingParams(check_every=10, patience=2, min_iterations=0, cooldown=20)
    run = trainer(tmp_path, scripted([10.0, 9.0, 8.0], seen), rule)
    run.run(stop_after=50)
    assert run.plateau.cooldown_from == 50 and run.plateau.best_step == 30
    assert weight(run) == seen[30] != seen[50]
    assert torch.equal(
        run.optimizer.state_dict()["state"][0]["exp_avg"],
        run.best_state["optimizer"]["state"][0]["exp_avg"],
    )


def test_a_diverged_check_goes_back_and_halves_the_lr(tmp_path):
    """Errors 10, 9, 8, then 40 (5× the best): back to the weights of iteration 30, the LR
    halved; flat afterwards, the plateau ends the run at its LR."""
    seen: dict[int, float] = {}
    rule = StoppingParams(check_every=10, patience=2, min_iterations=0, cooldown=20)
    run = trainer(tmp_path, scripted([10.0, 9.0, 8.0, 40.0, 8.0], seen), rule)
    run.run(stop_after=40)
    assert run.plateau.backoffs == 1 and weight(run) == seen[30] != seen[40]
    assert run._plateau_lr(41) == OPTIM.lr / 2
    kept = copy.deepcopy(run.best_state)
    run.run(stop_after=20)  # no gain since: the cool-down at 60 restores iteration 30 again
    assert run.plateau.cooldown_from == 60 and weight(run) == seen[30]
    assert torch.equal(
        run.optimizer.state_dict()["state"][0]["exp_avg"], kept["optimizer"]["state"][0]["exp_avg"]
    )
    result = run.run()
    assert result.stop["reason"].startswith("plateau") and result.stop["backoffs"] == 1
    assert result.stop["cooldown_from"] == 60 and result.stop["restored_from"] == 30
    assert run.plateau.checks[3]["diverged"] == ["err"]


def test_repeated_divergence_cools_down_after_the_last_back_off(tmp_path):
    def worse_each_time(model):
        worse_each_time.calls += 1
        return {"err": Criterion(5.0**worse_each_time.calls, 0.1, higher_is_better=False)}

    worse_each_time.calls = 0
    rule = StoppingParams(check_every=10, patience=5, min_iterations=0, cooldown=20, max_backoffs=2)
    run = trainer(tmp_path, worse_each_time, rule)
    result = run.run()
    # the third divergence (iteration 40) exceeds max_backoffs = 2: the cool-down starts from
    # the first check's state at a third halving of the LR
    assert result.stop["backoffs"] == 3 and result.stop["reason"].startswith("diverged")
    assert result.stop["cooldown_from"] == 40 and result.stop["restored_from"] == 10
    assert run._plateau_lr(40) == OPTIM.lr / 8


def test_early_figures_may_grow_but_a_non_finite_one_goes_back_to_the_start(tmp_path):
    """Before `min_iterations` an error that grows 5× is not divergence (figures of an
    untrained model move for good reasons); a NaN is, and with no gain yet the run goes back
    to its initial weights."""
    seen: dict[int, float] = {}
    rule = StoppingParams(check_every=10, patience=9, min_iterations=40, cooldown=20)
    run = trainer(tmp_path, scripted([math.nan, 1.0, 5.0, 30.0], seen), rule)
    initial = weight(run)
    run.run(stop_after=10)
    assert run.plateau.backoffs == 1 and weight(run) == initial != seen[10]
    run.run(stop_after=30)
    assert [c["diverged"] for c in run.plateau.checks] == [["err"], [], [], ["err"]]
    assert run.plateau.backoffs == 2 and weight(run) == seen[20]


def test_mostly_skipped_iterations_count_as_divergence(tmp_path):
    """A loss that is NaN from iteration 12 on: no step is applied, so the checks see the
    weights unchanged, but the skips alone say the run diverged."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1, bias=False)

    def objective(iteration, generator):
        loss = (model.weight - 1.0).square().sum()
        return (loss * math.nan if iteration >= 12 else loss), {}

    def flat(model):
        return {"err": Criterion(1.0, 0.1, higher_is_better=False)}

    rule = StoppingParams(check_every=10, patience=5, min_iterations=0, cooldown=20, max_backoffs=1)
    run = Trainer(
        model,
        objective,
        OPTIM,
        seed=0,
        kind="toy",
        fingerprint="toy",
        checkpoint_path=tmp_path / "nan.pt",
        progress=False,
        stopping=rule,
        validation=flat,
    )
    result = run.run()
    assert [c["diverged"] for c in run.plateau.checks] == [[], *[["skipped iterations"]] * 2]
    assert result.stop["reason"].startswith("diverged") and result.stop["cooldown_from"] == 30


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.stopping.cooldown=20000", "teacher.stopping.cooldown = 20000 must be below"),
        ("scds.optim.ema_window=900", "scds.optim.ema_window = 900 must not exceed"),
        ("cdds.stopping.rule=soon", "cdds.stopping.rule"),
        ("teacher.stopping.validation_samples=3", "teacher.stopping.validation_samples"),
        ("cdds.stopping.backoff=1.5", "cdds.stopping.backoff"),
        ("scds.stopping.divergence_factor=1", "scds.stopping.divergence_factor"),
        ("teacher.stopping.max_backoffs=-1", "teacher.stopping.max_backoffs"),
    ],
)
def test_bad_budgets_are_refused_by_name(override, message):
    with pytest.raises(ParamsError, match=message):
        load_params(None, [override])


def test_a_fixed_budget_needs_no_room_for_a_cool_down():
    params = load_params(None, ["teacher.stopping.rule=fixed", "teacher.optim.iterations=100"])
    assert params.teacher.optim.iterations == 100


def test_validations_see_an_exact_sampler_as_exact_and_draw_the_same_every_check():
    """On ρ = Z₀·N(0, I) the untrained control is the exact sampler (tests/test_teacher.py): its
    PF ODE is the identity, so the teacher's held-out paths stand still, SCDS's K-step and
    N-step flows agree (self-consistency error 0), and the SDE's ELBO approaches log Z₀ with
    ESS near 1. A student that is the identity then has distillation error 0, and one that
    doubles its input does not. Each validation draws the same paths at every call."""
    from cds.networks import Control
    from cds.run_config import make_control
    from cds.sde import VPSchedule, uniform_grid
    from cds.targets import StandardNormalPrior
    from cds.validation import (
        distillation_validation,
        self_consistency_validation,
        teacher_validation,
    )
    from tests.conftest import ScaledGaussian

    target, prior = ScaledGaussian(2, 1.5), StandardNormalPrior(2)
    control, grid = Control(2, VPSchedule()), uniform_grid(256)
    teacher = teacher_validation(target, prior, grid, 2000, seed=0)(control)
    # Euler–Maruyama is exact only as N → ∞: at N = 256 the ELBO is 0.07 below log Z₀
    assert teacher["elbo"].value == pytest.approx(1.5, abs=0.1) and teacher["ess"].value > 0.8
    assert teacher == teacher_validation(target, prior, grid, 2000, seed=0)(control)

    class Scaled(nn.Module):
        def __init__(self, factor: float):
            super().__init__()
            self.factor = factor

        def forward(self, x, tau):
            return self.factor * x

    fine = uniform_grid(16)
    distil = distillation_validation(control, target, prior, fine, [0, 4, 8, 12, 16], 256, 0, "mse")
    exact = distil(Scaled(1.0))
    assert exact["distillation_error"].value == pytest.approx(0.0, abs=1e-10)
    assert exact["one_step_error"].value == pytest.approx(0.0, abs=1e-10)
    assert distil(Scaled(2.0))["one_step_error"].value > 0.5  # E‖x‖²/D = 1 for x ~ N(0, I)

    params = load_params(None)
    scds = make_control(2, VPSchedule(), params.scds.network, 10.0, step_conditioned=True)
    grid = uniform_grid(8)
    shortcut = self_consistency_validation(target, prior, grid, 256, seed=0)(scds)
    assert shortcut["self_consistency_error"].value == pytest.approx(0.0, abs=1e-10)
    assert set(self_consistency_validation(target, prior, uniform_grid(1), 64, 0)(scds)) == {"elbo"}
