"""Deterministic-flow (DF) importance weights by change of variables (docs/methods.md §6).

For a deterministic, invertible sampler x_K = Φ(x_0):
    log w = log ρ(x_K) − log p_prior(x_0) + log|det ∂Φ/∂x_0|,
so that exp(log w) has expectation Z under x_0 ~ p_prior. Without the Jacobian term the
"boundary likelihood" is not an ELBO and can exceed log Z (docs/methods.md §12, pitfall 7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def batch_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Per-sample Jacobians (B, D, D) of a sample-wise map, with D vector–Jacobian products.

    Row i is ∂fn_i/∂x; samples are independent, so one backward pass of Σ_b fn(x)_{b,i} gives
    row i for the whole batch. Target scores inside `fn` keep their graph (create_graph), so a
    map through ∇log ρ differentiates through the Hessian of log ρ (docs/methods.md §6; §12,
    pitfall 15).
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = fn(xg)
        rows = [
            torch.autograd.grad(out[:, i].sum(), xg, retain_graph=i < x.shape[1] - 1)[0]
            for i in range(x.shape[1])
        ]
    return torch.stack(rows, dim=1)


def log_abs_det_jacobian(
    fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Exact log|det ∂fn/∂x| per sample from the full Jacobian, and the sign of the determinant.

    `fn` maps a batch (B, D) to (B, D) sample-wise. A determinant sign that changes across
    samples, or |det| ≈ 0, means the map is not invertible there and the weights are invalid.
    """
    signs, logdets = [], []
    for start in range(0, len(x), chunk):
        jac = batch_jacobian(fn, x[start : start + chunk])
        sign, logdet = torch.linalg.slogdet(jac.detach().double())
        signs.append(sign)
        logdets.append(logdet)
    return torch.cat(logdets), torch.cat(signs)


def hutchinson_divergence(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    n_probes: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased estimate of tr(∂fn/∂x) per sample: (1/P)·Σ_p ε_pᵀ J ε_p with Rademacher ε_p,
    one vector–Jacobian product per probe."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = fn(xg)
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for p in range(n_probes):
            draw = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
            eps = draw.to(x.dtype) * 2 - 1
            (vjp,) = torch.autograd.grad(out, xg, eps, retain_graph=p < n_probes - 1)
            total = total + (vjp * eps).sum(1)
    return total / n_probes


def exact_divergence(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """tr(∂fn/∂x) per sample with D vector–Jacobian products (for D up to ~100)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = fn(xg)
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for i in range(x.shape[1]):
            (row,) = torch.autograd.grad(out[:, i].sum(), xg, retain_graph=i < x.shape[1] - 1)
            total = total + row[:, i]
    return total
