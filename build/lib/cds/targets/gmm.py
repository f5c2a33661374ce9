"""`gmm9`: nine equal-weight Gaussians on the grid {−5, 0, 5}² (docs/methods.md §9)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from cds.targets.base import Target


class GaussianMixture(Target):
    """Equal-weight isotropic Gaussian mixture, normalized (log Z = 0).

    log ρ(x) = log[(1/K)·Σ_k N(x; m_k, s²·I)].
    """

    def __init__(self, means: Tensor, variance: float, name: str, box: tuple[float, float]):
        self.means = means.to(torch.float32)
        self.variance = float(variance)
        self.name = name
        self.dim = int(means.shape[1])
        self.n_modes = int(means.shape[0])
        self.log_Z = 0.0
        self.box = box

    def _component_log_probs(self, x: Tensor) -> Tensor:
        sq = torch.cdist(x, self.means.to(x)).square()  # (B, K)
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.variance)
        return log_norm - 0.5 * sq / self.variance - math.log(self.n_modes)

    def _log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def _score(self, x: Tensor) -> Tensor:
        resp = torch.softmax(self._component_log_probs(x), dim=1)  # (B, K)
        return (resp @ self.means.to(x) - x) / self.variance

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = self.draw_device(generator)
        k = torch.randint(self.n_modes, (n,), generator=generator, device=device)
        noise = torch.randn(n, self.dim, generator=generator, device=device)
        return self.means.to(device)[k] + math.sqrt(self.variance) * noise

    def mode_assignment(self, x: Tensor) -> Tensor:
        return torch.cdist(x.to(torch.float32), self.means.to(x.device)).argmin(dim=1)

    def mode_weights(self) -> Tensor:
        return torch.full(
            (self.n_modes,), 1.0 / self.n_modes, dtype=torch.float64, device=self.device
        )

    def marginal_stds(self) -> Tensor:
        """√(s² + Var_k(m_k)) per coordinate (equal weights)."""
        means = self.means.double()
        return (self.variance + means.var(dim=0, unbiased=False)).sqrt()


def gmm9() -> GaussianMixture:
    """The paper's 2-D grid mixture: means {−5, 0, 5}², variance 0.3 (std √0.3)."""
    means = torch.tensor(list(itertools.product([-5.0, 0.0, 5.0], repeat=2)))
    return GaussianMixture(means, variance=0.3, name="gmm9", box=(-7.74, 7.74))
