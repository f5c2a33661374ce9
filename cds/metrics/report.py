"""Sample-quality reports against exact reference samples, and their noise floor (docs/methods.md
§8).

Every quality number is reported beside its floor: the same metric between two independent exact
sample sets of the same size, and the ratio to it.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from cds.metrics.divergences import mmd_rbf, sinkhorn_divergence
from cds.metrics.modes import (
    marginal_std_errors,
    marginal_std_rel_error,
    mode_coverage,
    mode_mass_errors,
)
from cds.metrics.sinkhorn import paper_sinkhorn
from cds.targets.base import Target


def sample_quality(target: Target, samples: Tensor, reference: Tensor) -> dict[str, float]:
    """Paper Sinkhorn, debiased Sinkhorn divergence, MMD, mode coverage and mode masses (targets
    with known modes), and marginal errors: against the reference set, and `std_rel_err_max`
    against the target's exact marginal standard deviations where it knows them (else the
    reference's)."""
    if samples.shape != reference.shape:
        raise ValueError(
            f"model samples {tuple(samples.shape)} and reference {tuple(reference.shape)} "
            "must have the same shape (the paper metric compares sets of equal size)"
        )
    finite = torch.isfinite(samples).all(dim=1)
    n_bad = int((~finite).sum())
    if n_bad:
        raise ValueError(f"{n_bad} model samples are non-finite; refusing to score them")
    start = time.perf_counter()
    sink = paper_sinkhorn(samples, reference)
    out = {
        "n": float(len(samples)),
        "sinkhorn": sink.value,
        "sinkhorn_seconds": time.perf_counter() - start,
        "sinkhorn_divergence": sinkhorn_divergence(samples, reference),
        "mmd": mmd_rbf(samples, reference),
    }
    assignments = target.mode_assignment(samples)
    if assignments is not None:
        out.update(mode_coverage(assignments, target.n_modes))
        weights = target.mode_weights()
        if weights is not None:
            out.update(mode_mass_errors(assignments, weights))
    out.update(marginal_std_errors(samples, reference))
    stds = target.marginal_stds()
    out["std_rel_err_max"] = marginal_std_rel_error(
        samples, reference.double().std(dim=0) if stds is None else stds
    )
    return out


def noise_floor(
    target: Target,
    n: int,
    generator: torch.Generator,
    repeats: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Every metric of `sample_quality` between two independent exact sample sets of size n,
    averaged over `repeats` independent pairs (`sinkhorn_std` gives the spread across pairs).
    The sets are drawn where `generator` is (the same sets on any machine with a CPU
    generator) and compared on `device` (default: the same place)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    def draw() -> Tensor:
        return target.sample(n, generator).to(device or generator.device)

    runs = [sample_quality(target, draw(), draw()) for _ in range(repeats)]
    out = {key: sum(r[key] for r in runs) / repeats for key in runs[0]}
    values = torch.tensor([r["sinkhorn"] for r in runs], dtype=torch.float64)
    out["sinkhorn_std"] = float(values.std()) if repeats > 1 else 0.0
    out["repeats"] = float(repeats)
    return out


def with_floor_ratios(quality: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """Add `<metric>_floor` and `<metric>_ratio` (value / floor) for the discrepancy metrics
    `quality` holds."""
    out = dict(quality)
    for key in ("sinkhorn", "sinkhorn_divergence", "mmd"):
        if key not in quality:
            continue
        out[f"{key}_floor"] = floor[key]
        out[f"{key}_ratio"] = quality[key] / floor[key] if floor[key] != 0 else float("inf")
    return out


def compare_to_exact(
    target: Target, samples: Tensor, generator: torch.Generator, floor_repeats: int = 3
) -> dict[str, float]:
    """Quality of `samples` against fresh exact samples of the same size, with the noise floor
    at that size and the ratios to it."""
    n = len(samples)
    quality = sample_quality(target, samples, target.sample(n, generator))
    return with_floor_ratios(quality, noise_floor(target, n, generator, repeats=floor_repeats))
