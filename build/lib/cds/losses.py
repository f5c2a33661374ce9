"""Training losses (docs/methods.md §3–§5)."""

from __future__ import annotations

import torch
from torch import Tensor

#: Paths with R at or above this (or non-finite) are dropped from the log-variance loss.
RND_DROP_THRESHOLD = 1e8


def log_variance_loss(rnd: Tensor, dim: int) -> tuple[Tensor, int]:
    """L_LV = (1/D)·Var_b(R_b), the unbiased sample variance over the kept paths (docs/methods.md
    §3).

    Paths with non-finite R or R ≥ 1e8 are dropped first; returns the loss and the drop count.
    With fewer than two kept paths the loss is NaN, which the trainer's skip rule catches.
    """
    keep = torch.isfinite(rnd) & (rnd < RND_DROP_THRESHOLD)
    n_dropped = int((~keep).sum())
    kept = rnd[keep]
    if kept.numel() < 2:
        return rnd.new_tensor(float("nan")), n_dropped
    return kept.var(unbiased=True) / dim, n_dropped


def consistency_loss(prediction: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    """(1/D)·mean over batch of a per-sample distance between prediction and (detached) target.

    - "mse": (1/D)·mean over batch and coordinates of (f − f⁻)², the faithful default with its
      effective 1/D² factor (docs/methods.md §4; §12, pitfall 14);
    - "pseudo_huber": (1/D)·mean over batch of √(‖f − f⁻‖² + c²) − c with c = 0.00054·√D
      (Song & Dhariwal 2023), less sensitive to outlying pairs.
    """
    dim = prediction.shape[1]
    diff = prediction - target.detach()
    if kind == "mse":
        return diff.square().mean() / dim
    if kind == "pseudo_huber":
        c = 0.00054 * dim**0.5
        return (torch.sqrt(diff.square().sum(1) + c * c) - c).mean() / dim
    raise ValueError(f"unknown consistency loss {kind!r}; valid: mse, pseudo_huber")
