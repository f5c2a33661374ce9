"""Sweep wall time on 1 and 2 Dask workers (LocalCluster through prefect-dask), same grid.

The grid is 2 targets × 2 seeds at a small training budget, each cell a full pipeline run
(five `dvc repro` stages and MLflow logging) in its own working copy; both runs start from an
empty DVC cache, so every cell trains. Torch threads per cell: cores / workers, so neither run
oversubscribes the cores.

Run:  .venv/bin/python benchmarks/sweep_scaling.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import FIXED_BUDGETS, print_table, write_results

from cds.config import load_params
from cds.pipeline.sweep import SweepGrid, run_sweep
from cds.pipeline.workspace import create_workspace

ROOT = Path(__file__).resolve().parents[1]
BUDGET = [
    "teacher.optim.iterations=200",
    "teacher.optim.ema_window=50",
    "cdds.optim.iterations=1000",
    "cdds.bank_size=16384",
    "evaluation.n_samples=2000",
    "evaluation.floor_repeats=1",
]
GRID = SweepGrid(name="scaling", targets=["gmm9", "mw54"], seeds=[0, 1], preset="none")


def main() -> None:
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            project = create_workspace(
                ROOT, Path(tmp) / "project", load_params(None, BUDGET, preset=FIXED_BUDGETS)
            )
            start = time.perf_counter()
            _, cells = run_sweep(
                GRID,
                project,
                Path(tmp) / "sweep",
                "dask",
                workers=workers,
                tracking_uri=f"sqlite:///{tmp}/mlflow.db",
            )
            seconds = time.perf_counter() - start
        rows.append(
            {
                "workers": workers,
                "cells": len(cells),
                "ok": sum(c["status"] == "ok" for c in cells),
                "wall_s": seconds,
                "cell_s_mean": sum(c["seconds"] for c in cells) / len(cells),
            }
        )
    rows[1]["speedup_vs_1"] = rows[0]["wall_s"] / rows[1]["wall_s"]
    write_results(__file__, {"grid": GRID.model_dump(), "budget": BUDGET, "rows": rows})
    print_table(rows, ["workers", "cells", "ok", "wall_s", "cell_s_mean", "speedup_vs_1"])


if __name__ == "__main__":
    main()
