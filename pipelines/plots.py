"""PNG plots: model samples against exact reference samples, and the quality-vs-NFE curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from pipelines.io import save_png_atomic


def plot_samples(
    path: str | Path,
    samples: Tensor,
    reference: Tensor | None,
    box: tuple[float, float],
    title: str,
    max_points: int = 6000,
) -> Path:
    """Scatter of the first two coordinates, model beside reference; written atomically."""
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
    try:
        return save_png_atomic(path, fig)
    finally:
        plt.close(fig)


def plot_budget_curve(
    path: str | Path,
    rows: list[dict[str, float]],
    floor: float,
    teacher: float | None,
    title: str,
) -> Path:
    """Paper Sinkhorn against NFE (log2 axis), with the noise floor and the teacher's value."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["nfe"] for r in rows], [r["sinkhorn"] for r in rows], "o-", label="student")
    ax.axhline(floor, color="grey", ls="--", label="noise floor")
    if teacher is not None:
        ax.axhline(teacher, color="tab:green", ls=":", label="teacher (128 SDE steps)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel("paper Sinkhorn")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    try:
        return save_png_atomic(path, fig)
    finally:
        plt.close(fig)
