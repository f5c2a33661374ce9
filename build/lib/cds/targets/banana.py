"""`banana`: a curved 2-D density, a Gaussian bent along a parabola (docs/methods.md §9).

x₁ ~ N(0, σ₁²) and x₂ | x₁ ~ N(b·(x₁² − σ₁²), σ₂²). The map (z₁, z₂) ↦ (σ₁z₁, σ₂z₂ + b·(σ₁²z₁² −
σ₁²)) has unit Jacobian determinant up to σ₁σ₂, so the density stays in closed form:

    log ρ(x) = −x₁²/(2σ₁²) − (x₂ − b·(x₁² − σ₁²))²/(2σ₂²),    log Z = log(2π·σ₁·σ₂),

and x₂'s marginal standard deviation is √(σ₂² + 2b²σ₁⁴) (Var(x₁²) = 2σ₁⁴).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cds.targets.base import Target


class Banana(Target):
    """The curved density above (left unnormalized, so log Z ≠ 0 checks the estimators)."""

    name = "banana"
    dim = 2
    box = (-6.0, 8.0)

    def __init__(self, std1: float = 1.5, std2: float = 0.5, curvature: float = 0.4):
        for name, value in (("std1", std1), ("std2", std2)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.std1, self.std2, self.curvature = float(std1), float(std2), float(curvature)
        self.log_Z = math.log(2 * math.pi * self.std1 * self.std2)

    def _offset(self, x1: Tensor) -> Tensor:
        return self.curvature * (x1.square() - self.std1**2)

    def _log_prob(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        return (
            -0.5 * (x1 / self.std1).square() - 0.5 * ((x2 - self._offset(x1)) / self.std2).square()
        )

    def _score(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        r = (x2 - self._offset(x1)) / self.std2**2
        return torch.stack([-x1 / self.std1**2 + 2 * self.curvature * x1 * r, -r], dim=1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(n, 2, generator=generator, device=self.draw_device(generator))
        x1 = self.std1 * z[:, 0]
        return torch.stack([x1, self._offset(x1) + self.std2 * z[:, 1]], dim=1)

    def marginal_stds(self) -> Tensor:
        return torch.tensor(
            [self.std1, math.sqrt(self.std2**2 + 2 * self.curvature**2 * self.std1**4)],
            dtype=torch.float64,
            device=self.device,
        )
