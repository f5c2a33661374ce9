"""Atomic writers for stage outputs (JSON, NumPy arrays, matplotlib figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cds.checkpoints import atomic_write


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Pretty JSON with sorted keys, written atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """A .npy file, written atomically."""
    return atomic_write(path, lambda fh: np.save(fh, array))


def save_png_atomic(path: str | Path, figure: Figure, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG, written atomically."""
    return atomic_write(path, lambda fh: figure.savefig(fh, format="png", dpi=dpi))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """A text file, written atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))
