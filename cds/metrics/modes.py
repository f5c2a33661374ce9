"""Mode coverage and marginal-moment errors."""

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
