"""Estimators from log importance weights ℓ_b, with their Monte Carlo standard errors
(docs/methods.md §7).

ℓ_b is −R_b for SDE samplers (the discretised RND with the discrete normaliser, §3) or the
deterministic-flow log weight (§6). A deterministic map whose Jacobian determinant changes sign
across samples folds (several x₀ reach one x), so its weights over-count and E[w] ≥ Z: above
`FOLD_THRESHOLD` the estimates are reported as invalid, never as numbers that look fine.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: Largest share of samples whose Jacobian determinant has the minority sign for which a
#: deterministic map's weights still count as valid (1 in 1000 samples).
FOLD_THRESHOLD = 1e-3

#: What `log_z_report` withholds when the weights are invalid.
ESTIMATES = ("elbo", "elbo_se", "log_Z_is", "log_Z_is_se", "ess", "abs_dlogZ_elbo", "abs_dlogZ_is")


def _as_float64(log_weights: Tensor) -> Tensor:
    lw = log_weights.detach().to(torch.float64).flatten()
    if lw.numel() == 0:
        raise ValueError("no log weights given")
    return lw


def elbo(log_weights: Tensor) -> float:
    """ELBO = mean_b ℓ_b, a lower bound on log Z in expectation (−inf if any weight is −inf)."""
    return float(_as_float64(log_weights).mean())


def elbo_std_error(log_weights: Tensor) -> float:
    """Monte Carlo standard error of the ELBO: std(ℓ)/√n."""
    lw = _as_float64(log_weights)
    if lw.numel() < 2 or not bool(torch.isfinite(lw).all()):
        return math.inf
    return float(lw.std() / math.sqrt(lw.numel()))


def log_mean_exp(log_weights: Tensor) -> float:
    """log Ẑ_IS = logsumexp_b ℓ_b − log n, computed stably for any magnitude."""
    lw = _as_float64(log_weights)
    return float(torch.logsumexp(lw, dim=0) - math.log(lw.numel()))


def log_mean_exp_std_error(log_weights: Tensor) -> float:
    """Delta-method standard error of log Ẑ_IS: std(w)/(√n·mean(w)) with w = exp(ℓ − max ℓ),
    i.e. √((1/ESS − 1)/(n − 1)) in terms of the normalised ESS. Heavy-tailed weights make it
    an underestimate, like every error bar computed from the same weights."""
    lw = _as_float64(log_weights)
    if lw.numel() < 2 or not bool(torch.isfinite(lw).any()) or bool(torch.isnan(lw).any()):
        return math.inf
    w = torch.exp(lw - lw.max())
    return float(w.std() / (math.sqrt(lw.numel()) * w.mean()))


def effective_sample_size(log_weights: Tensor) -> float:
    """Normalized ESS (Σw)²/(n·Σw²) with w = exp(ℓ − max ℓ); in [1/n, 1]. NaN weights count as 0."""
    lw = _as_float64(log_weights)
    lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
    if not bool(torch.isfinite(lw).any()):
        return 0.0
    w = torch.exp(lw - lw.max())
    return float(w.sum() ** 2 / (lw.numel() * (w * w).sum()))


def folded_fraction(det_signs: Tensor) -> tuple[float, float]:
    """(share of samples whose map has a negative Jacobian determinant, share that passes
    through a fold). `det_signs` is (n,) for one map or (K, n) for a flow of K steps.

    A continuous invertible map has one determinant sign everywhere, so a sample whose sign
    differs from the majority's, at any step, lies where the map folds. The overall sign of a
    flow is the product of its steps' signs."""
    per_step = det_signs.reshape(-1, det_signs.shape[-1])
    negative = float((per_step.prod(0) < 0).double().mean())
    majority = torch.where(per_step.sum(1, keepdim=True) >= 0, 1.0, -1.0).to(per_step)
    folded = float((per_step != majority).any(0).double().mean())
    return negative, folded


def log_z_report(
    log_weights: Tensor, true_log_Z: float | None, det_signs: Tensor | None = None
) -> dict[str, Any]:
    """ELBO and IS log Z with their standard errors, normalised ESS and, when log Z is known,
    both |Δlog Z| values (each with the standard error of its estimate).

    `det_signs` (deterministic-flow weights only; (n,) or (K, n), see `folded_fraction`) add
    `negative_det_fraction` and `folded_fraction`; a folded share above `FOLD_THRESHOLD` marks
    the weights invalid (`weights_valid` false, the estimates null, their raw values under
    `invalid_estimates`)."""
    lw = _as_float64(log_weights)
    report: dict[str, Any] = {
        "elbo": elbo(lw),
        "elbo_se": elbo_std_error(lw),
        "log_Z_is": log_mean_exp(lw),
        "log_Z_is_se": log_mean_exp_std_error(lw),
        "ess": effective_sample_size(lw),
        "abs_dlogZ_elbo": None,
        "abs_dlogZ_is": None,
        "n_weights": float(lw.numel()),
        "n_nonfinite_weights": float((~torch.isfinite(lw)).sum()),
        # NaN or +inf: the target (or the sampler) broke; −inf is a sample of zero density
        "n_invalid_weights": float((torch.isnan(lw) | (lw == math.inf)).sum()),
        "weights_valid": True,
    }
    if true_log_Z is not None:
        report["abs_dlogZ_elbo"] = abs(report["elbo"] - true_log_Z)
        report["abs_dlogZ_is"] = abs(report["log_Z_is"] - true_log_Z)
    if det_signs is not None:
        negative, folded = folded_fraction(det_signs)
        report["negative_det_fraction"] = negative
        report["folded_fraction"] = folded
        if folded > FOLD_THRESHOLD:
            report["weights_valid"] = False
            report["invalid_reason"] = (
                f"the map folds: {folded:.2%} of samples have the minority Jacobian "
                f"determinant sign (threshold {FOLD_THRESHOLD:.2%})"
            )
            report["invalid_estimates"] = {key: report[key] for key in ESTIMATES}
            report.update(dict.fromkeys(ESTIMATES))
    return report
