"""Estimators from log importance weights ℓ_b (spec §7).

ℓ_b is −R_b for SDE samplers (the discretized RND, §3) or the deterministic-flow log weight (§6).
Every estimator drops non-finite weights only where stated; callers report how many there were.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _finite(log_weights: Tensor) -> Tensor:
    lw = log_weights.detach().to(torch.float64).flatten()
    if lw.numel() == 0:
        raise ValueError("no log weights given")
    return lw


def elbo(log_weights: Tensor) -> float:
    """ELBO = mean_b ℓ_b, a lower bound on log Z in expectation (−inf if any weight is −inf)."""
    return float(_finite(log_weights).mean())


def log_mean_exp(log_weights: Tensor) -> float:
    """log Ẑ_IS = logsumexp_b ℓ_b − log n, computed stably for any magnitude."""
    lw = _finite(log_weights)
    return float(torch.logsumexp(lw, dim=0) - math.log(lw.numel()))


def effective_sample_size(log_weights: Tensor) -> float:
    """Normalized ESS (Σw)²/(n·Σw²) with w = exp(ℓ − max ℓ); in [1/n, 1]. NaN weights count as 0."""
    lw = _finite(log_weights)
    lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
    if not bool(torch.isfinite(lw).any()):
        return 0.0
    w = torch.exp(lw - lw.max())
    return float(w.sum() ** 2 / (lw.numel() * (w * w).sum()))


def log_z_report(log_weights: Tensor, true_log_Z: float | None) -> dict[str, float | None]:
    """ELBO, IS log Z, normalized ESS and, when log Z is known, both |Δlog Z| values."""
    lw = _finite(log_weights)
    report: dict[str, float | None] = {
        "elbo": elbo(lw),
        "log_Z_is": log_mean_exp(lw),
        "ess": effective_sample_size(lw),
        "n_weights": float(lw.numel()),
        "n_nonfinite_weights": float((~torch.isfinite(lw)).sum()),
    }
    if true_log_Z is None:
        report["abs_dlogZ_elbo"] = None
        report["abs_dlogZ_is"] = None
    else:
        report["abs_dlogZ_elbo"] = abs(report["elbo"] - true_log_Z)  # type: ignore[operator]
        report["abs_dlogZ_is"] = abs(report["log_Z_is"] - true_log_Z)  # type: ignore[operator]
    return report
