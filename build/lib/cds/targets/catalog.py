"""Target catalog: built-in targets by name, user targets by `module.path:ClassName`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from cds.targets.banana import Banana
from cds.targets.base import Target, moved_to
from cds.targets.funnel import Funnel
from cds.targets.gmm import gmm9
from cds.targets.image import ImageDensity
from cds.targets.lgcp import LogGaussianCoxProcess
from cds.targets.logreg import BayesianLogisticRegression
from cds.targets.manywell import mw52, mw54
from cds.targets.rotated_mixture import RotatedMixture
from cds.targets.student_t import StudentT


class UnknownTargetError(ValueError):
    """Raised for a target name that is neither registered nor a loadable `module:Class`."""


class InvalidUserTargetError(TypeError):
    """Raised when a user-supplied target class does not implement the target interface."""


TARGETS: dict[str, Callable[..., Target]] = {
    "gmm9": gmm9,
    "funnel": Funnel,
    "mw54": mw54,
    "mw52": mw52,
    "lgcp": LogGaussianCoxProcess,
    "image": ImageDensity,
    "logreg_cancer": BayesianLogisticRegression,
    "banana": Banana,
    "rotmix4": RotatedMixture,
    "student5": StudentT,
}


#: The target name a run records for a density given as a Python object (`cds.fit`): nothing
#: can rebuild it, so a sampler that needs it at sampling time must be handed it again.
IN_MEMORY_TARGET = "<in-memory>"


def target_names() -> list[str]:
    """Names of the built-in targets."""
    return list(TARGETS)


def get_target(name: str, **options: Any) -> Target:
    """Build a target by registry name or by `module.path:ClassName`.

    `options` are passed to the constructor (e.g. `data=` for lgcp).
    """
    if name in TARGETS:
        try:
            return TARGETS[name](**options)
        except TypeError as err:
            raise ValueError(f"invalid options {options!r} for target {name!r}: {err}") from None
    if ":" in name:
        return load_user_target(name, **options)
    if name == IN_MEMORY_TARGET:
        raise UnknownTargetError(
            f"target {name!r} was a density passed as a Python object (cds.fit): nothing can "
            "rebuild it; pass it again, or name a built-in target or 'module.path:ClassName'"
        )
    raise UnknownTargetError(
        f"unknown target {name!r}; valid names are {', '.join(TARGETS)} "
        "or a user class given as 'module.path:ClassName'"
    )


def load_user_target(spec: str, **options: Any) -> Target:
    """Import `module.path:ClassName`, instantiate it and check it behaves as a target.

    A class that does not derive from `Target` is accepted if it has an integer `dim` and a
    `log_prob` method; it is wrapped so that it gains input validation and an autograd score.
    """
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user module may fail with anything while it is imported
        raise UnknownTargetError(
            f"target.name = {spec!r}: cannot import module {module_name!r}: "
            f"{type(err).__name__}: {err}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UnknownTargetError(
            f"target.name = {spec!r}: module {module_name!r} has no attribute {class_name!r}"
        )
    try:
        obj = cls(**options)
    except TypeError as err:
        raise InvalidUserTargetError(
            f"target.options = {options!r} are not accepted by {spec!r}: {err}"
        ) from None
    target = obj if isinstance(obj, Target) else _UserTarget(obj, spec)
    _check_user_target(target, spec)
    return target


class _UserTarget(Target):
    """Adapter giving a duck-typed user density the full `Target` interface."""

    def __init__(self, inner: Any, spec: str):
        for attr in ("dim", "log_prob"):
            if not hasattr(inner, attr):
                raise InvalidUserTargetError(f"user target {spec!r} has no attribute {attr!r}")
        if not callable(inner.log_prob):
            raise InvalidUserTargetError(f"user target {spec!r}: 'log_prob' is not callable")
        self.inner = inner
        self.name = getattr(inner, "name", spec)
        self.dim = inner.dim
        self.log_Z = getattr(inner, "log_Z", None)
        self.box = tuple(getattr(inner, "box", (-5.0, 5.0)))
        if callable(getattr(inner, "sample", None)):
            self._sample = lambda n, generator: inner.sample(n, generator)

    @property
    def has_exact_samples(self) -> bool:
        return "_sample" in self.__dict__

    def to(self, device: torch.device | str) -> Target:
        """Move the user's object too: its own `to(device)` when it has one, else its tensor
        and module attributes."""
        device = torch.device(device)
        mover = getattr(self.inner, "to", None)
        if callable(mover):
            self.inner = mover(device) or self.inner
        else:
            for key, value in list(vars(self.inner).items()):
                setattr(self.inner, key, moved_to(value, device))
        return super().to(device)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.log_prob(x)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        if callable(getattr(self.inner, "score", None)):
            return self.inner.score(x)
        return super()._score(x)


def _check_user_target(target: Target, spec: str) -> None:
    """Evaluate the target on a small probe batch and check shapes and finiteness."""
    if not isinstance(target.dim, int) or target.dim < 1:
        raise InvalidUserTargetError(
            f"user target {spec!r}: dim must be a positive int, got {target.dim!r}"
        )
    probe = torch.randn(4, target.dim, generator=torch.Generator().manual_seed(0))
    try:
        value = target.log_prob(probe)
    except Exception as err:
        raise InvalidUserTargetError(f"user target {spec!r}: log_prob failed: {err}") from err
    if not isinstance(value, torch.Tensor) or value.shape != (4,):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InvalidUserTargetError(
            f"user target {spec!r}: log_prob of a (4, {target.dim}) batch must have shape (4,), "
            f"got {shape}"
        )
    if not bool(torch.isfinite(value).all()):
        raise InvalidUserTargetError(
            f"user target {spec!r}: log_prob is not finite on standard normal inputs"
        )
