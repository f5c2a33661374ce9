"""Metrics: the paper's Sinkhorn, discrepancies, mode coverage, log Z estimators, noise floors."""

from cds.metrics.divergences import mmd_rbf, sinkhorn_divergence
from cds.metrics.estimators import (
    FOLD_THRESHOLD,
    effective_sample_size,
    elbo,
    log_mean_exp,
    log_mean_exp_std_error,
    log_z_report,
)
from cds.metrics.modes import (
    marginal_std_errors,
    marginal_std_rel_error,
    mode_coverage,
    mode_mass_errors,
)
from cds.metrics.report import compare_to_exact, noise_floor, sample_quality, with_floor_ratios
from cds.metrics.sinkhorn import SinkhornResult, paper_sinkhorn

__all__ = [
    "FOLD_THRESHOLD",
    "SinkhornResult",
    "compare_to_exact",
    "effective_sample_size",
    "elbo",
    "log_mean_exp",
    "log_mean_exp_std_error",
    "log_z_report",
    "marginal_std_errors",
    "marginal_std_rel_error",
    "mmd_rbf",
    "mode_coverage",
    "mode_mass_errors",
    "noise_floor",
    "paper_sinkhorn",
    "sample_quality",
    "sinkhorn_divergence",
    "with_floor_ratios",
]
