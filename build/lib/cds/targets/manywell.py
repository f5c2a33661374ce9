"""Many-well targets `mw54` and `mw52` (docs/methods.md §9).

log ρ(x) = −Σ_{i≤W} (x_i² − δ)² − ½·Σ_{i>W} x_i², a product of W one-dimensional double wells
ρ₁(x) = exp(−(x² − δ)²) and D − W unnormalized standard Gaussians. Hence
log Z = W·log Z₁(δ) + ½·(D − W)·log 2π, with Z₁(δ) = ∫ρ₁ computed by adaptive quadrature.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from scipy import integrate
from torch import Tensor

from cds.targets.base import Target

#: Envelope constant of the rejection sampler; the true sup p/q is 2.79 (δ=4) and 2.64 (δ=2).
REJECTION_ENVELOPE = 3.0


@cache
def double_well_log_normalizer(delta: float) -> float:
    """log Z₁(δ) = log ∫ exp(−(x² − δ)²) dx by adaptive quadrature."""
    value, _ = integrate.quad(
        lambda x: math.exp(-((x * x - delta) ** 2)), -math.inf, math.inf, epsabs=1e-13, epsrel=1e-12
    )
    return math.log(value)


@cache
def double_well_std(delta: float) -> float:
    """The standard deviation of p₁ ∝ exp(−(x² − δ)²): √(∫x²ρ₁ / Z₁) by adaptive quadrature."""
    second, _ = integrate.quad(
        lambda x: x * x * math.exp(-((x * x - delta) ** 2)), -math.inf, math.inf, epsrel=1e-12
    )
    return math.sqrt(second / math.exp(double_well_log_normalizer(delta)))


def sample_double_well(
    n: int,
    delta: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """n exact samples of p₁ ∝ exp(−(x² − δ)²) by rejection.

    Proposal q = ½N(√δ, 1/δ) + ½N(−√δ, 1/δ); accept with probability ρ₁(x)/(Z₁·M·q(x)).
    """
    log_z1 = double_well_log_normalizer(delta)
    root, std = math.sqrt(delta), 1.0 / math.sqrt(delta)
    accepted: list[Tensor] = []
    n_accepted = 0
    while n_accepted < n:
        m = int(1.2 * REJECTION_ENVELOPE * (n - n_accepted)) + 16
        sign = (
            torch.randint(0, 2, (m,), generator=generator, dtype=torch.float64, device=device) * 2
            - 1
        )
        x = sign * root + std * torch.randn(
            m, generator=generator, dtype=torch.float64, device=device
        )
        log_q = torch.logaddexp(
            -0.5 * ((x - root) / std) ** 2, -0.5 * ((x + root) / std) ** 2
        ) - math.log(2 * std * math.sqrt(2 * math.pi))
        log_accept = -((x * x - delta) ** 2) - log_z1 - math.log(REJECTION_ENVELOPE) - log_q
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=device)
        keep = x[torch.log(u) < log_accept]
        accepted.append(keep)
        n_accepted += keep.numel()
    return torch.cat(accepted)[:n].to(torch.float32)


class ManyWell(Target):
    """W double wells of separation δ (2^W modes at ±√δ) and D − W standard Gaussian coords."""

    box = (-3.0, 3.0)

    def __init__(self, name: str, dim: int, n_wells: int, delta: float):
        if not 1 <= n_wells <= dim:
            raise ValueError(f"n_wells must be in [1, dim={dim}], got {n_wells}")
        self.name = name
        self.dim = dim
        self.n_wells = n_wells
        self.delta = float(delta)
        self.n_modes = 2**n_wells
        self.log_Z = n_wells * double_well_log_normalizer(self.delta) + 0.5 * (
            dim - n_wells
        ) * math.log(2 * math.pi)

    def _log_prob(self, x: Tensor) -> Tensor:
        wells = x[:, : self.n_wells]
        out = -(wells.square() - self.delta).square().sum(dim=1)
        if self.dim > self.n_wells:
            out = out - 0.5 * x[:, self.n_wells :].square().sum(dim=1)
        return out

    def _score(self, x: Tensor) -> Tensor:
        wells = x[:, : self.n_wells]
        grad_wells = -4.0 * wells * (wells.square() - self.delta)
        return torch.cat([grad_wells, -x[:, self.n_wells :]], dim=1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = self.draw_device(generator)
        wells = sample_double_well(n * self.n_wells, self.delta, generator, device)
        gauss = torch.randn(n, self.dim - self.n_wells, generator=generator, device=device)
        return torch.cat([wells.view(n, self.n_wells), gauss], dim=1)

    def mode_assignment(self, x: Tensor) -> Tensor:
        bits = (x[:, : self.n_wells] > 0).to(torch.int64)
        weights = 2 ** torch.arange(self.n_wells, dtype=torch.int64, device=x.device)
        return (bits * weights).sum(dim=1)

    def marginal_stds(self) -> Tensor:
        std = double_well_std(self.delta)
        return torch.tensor([std] * self.n_wells + [1.0] * (self.dim - self.n_wells),
                            dtype=torch.float64, device=self.device)  # fmt: skip

    def mode_weights(self) -> Tensor:
        """Equal: each double well is symmetric, so every sign pattern has mass 2^−W."""
        return torch.full(
            (self.n_modes,), 1.0 / self.n_modes, dtype=torch.float64, device=self.device
        )


def mw54() -> ManyWell:
    """5-D many-well with δ = 4 in every coordinate (32 modes at ±2)."""
    return ManyWell("mw54", dim=5, n_wells=5, delta=4.0)


def mw52() -> ManyWell:
    """50-D many-well: 5 wells with δ = 2 (modes at ±√2), 45 standard Gaussian coordinates."""
    return ManyWell("mw52", dim=50, n_wells=5, delta=2.0)
