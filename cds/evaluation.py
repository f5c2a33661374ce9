"""Scoring a trained sampler: samples and wall time, log Z from its importance weights, and
sample quality against exact reference samples beside the noise floor (spec §6, §8).

Weights by method: DIS (and SCDS run as an SDE) use −R of the SDE paths (spec §3); one-step CDDS
and K-step SCDS use the deterministic-flow weights log ρ(x_K) − log p_prior(x_0) +
log|det ∂x_K/∂x_0| with exact Jacobians (spec §6): one-step CDDS in any dimension (a
network-width-sized determinant, `cds.cdds.one_step_log_abs_det`), an SCDS flow when
D ≤ `MAX_EXACT_DIM`; an SCDS flow too costly for exact log-dets gets the Hutchinson trace
estimate instead.
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

#: Largest dimension for which an SCDS flow's exact-Jacobian weights are computed (D×D per
#: sample and step).
MAX_EXACT_DIM = 100


def timed_samples(sampler: Sampler, n: int, seed: int) -> tuple[Tensor, float]:
    """n samples and the seconds they took."""
    start = time.perf_counter()
    x = sampler.sample(n, torch.Generator().manual_seed(seed))
    return x, time.perf_counter() - start


def weight_estimator(
    sampler: Sampler, target: Target, max_jacobian_passes: int | None = None
) -> str | None:
    """Which log weights a sampler gets: "sde" (−R of the SDE paths), "exact_logdet" (the
    deterministic-flow weights with exact Jacobians), "hutchinson" (a K-step SCDS flow whose
    exact log-dets would take more than `max_jacobian_passes` backward passes per sample, D per
    step: the first-order trace form with one Rademacher probe per step, spec §6), or None:
    multistep CDDS (re-noising makes it stochastic)."""
    if isinstance(sampler, DiffusionSampler):
        return "sde"
    if isinstance(sampler, ConsistencySampler):
        return "exact_logdet" if sampler.nfe == 1 else None
    if isinstance(sampler, ShortcutSampler):
        passes = target.dim * sampler.nfe
        exact = target.dim <= MAX_EXACT_DIM and (
            max_jacobian_passes is None or passes <= max_jacobian_passes
        )
        return "exact_logdet" if exact else "hutchinson"
    raise TypeError(f"no weights for sampler {type(sampler).__name__}")


def log_weights(
    sampler: Sampler, target: Target, n: int, seed: int, max_jacobian_passes: int | None = None
) -> Tensor | None:
    """Log importance weights of n fresh samples with the estimator `weight_estimator` picks,
    or None where there are none."""
    estimator = weight_estimator(sampler, target, max_jacobian_passes)
    generator = torch.Generator().manual_seed(seed)
    if estimator is None:
        return None
    if isinstance(sampler, DiffusionSampler):
        return sampler.weighted_samples(n, generator).log_weights
    if isinstance(sampler, ConsistencySampler):
        return one_step_log_weights(sampler.student, target, sampler.prior, n, generator)[1]
    assert isinstance(sampler, ShortcutSampler)
    return flow_log_weights(
        sampler.control,
        target,
        sampler.prior,
        sampler.grid,
        sampler.nfe,
        n,
        generator,
        divergence=estimator,
    )[1]


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
    ratios; "weights" names the weight estimator (no log Z keys where there is none)."""
    n = len(reference) if reference is not None else n_weights
    samples, seconds = timed_samples(sampler, n, seed)
    out: dict[str, Any] = {"method": sampler.method, "nfe": sampler.nfe, "sample_seconds": seconds}
    weights = log_weights(sampler, target, n_weights, seed + 1, max_jacobian_passes)
    if weights is not None:
        out["weights"] = weight_estimator(sampler, target, max_jacobian_passes)
        out.update(log_z_report(weights, target.log_Z))
    if reference is not None and floor is not None:
        out.update(with_floor_ratios(sample_quality(target, samples, reference), floor))
    return out, samples
