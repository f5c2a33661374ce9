"""`student5`: a heavy-tailed, correlated multivariate Student-t in 5-D (docs/methods.md §9).

ρ(x) = (1 + q(x)/ν)^(−(ν + D)/2) with q(x) = xᵀΣ⁻¹x, Σ = S·C·S (scales S, AR(1) correlation
C_ij = r^|i−j|), left unnormalized: log Z = log Γ(ν/2) + (D/2)·log(νπ) + ½·log|Σ| − log Γ((ν+D)/2).
Exact draws: x = L·z / √(χ²_ν/ν) with LLᵀ = Σ, z ~ N(0, I) and χ²_ν a sum of ν squared standard
normals (ν an integer). Marginal standard deviations: S_d·√(ν/(ν − 2)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cds.targets.base import Target

SCALES = (1.0, 1.5, 0.7, 1.0, 2.0)


class StudentT(Target):
    """The Student-t above (ν = 5 degrees of freedom by default: finite variance, heavy tails)."""

    name = "student5"
    box = (-8.0, 8.0)

    def __init__(self, dof: int = 5, correlation: float = 0.6):
        if isinstance(dof, bool) or not isinstance(dof, int) or dof < 3:
            raise ValueError(f"dof must be an integer ≥ 3 (finite variance), got {dof!r}")
        if not -1.0 < correlation < 1.0:
            raise ValueError(f"correlation must lie in (−1, 1), got {correlation!r}")
        self.dof = dof
        scales = torch.tensor(SCALES, dtype=torch.float64)
        self.dim = len(SCALES)
        idx = torch.arange(self.dim)
        corr = correlation ** (idx[:, None] - idx[None, :]).abs().double()
        cov = scales[:, None] * corr * scales[None, :]
        self.chol = torch.linalg.cholesky(cov)
        self.precision = torch.cholesky_inverse(self.chol)
        self.scales = scales
        half_log_det = float(torch.log(torch.diagonal(self.chol)).sum())
        self.log_Z = (
            math.lgamma(dof / 2)
            + 0.5 * self.dim * math.log(dof * math.pi)
            + half_log_det
            - math.lgamma((dof + self.dim) / 2)
        )

    def _quadratic(self, x: Tensor) -> Tensor:
        return ((x @ self.precision.to(x)) * x).sum(dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * (self.dof + self.dim) * torch.log1p(self._quadratic(x) / self.dof)

    def _score(self, x: Tensor) -> Tensor:
        factor = (self.dof + self.dim) / (self.dof + self._quadratic(x))
        return -factor.unsqueeze(1) * (x @ self.precision.to(x))

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = self.draw_device(generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        chi2 = torch.randn(n, self.dof, generator=generator, device=device, dtype=torch.float64)
        scale = (chi2.square().sum(dim=1, keepdim=True) / self.dof).rsqrt()
        return ((z @ self.chol.to(device).T) * scale).to(torch.float32)

    def marginal_stds(self) -> Tensor:
        return self.scales * math.sqrt(self.dof / (self.dof - 2))
