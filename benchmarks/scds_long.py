"""SCDS at the teacher's budget, through the pipeline: one sweep cell per target.

At the default budget (1500 iterations) the mw54 SCDS sampler itself is not trained (its K = 128
ODE is 2.3× the teacher, paper_table.json); the mw54 teacher needs 10,000 iterations. This runs
the SCDS cell of seed 0 with the teacher's iteration count and EMA window and the fine-ODE
self-consistency target with 32 extra shortcut steps (the configuration that meets the gmm9 bar
in scds_quality.py), and reports the one-step and K-step Sinkhorn against the cell's own 128-step
teacher and its noise floor, |Δlog Z| and ESS from valid weights, and the training time.

The sweep (`runs/sweeps/scds-long-<target>/`, its MLflow runs tagged with the sweep id) takes its
teacher from the paper table's sweep store when that holds the same fingerprint, so the
teacher is not trained again. A rerun resumes the cell from its last checkpoint or collects it.

Run:  .venv/bin/python benchmarks/scds_long.py [--targets mw54] [--set KEY=VALUE ...] [--label L]
(`--set` overrides the cell's params; a label gives the run its own row and sweep directory,
`runs/sweeps/scds-long-<target>-<label>/`; a rerun with the same label and settings collects.)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from _common import (
    parse_set_items,
    previous_rows,
    print_table,
    target_overrides,
    teacher_overrides,
    train_seconds,
    write_results,
)

from cds.pipeline.layout import Layout
from cds.pipeline.sweep import SweepGrid, cells, run_sweep
from cds.presets import preset_names
from cds.targets import target_names

ROOT = Path(__file__).resolve().parents[1]
#: The SCDS configuration that meets the gmm9 bar (scds_quality.py).
FINE_ODE_32 = {"scds.sc_target": "fine_ode", "scds.sc_extra_steps": 32, "scds.sc_extra_ramp": 0.0}


def _seed_teacher_store(name: str, store: Path) -> None:
    """Copy the paper table's finished teachers of `name` into this sweep's store (by
    fingerprint, so only an identical teacher is ever used)."""
    source = ROOT / "runs" / "sweeps" / f"paper-table-{name}" / "teachers"
    store.mkdir(parents=True, exist_ok=True)
    for checkpoint in source.glob("*.pt"):
        if not (store / checkpoint.name).exists():
            shutil.copy2(checkpoint, store / checkpoint.name)


#: The targets with a preset of their own (their teacher budget sets SCDS's here).
PRESET_TARGETS = [name for name in preset_names() if name in target_names()]


def run_target(name: str, label: str, extra: list[str], torch_threads: int) -> dict[str, Any]:
    teacher = teacher_overrides(name)
    iterations = teacher["teacher.optim.iterations"]
    overrides: dict[str, Any] = {
        **target_overrides(name, ("sde", "teacher", "cdds")),  # SCDS: set below, as recorded
        **FINE_ODE_32,
        "scds.optim.iterations": iterations,
        "scds.optim.ema_window": teacher["teacher.optim.ema_window"],
        **parse_set_items(extra),
    }
    grid = SweepGrid(
        name=f"scds-long-{name}" + (f"-{label}" if label else ""),
        targets=[name],
        methods=["scds"],
        seeds=[0],
        overrides=[overrides],
        preset="none",  # the settings above, as the recorded rows ran
    )
    directory = ROOT / "runs" / "sweeps" / grid.name
    _seed_teacher_store(name, directory / "teachers")
    sweep_id, results = run_sweep(grid, ROOT, directory, "local", torch_threads=torch_threads)
    (cell,) = cells(grid)
    (result,) = results
    if result["status"] != "ok":
        raise RuntimeError(f"cell {cell.id} failed: {result['error']}")
    layout = Layout(directory / "cells" / cell.id)
    report = json.loads(layout.report.read_text())
    curve = json.loads(layout.budget_curve.read_text())["budget_curve"]
    teacher = report["teacher"]["sinkhorn"]
    return {
        "target": name,
        "label": label,
        "cell": cell.id,
        "sweep": sweep_id,
        "mlflow_run": result["run_id"],
        "overrides": overrides,
        "teacher_sinkhorn": teacher,
        "floor": report["floor"]["sinkhorn"],
        "one_step": report["student"]["sinkhorn"],
        "one_step_ratio": report["student"]["sinkhorn"] / teacher,
        "one_step_abs_dlogZ": report["student"]["abs_dlogZ_is"],
        "one_step_ess": report["student"]["ess"],
        "one_step_modes_hit": report["student"].get("modes_hit"),
        "sde_ratio": report["student_sde"]["sinkhorn"] / teacher,
        "curve": [
            {"K": p["nfe"], "sinkhorn": p["sinkhorn"], "ratio": p["sinkhorn"] / teacher}
            for p in curve
        ],
        "train_s": train_seconds(layout.root, "student"),
        "s_per_it": train_seconds(layout.root, "student") / iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["mw54"], choices=PRESET_TARGETS)
    parser.add_argument("--set", dest="extra", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="", help="names the run's row and sweep directory")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    rows = {(r["target"], r.get("label", "")): r for r in previous_rows(__file__)}
    for name in args.targets:
        rows[name, args.label] = run_target(name, args.label, args.extra, args.torch_threads)
    table = list(rows.values())
    print_table(
        table,
        [
            "target",
            "label",
            "teacher_sinkhorn",
            "floor",
            "one_step",
            "one_step_ratio",
            "sde_ratio",
            "one_step_abs_dlogZ",
            "one_step_ess",
            "s_per_it",
        ],
    )
    print(f"wrote {write_results(__file__, {'rows': table})}")


if __name__ == "__main__":
    main()
