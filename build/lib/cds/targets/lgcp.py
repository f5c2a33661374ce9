"""`lgcp`: log-Gaussian Cox process on a 40×40 grid of the unit square (docs/methods.md §9).

The latent field f ∈ R^1600 (unwhitened) has a GP prior on integer cell coordinates b_i with
covariance K_ij = 1.91·exp(−‖b_i − b_j‖₂ / (40/33)) and constant mean μ₀ = log(#points) − 1.91/2.
With cell counts n_i of the point pattern,

    log ρ(f) = log N(f; μ₀·1, K) + Σ_i [n_i·f_i − e^{f_i}/1600],

prior normalizer included, so Z is the marginal likelihood.

The paper used the Finnish pines pattern, which cannot be downloaded here. The default data set is
therefore simulated from this very model with a fixed seed; users pass their own CSV of points.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cds.extras import require
from cds.targets.base import Target

GRID_SIZE = 40
KERNEL_VARIANCE = 1.91
KERNEL_LENGTH_CELLS = GRID_SIZE / 33.0
#: Number of points whose log sets the prior mean when the pattern is simulated (as the pines).
SIMULATION_NOMINAL_POINTS = 126
SIMULATION_SEED = 20250211


def cell_coordinates(grid_size: int = GRID_SIZE) -> np.ndarray:
    """Integer (row, col) cell coordinates of the grid, flattened row-major: shape (G², 2)."""
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)


def prior_covariance(grid_size: int = GRID_SIZE) -> np.ndarray:
    """K_ij = 1.91·exp(−‖b_i − b_j‖₂ / (G/33)) in float64."""
    b = cell_coordinates(grid_size)
    dist = np.sqrt(((b[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return KERNEL_VARIANCE * np.exp(-dist / KERNEL_LENGTH_CELLS)


def bin_points(points: np.ndarray, grid_size: int = GRID_SIZE) -> np.ndarray:
    """Counts per cell (⌊G·x⌋, ⌊G·y⌋), clamped to G − 1, flattened row-major: shape (G²,)."""
    idx = np.clip(np.floor(points * grid_size).astype(np.int64), 0, grid_size - 1)
    counts = np.zeros((grid_size, grid_size), dtype=np.float64)
    np.add.at(counts, (idx[:, 0], idx[:, 1]), 1.0)
    return counts.ravel()


def read_point_pattern(path: str | Path) -> np.ndarray:
    """Read a CSV of points in the unit square: columns `x`, `y` (or `data_x`, `data_y`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lgcp data file {str(path)!r} does not exist")
    frame = require("pandas", "the lgcp target's CSV reader").read_csv(path)
    for xs, ys in (("x", "y"), ("data_x", "data_y")):
        if xs in frame.columns and ys in frame.columns:
            points = frame[[xs, ys]].to_numpy(dtype=np.float64)
            break
    else:
        raise ValueError(
            f"lgcp data file {str(path)!r} needs columns 'x','y' (or 'data_x','data_y'); "
            f"found {list(frame.columns)}"
        )
    if len(points) == 0 or not np.isfinite(points).all():
        raise ValueError(f"lgcp data file {str(path)!r} has no points or non-finite values")
    if points.min() < 0 or points.max() > 1:
        raise ValueError(
            f"lgcp data file {str(path)!r}: points must lie in the unit square, "
            f"got range [{points.min():.4g}, {points.max():.4g}]"
        )
    return points


def simulate_point_pattern(seed: int = SIMULATION_SEED, grid_size: int = GRID_SIZE) -> np.ndarray:
    """A point pattern drawn from the model: f ~ GP prior, counts ~ Poisson(e^f/G²), uniform
    positions inside each cell."""
    rng = np.random.default_rng(seed)
    cov = prior_covariance(grid_size)
    mean = math.log(SIMULATION_NOMINAL_POINTS) - KERNEL_VARIANCE / 2
    chol = np.linalg.cholesky(cov)
    f = mean + chol @ rng.standard_normal(grid_size**2)
    counts = rng.poisson(np.exp(f) / grid_size**2)
    cells = cell_coordinates(grid_size)
    starts = np.repeat(cells, counts, axis=0)
    return (starts + rng.random(starts.shape)) / grid_size


class LogGaussianCoxProcess(Target):
    """LGCP posterior over the unwhitened latent field (docs/methods.md §9). log Z unknown for
    general data."""

    name = "lgcp"
    box = (-2.0, 8.0)

    def __init__(self, data: str | Path | None = None, grid_size: int = GRID_SIZE):
        points = (
            simulate_point_pattern(grid_size=grid_size)
            if data is None
            else (read_point_pattern(data))
        )
        self.data_source = "simulated" if data is None else str(data)
        self.n_points = len(points)
        self.dim = grid_size**2
        self.cell_area = 1.0 / grid_size**2
        self.prior_mean = math.log(self.n_points) - KERNEL_VARIANCE / 2
        cov = prior_covariance(grid_size)
        chol = np.linalg.cholesky(cov)
        self.chol = torch.from_numpy(chol).to(torch.float32)
        self.precision = torch.from_numpy(
            np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(self.dim)))
        ).to(torch.float32)
        self.log_det_cov = float(2.0 * np.log(np.diag(chol)).sum())
        self.counts = torch.from_numpy(bin_points(points, grid_size)).to(torch.float32)

    def _log_prob(self, x: Tensor) -> Tensor:
        centred = (x - self.prior_mean).T  # (D, B)
        white = torch.linalg.solve_triangular(self.chol.to(x), centred, upper=False)
        log_prior = -0.5 * white.square().sum(dim=0) - 0.5 * (
            self.log_det_cov + self.dim * math.log(2 * math.pi)
        )
        counts = self.counts.to(x)
        log_lik = (counts * x - torch.exp(x) * self.cell_area).sum(dim=1)
        return log_prior + log_lik

    def _score(self, x: Tensor) -> Tensor:
        prior = -(x - self.prior_mean) @ self.precision.to(x)
        return prior + self.counts.to(x) - torch.exp(x) * self.cell_area
