"""LGCP (1600-D) end to end through the pipeline at a reduced budget: ELBO and IS log Z from
valid weights.

One sweep cell (the full pipeline: target, teacher, fragments, CDDS, evaluation, MLflow run) on
`lgcp` with the budget in BUDGET, in the project's DVC cache and MLflow store
(`runs/sweeps/lgcp-end-to-end/`). LGCP has no exact samples and no known log Z, so the report
gives the estimates themselves: for the DIS teacher, its SDE-path weights (docs/methods.md §3); for
the one-step CDDS sampler, the deterministic-flow weights with the exact log-det (a 64 × 64
determinant per sample through Sylvester's identity, docs/methods.md §6). The ELBO is a lower bound
on log Z for either; IS log Z converges to it from below as n grows, so the larger value of the
two samplers' IS estimates is the better one, and ESS says how far each is to be trusted.

Run:  .venv/bin/python benchmarks/lgcp_end_to_end.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import print_table, write_results

from cds.pipeline.layout import Layout
from cds.pipeline.sweep import SweepGrid, cells, run_sweep

ROOT = Path(__file__).resolve().parents[1]
#: Reduced budget: 32 SDE steps and batch 64 for the teacher (a default-size teacher step takes
#: ~15 s at D = 1600, see scale.py), a 5-point grid on those 32 steps for CDDS.
BUDGET = {
    "teacher.n_steps": 32,
    "teacher.optim.batch_size": 64,
    "teacher.optim.iterations": 300,
    "teacher.optim.ema_window": 100,
    "teacher.eval_every": 100,
    "teacher.eval_samples": 256,
    "cdds.n_fine": 32,
    "cdds.bank_size": 16384,
    "cdds.optim.batch_size": 64,
    "cdds.optim.iterations": 3000,
    "cdds.eval_every": 1000,
    "cdds.eval_samples": 256,
    "evaluation.n_samples": 2000,
}
KEYS = ("nfe", "elbo", "log_Z_is", "ess", "n_weights", "weights", "sample_seconds")


def main() -> None:
    grid = SweepGrid(
        name="lgcp-end-to-end", targets=["lgcp"], overrides=[BUDGET], preset="none"
    )  # the fixed budgets of params.yaml, as the recorded rows ran
    directory = ROOT / "runs" / "sweeps" / grid.name
    start = time.perf_counter()
    sweep_id, results = run_sweep(grid, ROOT, directory, "local")
    wall = time.perf_counter() - start
    (cell,) = cells(grid)
    if results[0]["status"] != "ok":
        raise SystemExit(f"cell {cell.id} failed: {results[0]['error']}")
    report = json.loads(Layout(directory / "cells" / cell.id).report.read_text())
    rows = []
    for sampler, metrics in (
        ("DIS teacher, 32 SDE steps", report["teacher"]),
        ("DIS teacher, 1 step", report["teacher_one_step"]),
        ("CDDS, 1 step", report["student"]),
    ):
        rows.append({"sampler": sampler, **{k: metrics.get(k) for k in KEYS}})
    write_results(
        __file__,
        {
            "budget": BUDGET,
            "sweep": sweep_id,
            "mlflow_run": results[0]["run_id"],
            "trained": results[0]["trained"],
            "wall_s": wall,
            "training": report["training"],
            "rows": rows,
        },
    )
    print_table(rows, ["sampler", *KEYS])
    print(f"training: {report['training']}; sweep wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
