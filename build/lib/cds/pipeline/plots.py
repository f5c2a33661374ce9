"""PNG plots: model samples against exact reference samples, and the quality-vs-NFE curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from cds.pipeline.io import save_png_atomic


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
        pts = pts[:max_points, :2].detach().cpu().numpy()
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
    rows: list[dict[str, Any]],
    floor: float,
    teacher: float | None,
    title: str,
) -> Path:
    """Left: paper Sinkhorn against NFE (log2 axis) with the noise floor and the teacher's value.
    Right, where the points have valid weights: IS |Δlog Z| and ESS against NFE. Points of an
    SDE sampler (SCDS at K = N) are drawn as separate markers."""
    flows = [r for r in rows if not str(r.get("method", "")).endswith("-sde")]
    sdes = [r for r in rows if str(r.get("method", "")).endswith("-sde")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["nfe"] for r in flows], [r["sinkhorn"] for r in flows], "o-", label="student")
    for r in sdes:
        left.plot(r["nfe"], r["sinkhorn"], "s", color="tab:red", label="student, SDE")
    left.axhline(floor, color="grey", ls="--", label="noise floor")
    if teacher is not None:
        left.axhline(teacher, color="tab:green", ls=":", label="teacher (N SDE steps)")
    left.set_ylabel("paper Sinkhorn")
    left.legend()
    for key, style, label in (("abs_dlogZ_is", "o-", "|Δlog Z| (IS)"), ("ess", "^--", "ESS")):
        pts = [r for r in flows if r.get(key) is not None]
        if pts:
            right.plot([r["nfe"] for r in pts], [r[key] for r in pts], style, label=label)
        for r in sdes:
            if r.get(key) is not None:
                right.plot(r["nfe"], r[key], style[0], color="tab:red", label=f"{label}, SDE")
    right.set_yscale("log")
    right.set_ylabel("|Δlog Z| and normalized ESS")
    if right.lines:
        right.legend()
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network evaluations per sample (NFE)")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        return save_png_atomic(path, fig)
    finally:
        plt.close(fig)
