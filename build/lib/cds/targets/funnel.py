"""`funnel`: Neal's funnel in 10 dimensions (docs/methods.md §9)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cds.targets.base import Target


class Funnel(Target):
    """x₁ ~ N(0, 9); x_i | x₁ ~ N(0, e^{x₁}) for i = 2..D. Normalized, so log Z = 0."""

    name = "funnel"
    log_Z = 0.0
    box = (-10.0, 10.0)

    def __init__(self, dim: int = 10, first_std: float = 3.0):
        self.dim = dim
        self.first_std = first_std

    def _log_prob(self, x: Tensor) -> Tensor:
        x1, rest = x[:, 0], x[:, 1:]
        var1 = self.first_std**2
        log_p1 = -0.5 * x1.square() / var1 - 0.5 * math.log(2 * math.pi * var1)
        n_rest = self.dim - 1
        log_rest = (
            -0.5 * rest.square().sum(dim=1) * torch.exp(-x1)
            - 0.5 * n_rest * x1
            - 0.5 * n_rest * math.log(2 * math.pi)
        )
        return log_p1 + log_rest

    def _score(self, x: Tensor) -> Tensor:
        x1, rest = x[:, :1], x[:, 1:]
        inv = torch.exp(-x1)
        d1 = (
            -x1 / self.first_std**2
            - 0.5 * (self.dim - 1)
            + 0.5 * rest.square().sum(dim=1, keepdim=True) * inv
        )
        return torch.cat([d1, -rest * inv], dim=1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, device=self.draw_device(generator))
        x1 = self.first_std * eps[:, :1]
        return torch.cat([x1, torch.exp(0.5 * x1) * eps[:, 1:]], dim=1)
