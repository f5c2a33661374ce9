"""The target interface: an unnormalized density ρ = Z·p known through log ρ and ∇log ρ.

Every target exposes (docs/methods.md §9): a registry `name`, its dimension `dim`, batched
`log_prob(x)` of shape (B,), `score(x)` = ∇log ρ(x) of shape (B, D), `sample(n, generator)` when
exact samples exist, `log_Z` when known (else None), and a plot `box`.

Public methods validate their input (shape, dtype, finiteness) and raise `TargetInputError`
naming the problem; subclasses implement the unchecked `_log_prob` and, where cheap, an analytic
`_score`. Analytic scores are written in differentiable torch ops, so ∇²log ρ is available by
autograd when the caller's x requires grad (needed by the deterministic-flow divergence, §6).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from cds.devices import draw_device


class TargetInputError(ValueError):
    """Raised when a target receives input of the wrong shape, dtype or with non-finite values."""


class NoExactSamplesError(NotImplementedError):
    """Raised by `sample` on targets without an exact sampler (e.g. lgcp, logreg_cancer)."""


class Target(ABC):
    """Base class of all targets. Subclasses set `name`, `dim`, `log_Z` and `box`."""

    name: str = "target"
    dim: int
    #: Natural log of the normalizing constant Z, or None when unknown.
    log_Z: float | None = None
    #: Plot box (low, high), applied to every coordinate.
    box: tuple[float, float] = (-5.0, 5.0)

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def _log_prob(self, x: Tensor) -> Tensor:
        """Unnormalized log density of a validated (B, D) batch, shape (B,)."""

    def _score(self, x: Tensor) -> Tensor:
        """∇log ρ of a validated batch; autograd by default, override with analytic forms."""
        if x.requires_grad:
            # Inside a caller's graph (e.g. a divergence): keep second derivatives available.
            return torch.autograd.grad(self._log_prob(x).sum(), x, create_graph=True)[0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(self._log_prob(xg).sum(), xg)[0]

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NoExactSamplesError(f"target {self.name!r} has no exact sampler")

    def to(self, device: torch.device | str) -> Target:
        """Move the target's constants (its tensor and module attributes) to `device`, in place,
        as `nn.Module.to` does; returns the target. Its draws then happen there too."""
        device = torch.device(device)
        for key, value in list(vars(self).items()):
            setattr(self, key, moved_to(value, device))
        self._device = device
        return self

    @property
    def device(self) -> torch.device:
        """Where the target's constants live and its generator-less draws happen."""
        return vars(self).get("_device", torch.device("cpu"))

    def draw_device(self, generator: torch.Generator | None) -> torch.device:
        """Where a draw with `generator` happens: the generator's device, else the target's."""
        return draw_device(generator, self.device)

    @property
    def has_exact_samples(self) -> bool:
        """Whether `sample` draws exact samples."""
        return type(self)._sample is not Target._sample

    # ----------------------------------------------------------------- public API
    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalized log density log ρ(x) of a (B, D) batch; returns shape (B,)."""
        return self._log_prob(self.check_input(x))

    def score(self, x: Tensor) -> Tensor:
        """∇_x log ρ(x) of a (B, D) batch; returns shape (B, D)."""
        return self._score(self.check_input(x))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples from p = ρ/Z as a (n, D) float32 tensor."""
        if not isinstance(n, int) or n < 1:
            raise TargetInputError(f"number of samples n must be a positive integer, got {n!r}")
        return self._sample(n, generator)

    def mode_assignment(self, x: Tensor) -> Tensor | None:
        """Index of the mode each sample belongs to, or None for targets without known modes."""
        return None

    n_modes: int = 0

    def mode_weights(self) -> Tensor | None:
        """The true probability mass of each mode of `mode_assignment` (shape (n_modes,)), or
        None for targets without known modes."""
        return None

    def marginal_stds(self) -> Tensor | None:
        """The exact standard deviation of each coordinate (shape (D,)), or None when unknown
        (the evaluation then compares with its exact reference set's)."""
        return None

    def check_input(self, x: Tensor) -> Tensor:
        """Validate a batch: a floating (B, D) tensor with D = self.dim and finite values."""
        if not isinstance(x, Tensor):
            raise TargetInputError(
                f"target {self.name!r} expects a torch.Tensor, got {type(x).__name__}"
            )
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise TargetInputError(
                f"target {self.name!r} expects a batch of shape (B, {self.dim}), "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TargetInputError(
                f"target {self.name!r} expects a floating-point tensor, got dtype {x.dtype}"
            )
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).sum())
            raise TargetInputError(
                f"target {self.name!r} received {bad} sample(s) with non-finite coordinates"
            )
        return x

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary: name, dim, log_Z, exact samples, box."""
        return {
            "name": self.name,
            "dim": self.dim,
            "log_Z": self.log_Z,
            "exact_samples": self.has_exact_samples,
            "box": list(self.box),
        }


def moved_to(value: Any, device: torch.device) -> Any:
    """`value` on `device` when it is a tensor or a module, else `value` itself."""
    if isinstance(value, Tensor | nn.Module):
        return value.to(device)
    return value


def check_density(target: Target, x: Tensor) -> None:
    """Refuse a target whose log ρ or ∇log ρ is NaN or +∞ at `x` (typically prior samples), or
    whose log ρ is −∞ everywhere there: no sampler can be trained on it."""
    log_rho = target.log_prob(x)
    bad = torch.isnan(log_rho) | (log_rho == torch.inf)
    if bool(bad.any()):
        raise TargetInputError(
            f"target {target.name!r}: log density is {log_rho[bad][0].item()} at "
            f"{int(bad.sum())} of {len(x)} prior samples"
        )
    if not bool(torch.isfinite(log_rho).any()):
        raise TargetInputError(
            f"target {target.name!r}: log density is -inf at all {len(x)} prior samples"
        )
    score = target.score(x[torch.isfinite(log_rho)])
    if not bool(torch.isfinite(score).all()):
        raise TargetInputError(f"target {target.name!r}: the score ∇log ρ is not finite")
