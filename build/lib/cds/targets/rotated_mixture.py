"""`rotmix4`: three rotated, anisotropic Gaussians of unequal weight in 4-D (docs/methods.md §9).

log ρ(x) = log Σ_k w_k·N(x; m_k, Σ_k) with Σ_k = R_k·diag(s_k²)·R_kᵀ, R_k a fixed rotation; the
mixture is normalized (log Z = 0). A sample's mode is the component of highest responsibility
w_k·N(x; m_k, Σ_k); the marginal variances are Σ_k w_k·(Σ_k,dd + m_kd²) − (Σ_k w_k·m_kd)².
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cds.targets.base import Target

WEIGHTS = (0.5, 0.3, 0.2)
MEANS = ((-3.0, 0.0, 1.0, 0.0), (3.0, 2.0, -1.0, 0.0), (0.0, -4.0, 0.0, 2.0))
#: Per-component standard deviations along its rotated axes (a 4:1 anisotropy).
AXIS_STDS = ((1.2, 0.3, 0.6, 0.8), (0.4, 1.0, 0.8, 0.3), (0.9, 0.5, 0.3, 1.1))
#: Seed of the fixed rotations (QR of a Gaussian matrix drawn in float64 on the CPU).
ROTATION_SEED = 4


def rotations(k: int, dim: int, seed: int = ROTATION_SEED) -> Tensor:
    """k fixed rotation matrices (det +1), the same on every machine."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


class RotatedMixture(Target):
    """The unequal-weight mixture above, with exact sampling and mode assignment."""

    name = "rotmix4"
    box = (-7.0, 7.0)
    log_Z = 0.0

    def __init__(self) -> None:
        self.weights = torch.tensor(WEIGHTS, dtype=torch.float64)
        self.means = torch.tensor(MEANS, dtype=torch.float64)
        self.dim = int(self.means.shape[1])
        self.n_modes = len(WEIGHTS)
        stds = torch.tensor(AXIS_STDS, dtype=torch.float64)
        #: Σ_k^(1/2) = R_k·diag(s_k): x = m_k + Σ_k^(1/2)·z.
        self.roots = rotations(self.n_modes, self.dim) * stds.unsqueeze(1)
        #: Σ_k^(−1/2) = diag(1/s_k)·R_kᵀ, so that (x − m_k)ᵀΣ_k⁻¹(x − m_k) = |Σ_k^(−1/2)(x − m_k)|².
        self.whiteners = torch.linalg.inv(self.roots)
        self.log_norms = (
            self.weights.log() - stds.log().sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        )

    def _whitened(self, x: Tensor) -> Tensor:
        """Σ_k^(−1/2)(x − m_k) for every component: shape (B, K, D)."""
        diff = x.unsqueeze(1) - self.means.to(x)
        return torch.einsum("kij,bkj->bki", self.whiteners.to(x), diff)

    def _component_log_probs(self, x: Tensor) -> Tensor:
        return self.log_norms.to(x) - 0.5 * self._whitened(x).square().sum(dim=2)

    def _log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def _score(self, x: Tensor) -> Tensor:
        resp = torch.softmax(self._component_log_probs(x), dim=1)  # (B, K)
        # −Σ_k⁻¹(x − m_k) = −Σ_k^(−1/2)ᵀ·Σ_k^(−1/2)(x − m_k)
        grads = -torch.einsum("kji,bkj->bki", self.whiteners.to(x), self._whitened(x))
        return (resp.unsqueeze(2) * grads).sum(dim=1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = self.draw_device(generator)
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        x = self.means.to(device)[k] + torch.einsum("bij,bj->bi", self.roots.to(device)[k], z)
        return x.to(torch.float32)

    def mode_assignment(self, x: Tensor) -> Tensor:
        return self._component_log_probs(x.double()).argmax(dim=1)

    def mode_weights(self) -> Tensor:
        return self.weights.clone()

    def marginal_stds(self) -> Tensor:
        covs = self.roots @ self.roots.transpose(1, 2)
        second = (
            self.weights[:, None] * (torch.diagonal(covs, dim1=1, dim2=2) + self.means**2)
        ).sum(0)
        mean = (self.weights[:, None] * self.means).sum(0)
        return (second - mean**2).sqrt()
