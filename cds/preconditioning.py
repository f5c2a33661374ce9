"""The Laplace prior (`sde.prior: laplace`, docs/methods.md §1, "Laplace prior").

A posterior whose scales differ by an order of magnitude, far from the origin, makes the VP
SDE from N(0, I) stiff near the target (the score term's Lipschitz constant times β·Δt exceeds
the Euler step's stability bound). With the Laplace prior the samplers work in whitened
coordinates z, with x = μ + L·z, where μ is the mode of ρ and L·Lᵀ = (−∇²log ρ(μ))⁻¹:

    log ρ_z(z) = log ρ(μ + L·z) + log|det L|,   Z_z = Z,

so N(0, I) is the Laplace approximation of the whitened target, importance weights and log Z
are the same in both coordinates (the |det L| of the density cancels the one of the map), and
only the samples are mapped back. It is for unimodal densities (Bayesian posteriors): on a
target with several modes it would whiten one of them, so `laplace_map` refuses a target on
which its starting points climb to modes that differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cds.checkpoints import CheckpointError
from cds.targets.base import Target, TargetInputError

#: A mode is found when the largest score coordinate is below this (in float64).
GRADIENT_TOLERANCE = 1e-5
#: The same in float32: this, or this fraction of the largest score coordinate at the starts.
FLOAT32_TOLERANCE = 1e-3
FLOAT32_RELATIVE_TOLERANCE = 1e-5
#: Largest condition number of −∇²log ρ at the mode (beyond it a direction is nearly flat).
MAX_CONDITION = 1e12
#: L-BFGS rounds (each up to `LBFGS_ITERATIONS` iterations) before giving up on a mode.
LBFGS_ROUNDS = 20
LBFGS_ITERATIONS = 200
#: Two climbs end at different modes when their end points are this many whitened units
#: apart (Mahalanobis distance under the best mode's Laplace covariance).
MODE_SEPARATION = 1.0


#: Where a checkpoint's payload keeps the map (`cds.training.Trainer.state`).
PRIOR_MAP_KEY = "prior_map"


class LaplaceError(ValueError):
    """The target has no single mode with a negative-definite Hessian to whiten around."""


@dataclass(frozen=True)
class AffineMap:
    """x = shift + scale_tril·z, with a lower-triangular scale of positive diagonal."""

    shift: Tensor
    scale_tril: Tensor

    @property
    def log_abs_det(self) -> float:
        """log|det L|."""
        return float(self.scale_tril.diagonal().log().sum())

    def forward(self, z: Tensor) -> Tensor:
        """x = μ + L·z of a (B, D) batch."""
        return self.shift.to(z) + z @ self.scale_tril.to(z).T

    def inverse(self, x: Tensor) -> Tensor:
        """z = L⁻¹·(x − μ) of a (B, D) batch."""
        centred = (x - self.shift.to(x)).T
        return torch.linalg.solve_triangular(self.scale_tril.to(x), centred, upper=False).T

    def state(self) -> dict[str, Tensor]:
        """The map as a checkpoint stores it (float64, on the CPU)."""
        return {"shift": self.shift.double().cpu(), "scale_tril": self.scale_tril.double().cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> AffineMap:
        """The map `state` gave."""
        return cls(state["shift"], state["scale_tril"])

    def equals(self, other: AffineMap) -> bool:
        """The same map, bit for bit."""
        mine, theirs = self.state(), other.state()
        return all(torch.equal(mine[key], theirs[key]) for key in mine)


def recorded_prior_map(payload: dict[str, Any]) -> AffineMap | None:
    """The map a training checkpoint's payload records (None: trained under the standard
    prior); `CheckpointError` when what it records is not such a map."""
    state = payload.get(PRIOR_MAP_KEY)
    if state is None:
        return None
    shift = state.get("shift") if isinstance(state, dict) else None
    scale = state.get("scale_tril") if isinstance(state, dict) else None
    if not (
        isinstance(shift, Tensor)
        and isinstance(scale, Tensor)
        and shift.ndim == 1
        and scale.shape == (len(shift), len(shift))
        and shift.is_floating_point()
        and scale.is_floating_point()
        and bool(torch.isfinite(shift).all() and torch.isfinite(scale).all())
        and bool((scale.diagonal() > 0).all())
    ):
        raise CheckpointError(
            f"the checkpoint's {PRIOR_MAP_KEY!r} is not a map x = μ + L·z (a finite float shift "
            "of shape (D,) and a scale of shape (D, D) with a positive diagonal)"
        )
    return AffineMap.from_state(state)


class WhitenedTarget(Target):
    """The target in the whitened coordinates of `prior_map`: log ρ_z(z) = log ρ(μ + L·z) +
    log|det L| and ∇_z log ρ_z = Lᵀ·∇_x log ρ (module docstring). Its exact samples, where the
    target has them, are the target's mapped by L⁻¹(x − μ)."""

    def __init__(self, target: Target, prior_map: AffineMap):
        self.base = target
        self._device = target.device
        self.name = target.name
        self.dim = target.dim
        self.log_Z = target.log_Z
        self.prior_map = prior_map
        self._log_abs_det = prior_map.log_abs_det

    def _log_prob(self, z: Tensor) -> Tensor:
        return self.base.log_prob(self.prior_map.forward(z)) + self._log_abs_det

    def _score(self, z: Tensor) -> Tensor:
        return self.base.score(self.prior_map.forward(z)) @ self.prior_map.scale_tril.to(z)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        return self.prior_map.inverse(self.base.sample(n, generator))

    @property
    def has_exact_samples(self) -> bool:
        return self.base.has_exact_samples

    def to(self, device: torch.device | str) -> WhitenedTarget:
        self.base.to(device)
        self.prior_map = AffineMap(
            self.prior_map.shift.to(device), self.prior_map.scale_tril.to(device)
        )
        self._device = torch.device(device)
        return self


