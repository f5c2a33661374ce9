"""Simulation of the controlled SDE and the probability-flow ODE (docs/methods.md §1, §3).

Euler–Maruyama step on the grid t_0 < … < t_N:
    x_{k+1} = x_k + [μ(x_k, t_k) + σ(t_k)·u_k]·Δt_k + σ(t_k)·√Δt_k·ξ_k,    ξ_k ~ N(0, I).

Discretized Radon–Nikodym derivative (docs/methods.md §3), with ū_k = stopgrad(u_k):
    R = log p_prior(x_0) + Σ_k [u_k·(ū_k − ½u_k)·Δt_k + √Δt_k·u_k·ξ_k − Δdiv_k] − log ρ(x_N),
so that −R is a log importance weight of the discrete chain. With the discrete normaliser
Δdiv_k = D·log(1 + ½β(t_k)·Δt_k) (`VPSchedule.drift_divergence_increments`),
E[exp(−R)] = Z exactly for any control and any number of steps, and E[−R] ≤ log Z. Δdiv is
always included here, so ELBO = mean(−R) and log-mean-exp(−R) are valid estimates.

Euler step of the PF ODE:  x_{k+1} = x_k + Δt_k·[½β(t_k)·x_k + ½σ(t_k)·u_k].
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from cds.networks import ConsistencyStudent, Control
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.threads import sampling_workers


@dataclass
class SDEPaths:
    """A batch of detached Euler–Maruyama paths and what the RND needs from them.

    states (N+1, B, D), noises (N, B, D), guidance (N, B, D): the clamped interpolated score at
    each (x_k, t_k) (θ-independent), log_prior (B,), log_target (B,).
    """

    states: Tensor
    noises: Tensor
    guidance: Tensor
    log_prior: Tensor
    log_target: Tensor


def _step_sizes(grid: Tensor, step_size: float | None) -> Tensor | None:
    """The step-size input d per grid time (SCDS), or None for an unconditioned control."""
    if step_size is None:
        return None
    return torch.full((grid.numel() - 1,), float(step_size), dtype=grid.dtype, device=grid.device)


@dataclass
class _GridTerms:
    """Everything on a grid that depends on time only, computed once per simulation."""

    control: Control
    target: Target | None
    times: list[float]
    dts: list[float]
    sigmas: list[float]
    embedding: Tensor
    weight: Tensor

    def control_at(self, k: int, x: Tensor) -> Tensor:
        """u(x, t_k) with the precomputed conditioning; no ∇log ρ call at t = 0."""
        t = self.times[k]
        score = None if t == 0.0 else self.target.score(x)  # type: ignore[union-attr]
        guidance = self.control.guidance(x, t, score)
        return self.control.evaluate(x, self.embedding[k : k + 1], self.weight[k], guidance)


def _grid_terms(
    control: Control, target: Target | None, grid: Tensor, step_size: float | None = None
) -> _GridTerms:
    embedding, weight = control.time_conditioning(grid[:-1], _step_sizes(grid, step_size))
    return _GridTerms(
        control,
        target,
        grid.tolist(),
        (grid[1:] - grid[:-1]).tolist(),
        control.schedule.sigma(grid[:-1]).tolist(),
        embedding,
        weight,
    )


@torch.no_grad()
def simulate_sde(
    control: Control,
    target: Target,
    prior: StandardNormalPrior,
    grid: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    step_size: float | None = None,
) -> SDEPaths:
    """Simulate n paths of the controlled SDE under no_grad, keeping what the LV loss needs."""
    schedule = control.schedule
    terms = _grid_terms(control, target, grid, step_size)
    x = prior.sample(n, generator)
    log_prior = prior.log_prob(x)
    n_steps = len(terms.dts)
    states = x.new_empty(n_steps + 1, n, control.dim)
    noises = x.new_empty(n_steps, n, control.dim)
    guidance = x.new_empty(n_steps, n, control.dim)
    states[0] = x
    for k in range(n_steps):
        t, dt, sigma = terms.times[k], terms.dts[k], terms.sigmas[k]
        score = None if t == 0.0 else target.score(x)
        g = control.guidance(x, t, score)
        u = control.evaluate(x, terms.embedding[k : k + 1], terms.weight[k], g)
        xi = torch.randn(x.shape, generator=generator, device=x.device)
        x = schedule.euler_maruyama_step(x, t, dt, u, xi, sigma)
        states[k + 1], noises[k], guidance[k] = x, xi, g
    return SDEPaths(states, noises, guidance, log_prior, target.log_prob(x))


def path_rnd(
    control: Control, paths: SDEPaths, grid: Tensor, step_size: float | None = None
) -> Tensor:
    """R per path (B,), recomputing every u_k in one batched pass over the whole grid.

    Gradients flow through every u_k (running and Itô terms) and never through the states; at
    ū = u the running term's gradient vanishes, as required for the log-variance loss.
    """
    schedule = control.schedule
    dt = grid[1:] - grid[:-1]  # (N,)
    embedding, weight = control.time_conditioning(grid[:-1], _step_sizes(grid, step_size))
    u = control.evaluate(
        paths.states[:-1], embedding[:, None, :], weight[:, None, None], paths.guidance
    )
    u_bar = u.detach()
    running = (u * (u_bar - 0.5 * u)).sum(-1) * dt[:, None]
    ito = (u * paths.noises).sum(-1) * dt.sqrt()[:, None]
    drift_div = schedule.drift_divergence_increments(grid, control.dim).sum()
    return paths.log_prior + (running + ito).sum(0) - drift_div - paths.log_target


class WeightedSamples(NamedTuple):
    """Samples with log importance weights (−R for SDE samplers, DF weights for flows).

    samples: (n, D); log_weights: (n,) float64, log ρ(x) − log q(x), so that E[exp] = Z."""

    samples: Tensor
    log_weights: Tensor


@torch.no_grad()
def sample_sde(
    control: Control,
    target: Target,
    prior: StandardNormalPrior,
    grid: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    step_size: float | None = None,
    batch_size: int = 8192,
) -> WeightedSamples:
    """n samples of the Euler–Maruyama sampler with log weights −R, in bounded memory.

    Runs in batches of `batch_size` paths and keeps only the end states and the RND, so memory
    is O(batch_size·D) for any n and number of steps. The RND accumulates in float64 (its terms
    reach thousands of nats in high dimension), so the log weights are float64.
    """
    schedule = control.schedule
    terms = _grid_terms(control, target, grid, step_size)
    drift_div = float(schedule.drift_divergence_increments(grid, control.dim).sum())
    samples, log_weights = [], []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = prior.sample(m, generator)
        rnd = prior.log_prob(x).double() - drift_div
        for k, dt in enumerate(terms.dts):
            t, sigma = terms.times[k], terms.sigmas[k]
            u = terms.control_at(k, x)
            xi = torch.randn(x.shape, generator=generator, device=x.device)
            step = 0.5 * u.square().sum(1) * dt + math.sqrt(dt) * (u * xi).sum(1)
            rnd = rnd + step.double()
            x = schedule.euler_maruyama_step(x, t, dt, u, xi, sigma)
        samples.append(x)
        log_weights.append(target.log_prob(x).double() - rnd)
    return WeightedSamples(torch.cat(samples), torch.cat(log_weights))


@torch.no_grad()
def sample_pf_ode(
    control: Control,
    target: Target | None,
    prior: StandardNormalPrior,
    grid: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    step_size: float | None = None,
    batch_size: int = 8192,
    x0: Tensor | None = None,
) -> Tensor:
    """Euler integration of the probability-flow ODE from prior samples (or from `x0`).

    `target` may be None only for a one-step grid starting at t = 0 (no score is needed there).
    """
    schedule = control.schedule
    terms = _grid_terms(control, target, grid, step_size)
    start_states = prior.sample(n, generator) if x0 is None else x0
    out = []
    for start in range(0, len(start_states), batch_size):
        x = start_states[start : start + batch_size]
        for k, dt in enumerate(terms.dts):
            u = terms.control_at(k, x)
            x = schedule.pf_ode_step(x, terms.times[k], dt, u, terms.sigmas[k])
        out.append(x)
    return torch.cat(out)


@torch.no_grad()
def pf_ode_states(
    control: Control,
    target: Target,
    x0: Tensor,
    grid: Tensor,
    keep: list[int],
    step_size: float | None = None,
) -> dict[int, Tensor]:
    """Integrate the PF ODE from grid index 0 only up to max(keep), returning the states at the
    grid indices in `keep` (incomplete trajectories, docs/methods.md §4). A step-conditioned
    control takes `step_size` as its step input."""
    if not keep or min(keep) < 0 or max(keep) >= grid.numel():
        raise ValueError(f"keep indices {keep} must lie in [0, {grid.numel() - 1}]")
    schedule = control.schedule
    stop = max(keep)
    terms = _grid_terms(control, target, grid[: stop + 1], step_size)
    wanted = set(keep)
    out = {0: x0} if 0 in wanted else {}
    x = x0
    for k, dt in enumerate(terms.dts):
        u = terms.control_at(k, x)
        x = schedule.pf_ode_step(x, terms.times[k], dt, u, terms.sigmas[k])
        if k + 1 in wanted:
            out[k + 1] = x
    return out


def coarse_indices(n_fine: int, n_coarse: int) -> list[int]:
    """Coarse consistency grid n_j = round(n_fine·j/(n_coarse − 1)), j = 0..n_coarse − 1
    (default 128 and 18: {0, 8, 15, 23, …, 120, 128})."""
    if n_coarse < 2 or n_coarse - 1 > n_fine:
        raise ValueError(f"need 2 <= n_coarse <= n_fine + 1, got {n_coarse} and {n_fine}")
    return [round(n_fine * j / (n_coarse - 1)) for j in range(n_coarse)]


def consistency_times_to_go(n_steps: int, coarse: list[int], n_fine: int, T: float) -> list[float]:
    """τ_1 = T > τ_2 > … > τ_K of the K-step consistency sampler (docs/methods.md §4):
    τ_i = (n_{m_i}/n_fine)·T with m_i = round((J − 1)·(K + 1 − i)/K), half to even."""
    last = len(coarse) - 1
    if not 1 <= n_steps <= last:
        raise ValueError(f"n_steps must be in [1, {last}] for this coarse grid, got {n_steps}")
    return [
        coarse[round(last * (n_steps + 1 - i) / n_steps)] / n_fine * T
        for i in range(1, n_steps + 1)
    ]


#: Rows per network call of consistency sampling: cache-sized on the CPU, large on a GPU.
CPU_CHUNK = 8192
GPU_CHUNK = 1 << 22


@torch.no_grad()
def sample_consistency(
    student: ConsistencyStudent,
    schedule_alpha: Callable[[float], float],
    taus: list[float],
    x0: Tensor,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
) -> Tensor:
    """K-step consistency sampling from prior states x0: x ← f(x0, τ_1); then for i ≥ 2 re-noise
    with the VP noising marginal, x̃ = α(τ_i)·x + √(1 − α(τ_i)²)·z, and set x ← f(x̃, τ_i).
    K = len(taus) network evaluations per sample, none of which needs ∇log ρ.

    On the CPU the network runs on `chunk` rows at a time (width-64 activations that fit in
    cache: 4.2–4.6× faster than one large batch on 2 cores; 8192 rows was steady), handed out
    from a queue to single-threaded workers, one per usable core (`cds.threads`): no worker
    waits for another, so a core shared with another process only slows its own share
    (benchmarks/shared_cores.py). On a GPU (`chunk` None) the batch goes through whole, up to
    `GPU_CHUNK` rows."""
    if chunk is None:
        chunk = CPU_CHUNK if x0.device.type == "cpu" else GPU_CHUNK
    workers = sampling_workers() if x0.device.type == "cpu" else 1

    def f(x: Tensor, tau: float) -> Tensor:
        out = torch.empty_like(x)
        f_tau = student.at(tau)

        def rows(start: int) -> None:
            with torch.no_grad():  # grad mode is per thread: the workers' own
                out[start : start + chunk] = f_tau(x[start : start + chunk])

        starts = range(0, len(x), chunk)
        if workers > 1 and len(starts) > 1:
            own = torch.get_num_threads()
            list(_worker_pool(workers, os.getpid()).map(rows, starts))
            # a worker's set_num_threads(1) is also the default of threads started later:
            # give that default back
            torch.set_num_threads(own)
        else:
            for start in starts:
                rows(start)
        return out

    x = f(x0, taus[0])
    for tau in taus[1:]:
        a = schedule_alpha(tau)
        z = torch.randn(x.shape, generator=generator, device=x.device)
        x = f(a * x + math.sqrt(1.0 - a * a) * z, tau)
    return x


@functools.cache
def _worker_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads, each running torch ops on one thread, kept for the process
    `pid` (a forked child, whose copy of the parent's pool has no threads, makes its own)."""
    return ThreadPoolExecutor(
        workers, thread_name_prefix="cds-sample", initializer=torch.set_num_threads, initargs=(1,)
    )
