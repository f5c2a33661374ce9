"""Scoring a trained sampler: samples and wall time, log Z from its importance weights, and
sample quality against exact reference samples beside the noise floor (spec §6, §8).

Weights by method: DIS uses −R of the SDE paths (spec §3); CDDS and SCDS use the deterministic-
flow weights log ρ(x_K) − log p_prior(x_0) + log|det ∂x_K/∂x_0| with exact Jacobians (spec §6),
computed when D ≤ `MAX_EXACT_DIM`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from cds.cdds import one_step_log_weights
from cds.metrics import log_z_report, sample_quality, with_floor_ratios
from cds.scds import flow_log_weights
from cds.serving import ConsistencySampler, DiffusionSampler, Sampler, ShortcutSampler
from cds.targets.base import Target

#: Largest dimension for which exact-Jacobian flow weights are computed (D×D per sample).
MAX_EXACT_DIM = 100


def timed_samples(sampler: Sampler, n: int, seed: int) -> tuple[Tensor, float]:
    """n samples and the seconds they took."""
    start = time.perf_counter()
    x = sampler.sample(n, torch.Generator().manual_seed(seed))
    return x, time.perf_counter() - start


def log_weights(
    sampler: Sampler, target: Target, n: int, seed: int, max_jacobian_passes: int | None = None
) -> Tensor | None:
    """Log importance weights of n fresh samples, or None where there are none (multistep CDDS)
    or they are too costly: D > MAX_EXACT_DIM, or a K-step SCDS flow whose exact log-dets take
    more than `max_jacobian_passes` backward passes per sample (D per step, so D·K)."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(sampler, DiffusionSampler):
        return sampler.weighted_samples(n, generator).log_weights
    if target.dim > MAX_EXACT_DIM:
        return None
    if isinstance(sampler, ConsistencySampler):
        if sampler.nfe > 1:  # re-noising makes multistep CDDS stochastic: no DF weight (§6)
            return None
        return one_step_log_weights(sampler.student, target, sampler.prior, n, generator)[1]
    if isinstance(sampler, ShortcutSampler):
        if max_jacobian_passes is not None and target.dim * sampler.nfe > max_jacobian_passes:
            return None
        return flow_log_weights(
            sampler.control, target, sampler.prior, sampler.grid, sampler.nfe, n, generator
        )[1]
    raise TypeError(f"no weights for sampler {type(sampler).__name__}")


def score_sampler(
    sampler: Sampler,
    target: Target,
    reference: Tensor | None,
    floor: dict[str, float] | None,
    seed: int,
    n_weights: int,
    max_jacobian_passes: int | None = None,
) -> tuple[dict[str, Any], Tensor]:
    """The metrics the evaluation reports for one sampler, and its samples: NFE, sampling time,
    log Z / ESS from `n_weights` weighted samples and (with a reference) quality with floor
    ratios. Weights the cost limit skips leave the log Z keys out."""
    n = len(reference) if reference is not None else n_weights
    samples, seconds = timed_samples(sampler, n, seed)
    out: dict[str, Any] = {"method": sampler.method, "nfe": sampler.nfe, "sample_seconds": seconds}
    weights = log_weights(sampler, target, n_weights, seed + 1, max_jacobian_passes)
    if weights is not None:
        out.update(log_z_report(weights, target.log_Z))
    if reference is not None and floor is not None:
        out.update(with_floor_ratios(sample_quality(target, samples, reference), floor))
    return out, samples
