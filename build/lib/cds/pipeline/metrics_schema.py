"""The evaluation's metrics: every key with its meaning and who reads it, written once.

`data/eval/metrics.json` holds the scored student's metrics at the top level (the roles below
say which) beside the teacher's and the run's; each consumer (the budget curve, the run summary,
the registry gate and its tags, the sweep table) takes its keys from `keys(role)` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(Enum):
    """Who reads a metric."""

    HEADLINE = "headline"  # copied from the chosen student's scores to metrics.json's top level
    CURVE = "curve"  # kept for each point of the budget curve
    SUMMARY = "summary"  # printed in a run's summary (`cds run`)
    EVIDENCE = "evidence"  # what the registry gate compares, tagged on each version
    NONFINITE = "nonfinite"  # shares of non-finite values, gated and tagged
    TAGGED = "tagged"  # further tags on each registered version
    TABLE = "table"  # columns of a sweep's results table


@dataclass(frozen=True)
class Metric:
    """One metric: its key in metrics.json, what it means, and who reads it."""

    key: str
    meaning: str
    roles: frozenset[Role]


H, C, S, E, N, T, B = (
    Role.HEADLINE,
    Role.CURVE,
    Role.SUMMARY,
    Role.EVIDENCE,
    Role.NONFINITE,
    Role.TAGGED,
    Role.TABLE,
)


def _metric(key: str, meaning: str, *roles: Role) -> Metric:
    return Metric(key, meaning, frozenset(roles))


#: Every metric a consumer reads, in the order metrics.json and the tables show them.
METRICS: tuple[Metric, ...] = (
    _metric("method", "the sampler: cdds, scds or dis", C, S),
    _metric("nfe", "network evaluations per sample (K)", H, C, S, T),
    _metric("weights", "how the log weights were computed (exact, Hutchinson, SDE, none)", C),
    _metric("sinkhorn", "paper Sinkhorn distance to the test reference", H, C, S, T, B),
    _metric("sinkhorn_floor", "the same distance between two exact sample sets", H, S),
    _metric("sinkhorn_ratio", "sinkhorn / sinkhorn_floor", H, C, S, E, B),
    _metric("sinkhorn_ratio_se", "standard error of sinkhorn_ratio over repeats", E),
    _metric("teacher_sinkhorn", "the teacher's sinkhorn on the same reference", S),
    _metric("sinkhorn_vs_teacher", "sinkhorn / teacher_sinkhorn", S, T, B),
    _metric("sinkhorn_validation", "sinkhorn on the validation reference (choosing K)", C),
    _metric("mode_mass_err_max", "largest |share of samples in a mode − its true mass|", H, S, B),
    _metric("std_rel_err_max", "largest relative error of a marginal standard deviation", H, S, B),
    _metric("abs_dlogZ_is", "|IS log Z − log Z| where log Z is known", H, C, S, E, B),
    _metric("abs_dlogZ_elbo", "|ELBO − log Z| where log Z is known", H, C),
    _metric("log_Z_is", "importance-sampling log Z estimate", H, E),
    _metric("log_Z_is_se", "its Monte Carlo standard error", H, C, S, E),
    _metric("elbo", "evidence lower bound, mean log weight", H, E),
    _metric("elbo_se", "its Monte Carlo standard error", H, E),
    _metric("ess", "normalised effective sample size of the weights", H, C, S, E, B),
    _metric("weights_valid", "whether the log weights are valid (no folding)", H, C, S, E),
    _metric("negative_det_fraction", "share of samples with a negative Jacobian det", H),
    _metric("folded_fraction", "share of samples through a fold of the map", H, C),
    _metric("nonfinite_weight_fraction", "share of NaN or +inf log weights", N),
    _metric("teacher_nonfinite_weight_fraction", "the same for the teacher", N),
    _metric("dropped_path_fraction", "share of training paths with a non-finite RND", N),
    _metric("teacher_dropped_path_fraction", "the same for the teacher", N),
)


def keys(role: Role) -> tuple[str, ...]:
    """The keys of the metrics `role` reads, in `METRICS` order."""
    return tuple(m.key for m in METRICS if role in m.roles)


def tagged_keys() -> tuple[str, ...]:
    """Every key copied onto a registered version as a tag: the gate's evidence, the
    non-finite shares and the headline quality."""
    return tuple(m.key for m in METRICS if m.roles & {Role.EVIDENCE, Role.NONFINITE, Role.TAGGED})
