"""Scoring a trained sampler: samples and wall time, log Z from its importance weights, and
sample quality against exact reference samples beside the noise floor (docs/methods.md §6, §8).

Weights by method: DIS (and SCDS run as an SDE) use −R of the SDE paths (docs/methods.md §3);
one-step CDDS and K-step SCDS use the deterministic-flow weights log ρ(x_K) − log p_prior(x_0) +
log|det ∂x_K/∂x_0| with exact Jacobians (docs/methods.md §6): one-step CDDS in any dimension (a
network-width-sized determinant, `cds.cdds.one_step_log_abs_det`), an SCDS flow when
D ≤ `MAX_EXACT_DIM`; an SCDS flow too costly for exact log-dets gets the Hutchinson trace
estimate instead.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch
from torch import Tensor

from cds import seeding
from cds.cdds import one_step_log_weights
from cds.metrics import log_z_report, paper_sinkhorn, sample_quality, with_floor_ratios
from cds.samplers import (
    ConsistencySampler,
    DiffusionSampler,
    Sampler,
    ShortcutSampler,
    WhitenedSampler,
)
from cds.scds import flow_log_weights
from cds.targets.base import Target

#: Version of everything that decides an evaluation's figures: the paper Sinkhorn (ε = 1e-3,
#: ≤ 100 iterations) and its floor, the discrete-time SDE weights, the fold check of flow
#: weights, the scoring streams. Figures of different metric versions are not comparable.
METRIC_VERSION = "2"


class References(NamedTuple):
    """Two independent sets of exact target samples of the same size: `validation` for every
    choice made on evaluation (best K, configurations), `test` only for the reported quality."""

    validation: Tensor
    test: Tensor


#: Largest dimension for which an SCDS flow's exact-Jacobian weights are computed (D×D per
#: sample and step).
MAX_EXACT_DIM = 100


def timed_samples(sampler: Sampler, n: int, generator: torch.Generator) -> tuple[Tensor, float]:
    """n samples and the seconds they took."""
    start = time.perf_counter()
    x = sampler.sample(n, generator)
    if x.device.type == "cuda":  # kernels run asynchronously: wait for them
        torch.cuda.synchronize(x.device)
    return x, time.perf_counter() - start


def weight_estimator(
    sampler: Sampler, target: Target, max_jacobian_passes: int | None = None
) -> str | None:
    """Which log weights a sampler gets: "sde" (−R of the SDE paths), "exact_logdet" (the
    deterministic-flow weights with exact Jacobians), "hutchinson" (a K-step SCDS flow whose
    exact log-dets would take more than `max_jacobian_passes` backward passes per sample, D per
    step: the first-order trace form with one Rademacher probe per step, docs/methods.md §6), or
    None: multistep CDDS (re-noising makes it stochastic). A sampler in whitened coordinates
    gets its inner sampler's."""
    if isinstance(sampler, WhitenedSampler):
        return weight_estimator(sampler.inner, target, max_jacobian_passes)
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


def sampler_weights(
    sampler: Sampler,
    target: Target,
    n: int,
    generator: torch.Generator,
    max_jacobian_passes: int | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, str] | None:
    """n fresh samples with their log importance weights from the estimator `weight_estimator`
    picks, the Jacobian determinant signs of a deterministic map where they are known (None for
    SDE weights and trace estimates), and the estimator's name; None where there are no
    weights. A sampler in whitened coordinates (`sde.prior: laplace`) is weighted in them, its
    samples mapped back: the weights are the same in both (docs/methods.md §1)."""
    if isinstance(sampler, WhitenedSampler):
        weighted = sampler_weights(
            sampler.inner, sampler.whitened(target), n, generator, max_jacobian_passes
        )
        if weighted is None:
            return None
        z, log_w, signs, estimator = weighted
        return sampler.prior_map.forward(z), log_w, signs, estimator
    estimator = weight_estimator(sampler, target, max_jacobian_passes)
    if estimator is None:
        return None
    if isinstance(sampler, DiffusionSampler):
        weighted = sampler.weighted_samples(n, generator)
        return weighted.samples, weighted.log_weights, None, estimator
    if isinstance(sampler, ConsistencySampler):
        x, log_w, signs = one_step_log_weights(sampler.student, target, sampler.prior, n, generator)
        return x, log_w, signs, estimator
    assert isinstance(sampler, ShortcutSampler)
    x, log_w, signs = flow_log_weights(
        sampler.control,
        target,
        sampler.prior,
        sampler.grid,
        sampler.nfe,
        n,
        generator,
        divergence=estimator,
    )
    return x, log_w, signs, estimator


def log_weights(
    sampler: Sampler,
    target: Target,
    n: int,
    generator: torch.Generator,
    max_jacobian_passes: int | None = None,
) -> tuple[Tensor, Tensor | None] | None:
    """The log weights and Jacobian signs of `sampler_weights` (None where there are none)."""
    weighted = sampler_weights(sampler, target, n, generator, max_jacobian_passes)
    return None if weighted is None else (weighted[1], weighted[2])


def score_sampler(
    sampler: Sampler,
    target: Target,
    references: References | None,
    floor: dict[str, float] | None,
    eval_seed: int,
    label: str,
    n_weights: int,
    max_jacobian_passes: int | None = None,
    validate: bool = False,
    sinkhorn_only: bool = False,
) -> tuple[dict[str, Any], Tensor]:
    """The metrics the evaluation reports for one sampler, and its samples.

    NFE, sampling time, log Z / ESS with standard errors from `n_weights` weighted samples
    (with the fold check of deterministic maps) and, with references, quality against the
    test reference with floor ratios. With `validate`, an independent sample set is also scored
    against the validation reference (`sinkhorn_validation`, what choices such as the best K
    read). With `sinkhorn_only`, the quality is the paper Sinkhorn and its floor ratio alone
    (what a budget-curve point keeps), without the other metrics of `sample_quality`. Draws come
    from the evaluation streams `scoring:<label>…` of `eval_seed`, on the sampler's device, so
    every sampler is scored on its own stream and the same seed gives the same metrics on the
    same kind of device. References must be on the sampler's device. "weights"
    names the weight estimator (no log Z keys where there is none)."""
    n = len(references.test) if references is not None else n_weights
    stream = f"{seeding.SCORING}:{label}"
    device = sampler.device

    def draws(suffix: str = "") -> torch.Generator:
        return seeding.generator(eval_seed, stream + suffix, device=device)

    samples, seconds = timed_samples(sampler, n, draws())
    out: dict[str, Any] = {"method": sampler.method, "nfe": sampler.nfe, "sample_seconds": seconds}
    weights = log_weights(
        sampler,
        target,
        n_weights,
        draws(":weights"),
        max_jacobian_passes,
    )
    if weights is not None:
        out["weights"] = weight_estimator(sampler, target, max_jacobian_passes)
        out.update(log_z_report(weights[0], target.log_Z, det_signs=weights[1]))
    if references is not None and floor is not None:
        quality = (
            {"sinkhorn": paper_sinkhorn(samples, references.test).value}
            if sinkhorn_only
            else sample_quality(target, samples, references.test)
        )
        out.update(with_floor_ratios(quality, floor))
        if validate:
            held_out = sampler.sample(n, draws(":validation"))
            out["sinkhorn_validation"] = paper_sinkhorn(held_out, references.validation).value
    return out, samples
