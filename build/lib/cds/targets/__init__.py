"""Targets: unnormalized densities with scores, exact samplers and known log Z where available."""

from cds.targets.base import NoExactSamplesError, Target, TargetInputError, check_density
from cds.targets.catalog import (
    IN_MEMORY_TARGET,
    TARGETS,
    InvalidUserTargetError,
    UnknownTargetError,
    get_target,
    load_user_target,
    target_names,
)
from cds.targets.prior import StandardNormalPrior

__all__ = [
    "IN_MEMORY_TARGET",
    "TARGETS",
    "InvalidUserTargetError",
    "NoExactSamplesError",
    "StandardNormalPrior",
    "Target",
    "TargetInputError",
    "UnknownTargetError",
    "check_density",
    "get_target",
    "load_user_target",
    "target_names",
]
