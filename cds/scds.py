"""SCDS: the self-consistent, step-size-conditioned diffusion sampler trained from scratch (§5).

One control u_θ(x, t, d) is both a diffusion sampler (log-variance loss on SDE paths with the
base step d = h₀) and a shortcut: one PF-ODE Euler step of size 2d must equal two steps of
size d (self-consistency). With the N-step grid (N = 2^L) the step sizes and start times lie on
the powers-of-two lattice, so K-step samplers for K ∈ {1, 2, 4, …, N} are in distribution.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import Tensor

from cds import seeding
from cds.checkpoints import frozen_with_ema, load_finished_checkpoint
from cds.config import Params, SCDSParams, SDEParams
from cds.integrators import path_rnd, pf_ode_states, simulate_sde
from cds.jacobians import batch_jacobian, exact_divergence, hutchinson_divergence
from cds.losses import log_variance_loss
from cds.networks import Control
from cds.run_config import (
    make_control,
    make_schedule,
    run_setting,
    sampler_space,
    scds_config,
)
from cds.sde import is_power_of_two, sub_grid, uniform_grid
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.training import RunOptions, TrainingResult, train
from cds.validation import self_consistency_validation

SCDS_KIND = "scds"


def pf_ode_step(control: Control, target: Target, x: Tensor, t: Tensor, step: Tensor) -> Tensor:
    """Φ_θ(x, t, s) = x + s·[½β(t)·x + ½σ(t)·u_θ(x, t, s)] with per-sample t and s (B,)."""
    schedule = control.schedule
    u = control(x, t, target.score, step)
    t_col = t[:, None]
    return schedule.pf_ode_step(x, t_col, step[:, None], u, schedule.sigma(t_col))


def draw_shortcut_pairs(
    n_steps: int, batch: int, generator: torch.Generator, level_bias: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Per sample: the half-step exponent j ∈ {0, …, L−1}, P(j) ∝ 2^(level_bias·j) (uniform at
    0, docs/methods.md §5), and the start index on the fine grid, m·2^{j+1} with
    m ~ U{0, …, N/2^{j+1} − 1}, so that the full step 2d ends within the grid."""
    levels = int(math.log2(n_steps))
    if level_bias == 0.0:  # the uniform draw of earlier runs, stream for stream
        j = torch.randint(levels, (batch,), generator=generator, device=generator.device)
    else:
        levels_at = torch.arange(levels, dtype=torch.float64, device=generator.device)
        weights = torch.pow(2.0, level_bias * levels_at)
        j = torch.multinomial(weights, batch, replacement=True, generator=generator)
    slots = n_steps // 2 ** (j + 1)  # number of full steps of size 2d on the grid
    m = (torch.rand(batch, generator=generator, device=generator.device) * slots).floor()
    m = m.to(torch.int64)
    return j, m * 2 ** (j + 1)


def extra_steps_at(iteration: int, iterations: int, steps: int, ramp: float) -> int:
    """Extra self-consistency steps at `iteration` (0-based) of `iterations`: `steps` once the
    ramp's fraction of the run is over, ⌊steps·iteration / (ramp·iterations)⌋ before it."""
    if ramp == 0.0:
        return steps
    return min(steps, int(steps * iteration / (ramp * iterations)))