def laplace_map(target: Target, starts: Tensor) -> AffineMap:
    """μ and L of the Laplace prior (module docstring): L-BFGS climbs log ρ from each of
    `starts` (those where log ρ is finite), in float64 unless the density takes float32 only;
    the highest end point is the mode μ, and L = chol((−∇²log ρ(μ))⁻¹). Refused
    (`LaplaceError`, naming the setting) when no climb reaches a point where the score vanishes,
    when the Hessian there is not negative definite or nearly singular (`MAX_CONDITION`), or
    when two climbs end at different modes. Climbs from a few draws can all reach one mode of
    several, so a second mode far from them may go unseen."""
    dtype = _search_dtype(target, starts)
    starts = starts.detach().to(target.device, dtype)
    starts = starts[torch.isfinite(target.log_prob(starts))]
    if len(starts) == 0:
        raise LaplaceError("sde.prior = 'laplace': log ρ is not finite at any starting point")
    tolerance = _tolerance(target, starts)
    climbs = [_climb(target, start, tolerance) for start in starts]
    found = [(value, x) for value, x, converged in climbs if converged]
    if not found:
        raise LaplaceError(
            f"sde.prior = 'laplace': no mode of log ρ found (no climb brought the score below "
            f"{tolerance:.3g} in {LBFGS_ROUNDS * LBFGS_ITERATIONS} L-BFGS iterations; log ρ "
            "may be unbounded): use sde.prior=standard"
        )
    best_value, mode = max(found, key=lambda pair: pair[0])
    hessian = torch.autograd.functional.hessian(lambda x: target.log_prob(x[None])[0], mode)
    precision = (-0.5 * (hessian + hessian.T)).double()
    eigenvalues = torch.linalg.eigvalsh(precision)
    if not bool(eigenvalues[0] > 0) or float(eigenvalues[-1] / eigenvalues[0]) > MAX_CONDITION:
        raise LaplaceError(
            "sde.prior = 'laplace': the Hessian of log ρ at its mode is not negative definite "
            f"(eigenvalues of −∇²log ρ from {float(eigenvalues[0]):.3g} to "
            f"{float(eigenvalues[-1]):.3g}: a flat or improper direction): use "
            "sde.prior=standard"
        )
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    prior_map = AffineMap(mode.double().cpu(), torch.linalg.cholesky(covariance).cpu())
    for value, x in found:
        distance = float(prior_map.inverse(x[None].double().cpu()).norm())
        if distance > MODE_SEPARATION:
            raise LaplaceError(
                f"sde.prior = 'laplace': log ρ has several modes (log ρ = {best_value:.6g} and "
                f"{value:.6g}, {distance:.3g} whitened units apart); the Laplace prior whitens "
                "one mode only: use sde.prior=standard"
            )
    return prior_map


def _search_dtype(target: Target, starts: Tensor) -> torch.dtype:
    """float64 when log ρ computes in it, else float32 (a density holding float32 data)."""
    try:
        value = target.log_prob(starts.detach().to(target.device, torch.float64))
    except (RuntimeError, TypeError):
        return torch.float32
    return torch.float64 if value.dtype == torch.float64 else torch.float32


def _tolerance(target: Target, starts: Tensor) -> float:
    """The largest score coordinate at which a climb has found a mode: `GRADIENT_TOLERANCE` in
    float64; in float32, whose rounding bounds how small a score can get, that or
    `FLOAT32_RELATIVE_TOLERANCE` times the largest score coordinate at the starts."""
    if starts.dtype == torch.float64:
        return GRADIENT_TOLERANCE
    scale = float(target.score(starts).abs().max())
    return max(FLOAT32_TOLERANCE, FLOAT32_RELATIVE_TOLERANCE * scale)


def _climb(target: Target, start: Tensor, tolerance: float) -> tuple[float, Tensor, bool]:
    """L-BFGS ascent of log ρ from `start`: the value and point reached, and whether the score
    is below `tolerance` there. A climb whose line search steps to a non-finite point fails."""
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        max_iter=LBFGS_ITERATIONS,
        tolerance_grad=tolerance / 10,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def loss() -> Tensor:
        optimizer.zero_grad()
        value = -target.log_prob(x[None])[0]
        value.backward()
        return value

    largest = math.inf
    for _ in range(LBFGS_ROUNDS):
        try:
            optimizer.step(loss)
        except TargetInputError:  # log ρ refused a non-finite point of the line search
            return -math.inf, start, False
        if not bool(torch.isfinite(x).all()):
            return -math.inf, start, False
        largest = float(target.score(x.detach()[None]).abs().max())
        if largest < tolerance:
            break
    point = x.detach()
    value = float(target.log_prob(point[None])[0])
    return value, point, math.isfinite(value) and largest < tolerance
