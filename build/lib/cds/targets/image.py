"""`image`: a 2-D density made from a grayscale photograph (docs/methods.md §9; §12, pitfall 12).

The paper used a photo of a dog that cannot be downloaded here; cds uses the Grace Hopper portrait
that ships inside matplotlib (`mpl-data/sample_data/grace_hopper.jpg`), centre-cropped to a square
and resized to 700×700 pixels, so absolute metric values are image-specific.

Preprocessing: grayscale I ∈ [0, 1] (white = 1, values above 225/255 set to white);
density = (1 − G₃(I)) + 0.01·(G₁₀(I) + G₂₀(I) + G₅₀(I)) with G_s a Gaussian blur of σ = s pixels;
flipped so that the row index increases with y; energy E = −log density − min(−log density).

Coordinates: pixel coordinate P = 100·x + 350 per axis; pixel (i, j) covers [i, i + 1) × [j, j + 1)
in P and has its centre at P = i + ½, so x ∈ [−3.5, 3.5]² covers the image.
log ρ(x) = −E_interp(P) − 1.0·dist(P, image box)², with E_interp bilinear between pixel centres
(constant beyond the outermost centres) and dist measured in pixels from the continuous
coordinates, so the outside penalty has a restoring gradient. Exact samples: draw a pixel with
probability ∝ exp(−E), add U(−½, ½)² jitter around its centre. log Z ≈ log Σ_pixels exp(−E)·10⁻⁴.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from cds.extras import require
from cds.targets.base import Target

IMAGE_PIXELS = 700
PIXELS_PER_UNIT = 100.0
WHITE_THRESHOLD = 225.0 / 255.0
OUTSIDE_PENALTY = 1.0


def load_grayscale_photo(size: int = IMAGE_PIXELS) -> np.ndarray:
    """The bundled photo as a (size, size) float64 array in [0, 1], white = 1."""
    cbook = require("matplotlib.cbook", "the image target (its photo ships with matplotlib)")
    image = require("PIL.Image", "the image target")
    with image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        gray = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    rows, cols = gray.shape
    side = min(rows, cols)
    top, left = (rows - side) // 2, (cols - side) // 2
    square = gray[top : top + side, left : left + side]
    resized = ndimage.zoom(square, size / side, order=1)
    return np.clip(resized, 0.0, 1.0)


def image_energy(gray: np.ndarray) -> np.ndarray:
    """Energy E ≥ 0 (min 0) of the preprocessed image, flipped so that rows increase with y."""
    img = np.where(gray > WHITE_THRESHOLD, 1.0, gray)
    density = (1.0 - ndimage.gaussian_filter(img, 3)) + 0.01 * sum(
        ndimage.gaussian_filter(img, s) for s in (10, 20, 50)
    )
    neg_log = -np.log(density[::-1].copy())
    return neg_log - neg_log.min()


class ImageDensity(Target):
    """Density from a photograph, in x ∈ [−3.5, 3.5]²; coordinate 0 is horizontal, 1 vertical."""

    name = "image"
    dim = 2
    box = (-3.5, 3.5)

    def __init__(self) -> None:
        energy = image_energy(load_grayscale_photo())
        self.size = energy.shape[0]
        self.energy = torch.from_numpy(energy).to(torch.float32)  # [row = y, col = x]
        self.pixel_weights = torch.from_numpy(np.exp(-energy).ravel())
        self.log_Z = float(np.log(np.exp(-energy).sum()) + 2 * math.log(1.0 / PIXELS_PER_UNIT))

    def to_pixels(self, x: Tensor) -> Tensor:
        """P = 100·x + 350 (continuous pixel coordinates)."""
        return PIXELS_PER_UNIT * x + self.size / 2

    def _interpolated_energy(self, p: Tensor) -> Tensor:
        # Pixel centres sit at index + ½; clamp to the outermost centres (flat beyond them).
        q = (p - 0.5).clamp(0.0, self.size - 1.0)
        base = q.detach().floor().clamp(max=self.size - 2).to(torch.int64)
        frac = q - base
        col, row = base[:, 0], base[:, 1]
        fx, fy = frac[:, 0], frac[:, 1]
        e = self.energy.to(p)
        e00, e01 = e[row, col], e[row, col + 1]
        e10, e11 = e[row + 1, col], e[row + 1, col + 1]
        return (1 - fy) * ((1 - fx) * e00 + fx * e01) + fy * ((1 - fx) * e10 + fx * e11)

    def _log_prob(self, x: Tensor) -> Tensor:
        p = self.to_pixels(x)
        outside = torch.relu(-p) + torch.relu(p - self.size)  # per-axis distance to the box
        return -self._interpolated_energy(p) - OUTSIDE_PENALTY * outside.square().sum(dim=1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = self.draw_device(generator)
        weights = self.pixel_weights.to(device)
        flat = torch.multinomial(weights, n, replacement=True, generator=generator)
        row, col = flat // self.size, flat % self.size
        jitter = torch.rand(n, 2, generator=generator, dtype=torch.float64, device=device) - 0.5
        p = torch.stack([col, row], dim=1).to(torch.float64) + 0.5 + jitter
        return ((p - self.size / 2) / PIXELS_PER_UNIT).to(torch.float32)
