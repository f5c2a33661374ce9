"""The prior p_prior = N(0, I), optionally truncated to the box [−c, c]^D.

Truncation (docs/methods.md §12, pitfall 5) is only valid with a log-density that matches it: the
truncated density is N(0, I) restricted to the box and renormalized, log p = log N(x; 0, I) −
D·log(Φ(c) − Φ(−c)), −∞ outside. The score is −x inside the box in both cases.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cds.devices import draw_device


class StandardNormalPrior:
    """N(0, I_D), or its truncation to [−c, c]^D when `truncation` = c is given."""

    def __init__(
        self, dim: int, truncation: float | None = None, device: torch.device | str = "cpu"
    ):
        if truncation is not None and not truncation > 0:
            raise ValueError(f"prior truncation must be positive, got {truncation!r}")
        self.dim = dim
        self.truncation = truncation
        #: Where generator-less draws happen (a draw with a generator happens on its device).
        self.device = torch.device(device)
        if truncation is None:
            self._log_mass = 0.0
        else:
            mass = math.erf(truncation / math.sqrt(2.0))  # Φ(c) − Φ(−c)
            self._log_mass = dim * math.log(mass)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of shape (n, D) float32 (inverse-CDF sampling when truncated), on the
        generator's device."""
        device = draw_device(generator, self.device)
        if self.truncation is None:
            return torch.randn(n, self.dim, generator=generator, device=device)
        lo = 0.5 * math.erfc(self.truncation / math.sqrt(2.0))  # Φ(−c)
        draw = torch.rand(n, self.dim, generator=generator, dtype=torch.float64, device=device)
        u = lo + (1 - 2 * lo) * draw
        return torch.special.ndtri(u).to(torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalized log density, shape (B,)."""
        out = -0.5 * x.square().sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        if self.truncation is None:
            return out
        inside = (x.abs() <= self.truncation).all(dim=1)
        return torch.where(inside, out - self._log_mass, torch.full_like(out, -math.inf))

    @staticmethod
    def score(x: Tensor) -> Tensor:
        """∇log p_prior(x) = −x."""
        return -x
