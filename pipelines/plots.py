"""PNG plots of model samples against exact reference samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor


def plot_samples(
    path: str | Path,
    samples: Tensor,
    reference: Tensor | None,
    box: tuple[float, float],
    title: str,
    max_points: int = 6000,
) -> Path:
    """Scatter of the first two coordinates, model beside reference; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = [("model", samples)] + (
        [("exact reference", reference)] if reference is not None else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, pts) in zip(axes[0], panels, strict=True):
        pts = pts[:max_points, :2].detach().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_xlim(*box)
        ax.set_ylim(*box)
        ax.set_aspect("equal")
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
