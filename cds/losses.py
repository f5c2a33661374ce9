"""Training losses (spec §3–§5)."""

from __future__ import annotations

import torch
from torch import Tensor

#: Paths with R at or above this (or non-finite) are dropped from the log-variance loss.
RND_DROP_THRESHOLD = 1e8


def log_variance_loss(rnd: Tensor, dim: int) -> tuple[Tensor, int]:
    """L_LV = (1/D)·Var_b(R_b), the unbiased sample variance over the kept paths (spec §3).

    Paths with non-finite R or R ≥ 1e8 are dropped first; returns the loss and the drop count.
    With fewer than two kept paths the loss is NaN, which the trainer's skip rule catches.
    """
    keep = torch.isfinite(rnd) & (rnd < RND_DROP_THRESHOLD)
    n_dropped = int((~keep).sum())
    kept = rnd[keep]
    if kept.numel() < 2:
        return rnd.new_tensor(float("nan")), n_dropped
    return kept.var(unbiased=True) / dim, n_dropped
