"""The variance-preserving (VP) SDE in generative time, its noising marginals and time grids.

Conventions (docs/methods.md §0–§1): generative time t ∈ [0, T] runs from the prior (t = 0) to the
target (t = T); τ = T − t is the time to go, which is also the noising time. With a linear
noising schedule β̄(τ) = β_min + (β_max − β_min)·τ/T, the generative rate is β(t) = β̄(T − t).

- Generative SDE:  dX_t = [μ(X_t, t) + σ(t)·u(X_t, t)] dt + σ(t) dW_t, with μ(x, t) = ½β(t)·x
  and σ(t) = √β(t).
- Probability-flow ODE:  dx/dt = v(x, t) = μ(x, t) + ½σ(t)·u(x, t).
- Noising marginal:  Y_τ | Y_0 ~ N(α(τ)·Y_0, (1 − α(τ)²)·I) with α(τ) = exp(−½B(τ)) and
  B(τ) = ∫₀^τ β̄ = β_min·τ + (β_max − β_min)·τ²/(2T).

Nothing here assumes T = 1 or a uniform grid: every function takes times explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class VPSchedule:
    """Linear-β VP schedule (docs/methods.md §1). All methods accept floats or tensors of times."""

    beta_min: float = 0.1
    beta_max: float = 10.0
    T: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta_min) and self.beta_min > 0):
            raise ValueError(f"beta_min must be a positive finite number, got {self.beta_min!r}")
        if not (math.isfinite(self.beta_max) and self.beta_max >= self.beta_min):
            raise ValueError(
                f"beta_max must be finite and >= beta_min={self.beta_min}, got {self.beta_max!r}"
            )
        if not (math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"T must be a positive finite number, got {self.T!r}")

    def beta(self, t: Tensor | float) -> Tensor | float:
        """Generative rate β(t) = β̄(T − t): β_max at t = 0 down to β_min at t = T."""
        return self.beta_min + (self.beta_max - self.beta_min) * (self.T - t) / self.T

    def sigma(self, t: Tensor | float) -> Tensor | float:
        """Diffusion coefficient σ(t) = √β(t)."""
        b = self.beta(t)
        return torch.sqrt(b) if isinstance(b, Tensor) else math.sqrt(b)

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Uncontrolled generative drift μ(x, t) = ½β(t)·x (expanding)."""
        return 0.5 * self.beta(t) * x

    def euler_maruyama_step(
        self, x: Tensor, t: float, dt: float, u: Tensor, noise: Tensor, sigma: float
    ) -> Tensor:
        """One Euler–Maruyama step of the controlled SDE (docs/methods.md §1, §3):
        x + [μ(x, t) + σ(t)·u]·Δt + σ(t)·√Δt·ξ, with σ(t) = `sigma` as the caller computed it."""
        return x + (self.drift(x, t) + sigma * u) * dt + sigma * math.sqrt(dt) * noise

    def pf_ode_step(
        self, x: Tensor, t: Tensor | float, dt: Tensor | float, u: Tensor, sigma: Tensor | float
    ) -> Tensor:
        """One Euler step of the probability-flow ODE (docs/methods.md §1):
        x + Δt·[μ(x, t) + ½σ(t)·u]. `t`, `dt` and `sigma` = σ(t) are floats, or tensors that
        broadcast against x (one time per sample: shape (B, 1))."""
        return x + dt * (self.drift(x, t) + 0.5 * sigma * u)

    def integrated_noising_beta(self, tau: Tensor | float) -> Tensor | float:
        """B(τ) = ∫₀^τ β̄(s) ds = β_min·τ + (β_max − β_min)·τ²/(2T)."""
        return self.beta_min * tau + (self.beta_max - self.beta_min) * tau**2 / (2.0 * self.T)

    def alpha(self, tau: Tensor | float) -> Tensor | float:
        """Mean factor of the noising marginal, α(τ) = exp(−½B(τ))."""
        b = self.integrated_noising_beta(tau)
        return torch.exp(-0.5 * b) if isinstance(b, Tensor) else math.exp(-0.5 * b)

    def noising_variance(self, tau: Tensor | float) -> Tensor | float:
        """Variance of the noising marginal, 1 − α(τ)²."""
        a = self.alpha(tau)
        return 1.0 - a * a

    def drift_divergence_increments(self, grid: Tensor, dim: int) -> Tensor:
        """Δdiv_k = D·log(1 + ½β(t_k)·Δt_k): the log normaliser of the reference kernel of the
        Euler–Maruyama chain (docs/methods.md §3).

        The uncontrolled Euler kernel F⁰(x_{k+1} | x_k) = N(x_{k+1}; (1 + ½β_kΔt_k)·x_k,
        β_kΔt_k·I) integrates over x_k to (1 + ½β_kΔt_k)^−D, so the backward kernel
        B(x_k | x_{k+1}) = F⁰(x_{k+1} | x_k)·(1 + ½β_kΔt_k)^D is normalised and
        E[exp(−R)] = Z exactly for any control and any grid. (The continuous-time integral
        ¼·D·(β_k + β_{k+1})·Δt_k is larger by D·c_N in total and biases log Z up by that much.)
        """
        grid = grid.double()
        beta = self.beta(grid[:-1])
        return dim * torch.log1p(0.5 * beta * (grid[1:] - grid[:-1]))


def uniform_grid(
    n_steps: int,
    T: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The grid 0 = t_0 < … < t_N = T with t_k = k·T/N, as a tensor of N + 1 times."""
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    return torch.linspace(0.0, T, n_steps + 1, dtype=torch.float64).to(device=device, dtype=dtype)


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, …"""
    return n >= 1 and (n & (n - 1)) == 0


def sub_grid(grid: Tensor, n_steps: int) -> Tensor:
    """Every (N/K)-th point of an N-step grid: the K-step grid used by K-step samplers.

    Raises when K does not divide N (those budgets are out of distribution for SCDS,
    docs/methods.md §5).
    """
    n_fine = grid.numel() - 1
    if n_steps < 1 or n_fine % n_steps != 0:
        raise ValueError(
            f"n_steps={n_steps} must be a positive divisor of the grid's {n_fine} steps"
        )
    return grid[:: n_fine // n_steps].clone()


def power_of_two_budgets(n_steps: int) -> list[int]:
    """The budgets 1, 2, 4, …, N of an N-step grid, N a power of two."""
    if not is_power_of_two(n_steps):
        raise ValueError(f"n_steps must be a power of two, got {n_steps!r}")
    return [2**k for k in range(int(math.log2(n_steps)) + 1)]
