"""Atomic writers for stage outputs (text, JSON, NumPy arrays, matplotlib figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cds.checkpoints import atomic_write, write_text_atomic

if TYPE_CHECKING:  # matplotlib is imported by the stages that plot, not by every stage
    from matplotlib.figure import Figure

__all__ = ["save_npy_atomic", "save_png_atomic", "write_json_atomic", "write_text_atomic"]


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Pretty JSON with sorted keys, written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """A .npy file, written atomically."""
    return atomic_write(path, lambda fh: np.save(fh, array))


def save_png_atomic(path: str | Path, figure: Figure, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG, written atomically."""
    return atomic_write(path, lambda fh: figure.savefig(fh, format="png", dpi=dpi))
