"""Mode coverage, mode masses and marginal-moment errors (docs/methods.md §7)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_coverage(assignments: Tensor, n_modes: int) -> dict[str, float]:
    """Entropic mode coverage of samples assigned to `n_modes` known modes.

    `entropic_coverage` = exp(H(f))/K, where f are the empirical mode frequencies and K the number
    of modes: 1 when all modes are equally populated (as for the equal-weight targets here), 1/K
    when a single mode is. `modes_hit` is the fraction of modes with at least one sample.
    """
    if n_modes < 1:
        raise ValueError(f"n_modes must be positive, got {n_modes}")
    counts = torch.bincount(assignments.flatten().to(torch.int64), minlength=n_modes).double()
    freq = counts / counts.sum()
    nz = freq[freq > 0]
    entropy = float(-(nz * nz.log()).sum())
    return {
        "entropic_coverage": math.exp(entropy) / n_modes,
        "modes_hit": float((counts > 0).sum()) / n_modes,
    }


def marginal_std_errors(samples: Tensor, reference: Tensor) -> dict[str, float]:
    """Absolute errors of per-coordinate means and standard deviations against a reference set."""
    s, r = samples.detach().double(), reference.detach().double()
    mean_err = (s.mean(0) - r.mean(0)).abs()
    std_err = (s.std(0) - r.std(0)).abs()
    return {
        "mean_abs_err_max": float(mean_err.max()),
        "mean_abs_err_avg": float(mean_err.mean()),
        "std_abs_err_max": float(std_err.max()),
        "std_abs_err_avg": float(std_err.mean()),
        "std_x0": float(s[:, 0].std()),
    }


def mode_mass_errors(assignments: Tensor, weights: Tensor) -> dict[str, float]:
    """How far each mode's share of the samples is from its true mass w_k.

    `mode_mass_err_max` = max_k |n_k/n − w_k|; `mode_mass_min` is the smallest share of any mode
    (0 when one is missed). A sampler that keeps every mode but misweights them has good coverage
    and a small Sinkhorn, and shows here."""
    counts = torch.bincount(assignments.flatten().to(torch.int64), minlength=len(weights))
    share = counts.double() / counts.sum()
    return {
        "mode_mass_err_max": float((share - weights.double().to(share.device)).abs().max()),
        "mode_mass_min": float(share.min()),
    }


def marginal_std_rel_error(samples: Tensor, stds: Tensor) -> float:
    """max_d |std(x_d) / σ_d − 1|: the largest relative error of a marginal standard deviation
    against the truth σ (the target's exact values, or an exact reference set's)."""
    sample_stds = samples.detach().double().std(dim=0)
    return float((sample_stds / stds.double().to(sample_stds.device) - 1.0).abs().max())
