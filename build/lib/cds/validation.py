"""What the plateau rule watches (docs/methods.md §10, "Budgets"): figures a user has without
exact samples, computed on draws from the stream `validation`, the same draws at every check
(common random numbers), so a change between checks is the model's and not the draw's.

- Teacher: the ELBO of its N-step SDE sampler (a gain must exceed two standard errors) and its
  normalised ESS (gain > 0.03), on fresh paths.
- CDDS: the distillation error on held-out teacher PF-ODE paths: the consistency loss over every
  coarse pair, and the one-step error |f(x_prior, T) − x_teacher|²/D against the teacher's
  endpoint (tolerance: 2 % of the value each).
- SCDS: the self-consistency error, mean over K ∈ {1, 2, …, N/2} of |x_K − x_N|²/D between its
  K-step and N-step PF-ODE samples from the same prior draws (tolerance 2 %), and the ELBO of
  its N-step SDE sampler (a gain must exceed two standard errors).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cds import seeding
from cds.integrators import pf_ode_states, sample_pf_ode, sample_sde
from cds.losses import consistency_loss
from cds.metrics import log_z_report
from cds.networks import ConsistencyStudent, Control
from cds.sde import sub_grid
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.training import Criterion, Validation

#: The least relative change of an error that counts as a gain.
RELATIVE_GAIN = 0.02
#: The least change of the normalised ESS that counts as a gain.
ESS_GAIN = 0.03
#: An ELBO gain must exceed this many of its standard errors.
ELBO_SIGMAS = 2.0


def _draws(seed: int, device: torch.device) -> torch.Generator:
    """The validation stream, restarted at every check."""
    return seeding.generator(seed, seeding.VALIDATION, device=device)


def _error(value: float) -> Criterion:
    return Criterion(value, RELATIVE_GAIN * abs(value), higher_is_better=False)


def _sde_criteria(
    control: Control,
    target: Target,
    prior: StandardNormalPrior,
    grid: Tensor,
    n: int,
    generator: torch.Generator,
    step_size: float | None = None,
) -> dict[str, Criterion]:
    """ELBO and ESS of the SDE sampler's importance weights; non-finite ones (diverging paths)
    are left out, as the training loss leaves them out (docs/methods.md §3)."""
    log_weights = sample_sde(control, target, prior, grid, n, generator, step_size).log_weights
    finite = log_weights[torch.isfinite(log_weights)]
    if finite.numel() < 2:
        return {"elbo": Criterion(math.nan, 0.0), "ess": Criterion(math.nan, 0.0)}
    report = log_z_report(finite, None)
    return {
        "elbo": Criterion(report["elbo"], ELBO_SIGMAS * report["elbo_se"]),
        "ess": Criterion(report["ess"], ESS_GAIN),
    }


def teacher_validation(
    target: Target, prior: StandardNormalPrior, grid: Tensor, n: int, seed: int
) -> Validation:
    """The teacher's ELBO and ESS on n fresh paths."""

    def validate(model: nn.Module) -> dict[str, Criterion]:
        generator = _draws(seed, grid.device)
        return _sde_criteria(model, target, prior, grid, n, generator)  # type: ignore[arg-type]

    return validate


def distillation_validation(
    teacher: Control,
    target: Target,
    prior: StandardNormalPrior,
    fine_grid: Tensor,
    coarse: list[int],
    n: int,
    seed: int,
    loss: str,
) -> Validation:
    """The student's distillation error on n held-out teacher PF-ODE paths, integrated once."""
    x0 = prior.sample(n, _draws(seed, fine_grid.device))
    states = pf_ode_states(teacher, target, x0, fine_grid, coarse)
    T = float(fine_grid[-1])
    taus = [T - float(fine_grid[c]) for c in coarse]
    last = len(coarse) - 1

    @torch.no_grad()
    def validate(model: nn.Module) -> dict[str, Criterion]:
        student: ConsistencyStudent = model  # type: ignore[assignment]
        pair_errors = []
        for j in range(last):
            lo, hi = states[coarse[j]], states[coarse[j + 1]]
            goal = hi if j + 1 == last else student(hi, taus[j + 1])
            pair_errors.append(float(consistency_loss(student(lo, taus[j]), goal, loss)))
        one_step = student(states[coarse[0]], taus[0])
        end_error = float((one_step - states[coarse[last]]).square().mean())
        return {
            "distillation_error": _error(sum(pair_errors) / last),
            "one_step_error": _error(end_error),
        }

    return validate


def self_consistency_validation(
    target: Target, prior: StandardNormalPrior, grid: Tensor, n: int, seed: int
) -> Validation:
    """SCDS's self-consistency error across step counts and its N-step SDE ELBO."""
    n_steps = len(grid) - 1
    T = float(grid[-1])

    def validate(model: nn.Module) -> dict[str, Criterion]:
        control: Control = model  # type: ignore[assignment]
        generator = _draws(seed, grid.device)
        x0 = prior.sample(n, generator)

        def flow(k: int) -> Tensor:
            return sample_pf_ode(
                control, target, prior, sub_grid(grid, k), n, step_size=T / k, x0=x0
            )

        counts = [2**i for i in range(int(math.log2(n_steps)))]  # none for N = 1
        out: dict[str, Criterion] = {}
        if counts:
            fine = flow(n_steps)
            errors = [float((flow(k) - fine).square().mean()) for k in counts]
            out["self_consistency_error"] = _error(sum(errors) / len(errors))
        sde = _sde_criteria(control, target, prior, grid, n, generator, T / n_steps)
        return {**out, "elbo": sde["elbo"]}

    return validate