@dataclass
class SelfConsistencyObjective:
    """One SCDS iteration (docs/methods.md §5 (a)–(d)), self-consistency targets per `sc_target`:
    λ_S·L_S + λ_SC·L_SC in one optimizer step
    (`update: joint`, the paper's Algorithm 2), or the authors' two sequential steps, first on
    λ_S·L_S, then on λ_SC·L_SC recomputed with the updated θ from the same detached states
    (`update: alternating`). Either way the scheduler, clips and EMA advance once per iteration."""

    control: Control
    target: Target
    prior: StandardNormalPrior
    grid: Tensor
    params: SCDSParams

    def __call__(self, iteration: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        p = self.params
        base_step = float(self.grid[1] - self.grid[0])
        paths = simulate_sde(
            self.control,
            self.target,
            self.prior,
            self.grid,
            p.optim.batch_size,
            generator,
            step_size=base_step,
        )
        loss_s, dropped = log_variance_loss(
            path_rnd(self.control, paths, self.grid, base_step), self.control.dim
        )
        states = (
            paths.states.detach()
            if p.sc_target == "half_steps"
            else self._fine_ode_states(generator, base_step)
        )
        rows = torch.arange(p.optim.batch_size, device=self.grid.device)

        def self_consistency() -> Tensor:
            """λ_SC·L_SC on fresh (d, t) pairs from this iteration's detached states."""
            j, start = draw_shortcut_pairs(
                len(self.grid) - 1, p.optim.batch_size, generator, p.level_bias
            )
            end = start + 2 ** (j + 1)
            x = states[start, rows]
            t = self.grid[start]
            full = self.grid[end] - t
            if p.sc_target == "fine_ode":
                goal = states[end, rows]
            else:
                half = self.grid[start + 2**j] - t
                with torch.no_grad():
                    mid = pf_ode_step(self.control, self.target, x, t, half)
                    goal = pf_ode_step(self.control, self.target, mid, t + half, half)
            pred = pf_ode_step(self.control, self.target, x, t, full)
            return p.lambda_sc * (pred - goal).square().mean() / self.control.dim

        extra = [self_consistency] * extra_steps_at(
            iteration, self.ramp_horizon, p.sc_extra_steps, p.sc_extra_ramp
        )
        info: dict[str, Any] = {"dropped_paths": dropped}
        if p.update == "alternating":
            info["follow_ups"] = [self_consistency, *extra]
            return p.lambda_s * loss_s, info
        info["follow_ups"] = extra
        return p.lambda_s * loss_s + self_consistency(), info

    @property
    def ramp_horizon(self) -> int:
        """The iterations `sc_extra_ramp` is a fraction of: the fixed budget, or the plateau
        rule's minimum (at least 1)."""
        p = self.params
        if p.stopping.rule == "fixed":
            return p.optim.iterations
        return max(1, p.stopping.min_iterations)

    def _fine_ode_states(self, generator: torch.Generator, base_step: float) -> Tensor:
        """States (N+1, B, D) of B PF-ODE paths at the base step with the current θ, no
        gradient (`sc_target: fine_ode`): the state at index k + 2^(j+1) is the target of the
        step 2^(j+1)·h₀ from index k."""
        n = len(self.grid) - 1
        x0 = self.prior.sample(self.params.optim.batch_size, generator)
        path = pf_ode_states(
            self.control, self.target, x0, self.grid, list(range(n + 1)), step_size=base_step
        )
        return torch.stack([path[k] for k in range(n + 1)])


def train_scds(
    params: Params,
    target: Target,
    checkpoint_path: str | Path,
    **options: Unpack[RunOptions],
) -> TrainingResult:
    """Train (or resume) SCDS from scratch; no teacher needed (`Trainer.try_resume` says
    which checkpoints resume; `options` say how the run is watched, `RunOptions`)."""
    cfg = params.scds
    device, schedule = run_setting(params, target)
    target, prior_map = sampler_space(params, target)
    with seeding.initialisation(params.seed):
        control = make_control(
            target.dim, schedule, cfg.network, cfg.clip.initial, step_conditioned=True
        )
    control.to(device)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation, device)
    grid = uniform_grid(cfg.n_steps, schedule.T, device=device)
    return train(
        control,
        SelfConsistencyObjective(control, target, prior, grid, cfg),
        cfg.optim,
        kind=SCDS_KIND,
        config=scds_config(params),
        dim=target.dim,
        seed=seeding.stream_seed(params.seed, seeding.TRAIN),
        checkpoint_path=checkpoint_path,
        clip=cfg.clip,
        stopping=cfg.stopping,
        validation=self_consistency_validation(
            target, prior, grid, cfg.stopping.validation_samples, params.seed
        ),
        prior_map=prior_map,
        **options,
    )


def load_scds(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Control, dict[str, Any]]:
    """The trained step-conditioned control with its EMA weights on `device`, frozen."""
    payload = load_finished_checkpoint(path, SCDS_KIND)
    config = json.loads(payload["metadata"]["config"])
    cfg = SCDSParams.model_validate(config["scds"])
    control = make_control(
        int(payload["metadata"]["dim"]),
        make_schedule(SDEParams.model_validate(config["sde"])),
        cfg.network,
        cfg.clip.value_at(int(payload["step"]) - 1),  # in force at its last iteration
        step_conditioned=True,
    )
    frozen_with_ema(control, payload, device)
    return control, config


def flow_log_weights(
    control: Control,
    target: Target,
    prior: StandardNormalPrior,
    grid: Tensor,
    n_steps: int,
    n: int,
    generator: torch.Generator,
    divergence: str = "exact_logdet",
    probes: int = 1,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """K-step ODE samples, deterministic-flow log weights (docs/methods.md §6) and, with exact
    log-dets, the Jacobian determinant sign of each step for each sample, (K, n) (None for the trace
    forms, which cannot see a fold):

    log w = log ρ(x_K) − log p_prior(x_0) + Σ_k c_k, with c_k =
      - "exact_logdet": log|det(I + s_k·J_k)| from the full Jacobian of each Euler step (valid
        ELBO and consistent IS; D ≲ 100);
      - "exact_trace":  s_k·tr J_k (first-order, the follow-up's form; not a bound);
      - "hutchinson":   s_k·(Rademacher estimate of tr J_k with `probes` probes; large D).
    J_k = ∂v/∂x at (x_k, t_k) includes the score branch through ∇²log ρ.
    """
    if not is_power_of_two(n_steps) or (len(grid) - 1) % n_steps:
        raise ValueError(f"n_steps={n_steps} must be a power of two dividing the grid")
    coarse = sub_grid(grid, n_steps)
    x = prior.sample(n, generator)
    log_w = -prior.log_prob(x).double()
    signs = []
    for k in range(n_steps):
        t = coarse[k].expand(n)
        s = (coarse[k + 1] - coarse[k]).expand(n)

        def step(v: Tensor, t: Tensor = t, s: Tensor = s) -> Tensor:
            return pf_ode_step(control, target, v, t, s)

        if divergence == "exact_logdet":
            jac = batch_jacobian(step, x)
            step_sign, step_logdet = torch.linalg.slogdet(jac.double())
            log_w = log_w + step_logdet
            signs.append(step_sign)
        elif divergence in ("exact_trace", "hutchinson"):

            def velocity(v: Tensor, step_fn=step, s: Tensor = s) -> Tensor:
                return (step_fn(v) - v) / s[:, None]

            div = (
                exact_divergence(velocity, x)
                if divergence == "exact_trace"
                else hutchinson_divergence(velocity, x, probes, generator)
            )
            log_w = log_w + s.double() * div.double()
        else:
            raise ValueError(f"unknown divergence {divergence!r}")
        with torch.no_grad():
            x = step(x)
    return x.detach(), log_w + target.log_prob(x).double(), torch.stack(signs) if signs else None
