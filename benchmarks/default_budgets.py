"""One-step quality with the defaults alone: `cds run --set target.name=NAME` and nothing more.

For each target the pipeline's own stages run in a project under --workdir (default
runs/benchmarks/default_budgets; an interrupted run of the same code resumes from its
checkpoints), with the params `cds run --set target.name=NAME` uses: the embedded defaults
with the target's own preset, if it has one (gmm9, mw54, funnel, mw52, logreg_cancer keep their
measured fixed budgets), else the plateau rule's budgets (docs/methods.md §10, "Budgets"). CDDS
and SCDS share one teacher (a sweep's teacher store). Each row reports, from the evaluation
stage's metrics at `evaluation.n_samples` (6000) on the test reference: teacher / floor and
student / teacher (paper Sinkhorn), the largest mode-mass error and relative marginal-std error
of student and teacher beside the same figures between two exact sets (their noise), |Δlog Z|
with its standard error, the budget each training chose and why, and the wall times. The bars
a row meets (`meets_bars`): teacher / floor ≤ 1.10; CDDS-1 / teacher ≤ 1.25; SCDS-1 / teacher
≤ 1.4; mode masses within ±0.03; marginal stds within 5 %.

Run:  .venv/bin/python benchmarks/default_budgets.py [target ...] [--methods cdds scds]
(naming targets reruns only those and keeps the other rows of the results file;
--rows-only rebuilds the rows from the finished projects without training).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from _common import previous_rows, print_table, run_stage, write_results

from cds.config import load_params
from cds.pipeline.layout import Layout
from cds.pipeline.stages.teacher import SHARED_TEACHERS_ENV
from cds.pipeline.timings import read_timings
from cds.presets import target_preset

TARGETS = ["banana", "rotmix4", "student5", "gmm9", "mw54"]
BARS = {"teacher_over_floor": 1.10, "cdds_over_teacher": 1.25, "scds_over_teacher": 1.4}
MODE_MASS_BAR = 0.03
STD_BAR = 0.05
COLUMNS = [
    "target",
    "method",
    "preset",
    "teacher_over_floor",
    "student_over_teacher",
    "mode_mass_err",
    "teacher_mode_mass_err",
    "std_rel_err",
    "teacher_std_rel_err",
    "floor_std_rel_err",
    "abs_dlogZ",
    "log_Z_se",
    "teacher_budget",
    "student_budget",
    "teacher_s",
    "student_s",
    "meets_bars",
]


def _budget(training: dict[str, Any]) -> str:
    """The iterations a run took and, under the plateau rule, why its cool-down began."""
    budget = training.get("budget")
    if budget is None:
        return f"{training['iterations']} (fixed)"
    backoffs = budget.get("backoffs", 0)
    return (
        f"{training['iterations']} ({budget['reason'].split(':')[0]} at {budget['cooldown_from']}"
        f"{f', {backoffs} LR back-offs' if backoffs else ''})"
    )


def measure(name: str, method: str, workdir: Path) -> dict[str, Any]:
    """One target and method: the pipeline's stages, then the row from its evaluation."""
    preset = target_preset(name)
    params = load_params(None, [f"target.name={name}", f"method={method}"], preset)
    layout = Layout(workdir / name / method)
    layout.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = ["target", "teacher", *(["fragments"] if method == "cdds" else []), "student"]
    for stage in [*stages, "evaluate"]:
        run_stage(stage, params, layout, progress=True)
    return {**row(name, method, layout), "wall_s": time.perf_counter() - started}


def row(name: str, method: str, layout: Layout) -> dict[str, Any]:
    """The row of a finished project, from its evaluation's metrics and report."""
    preset = target_preset(name)
    metrics = json.loads(layout.metrics.read_text())
    report = json.loads(layout.report.read_text())
    teacher, student, floor = report["teacher"], report["student"], report["floor"] or {}
    teacher_seconds = read_timings(layout.root, "teacher")
    out: dict[str, Any] = {
        "target": name,
        "method": method,
        "preset": preset or "default",
        "student_over_teacher": metrics.get("sinkhorn_vs_teacher"),
        "teacher_over_floor": (
            teacher["sinkhorn"] / metrics["sinkhorn_floor"] if "sinkhorn" in teacher else None
        ),
        "mode_mass_err": student.get("mode_mass_err_max"),
        "teacher_mode_mass_err": teacher.get("mode_mass_err_max"),
        "std_rel_err": student.get("std_rel_err_max"),
        "teacher_std_rel_err": teacher.get("std_rel_err_max"),
        # the same figures between two exact sample sets: their noise at this n
        "floor_std_rel_err": floor.get("std_rel_err_max"),
        "floor_mode_mass_err": floor.get("mode_mass_err_max"),
        "abs_dlogZ": metrics.get("abs_dlogZ_is"),
        "log_Z_se": metrics.get("log_Z_is_se"),
        "teacher_abs_dlogZ": metrics.get("teacher_abs_dlogZ_is"),
        "teacher_log_Z_se": metrics.get("teacher_log_Z_is_se"),
        "weights_valid": metrics.get("weights_valid"),
        "teacher_budget": _budget(report["training"]["teacher"]),
        "student_budget": _budget(report["training"]["student"]),
        "teacher_s": teacher_seconds.get(
            "shared_train_seconds", teacher_seconds.get("train_seconds")
        ),
        "student_s": read_timings(layout.root, "student").get("train_seconds"),
    }
    out["meets_bars"] = meets_bars(out)
    return out


def meets_bars(result: dict[str, Any]) -> bool:
    """Whether a row meets every bar that applies to it."""
    ratio_bar = BARS["cdds_over_teacher" if result["method"] == "cdds" else "scds_over_teacher"]
    checks = [
        result["teacher_over_floor"] is not None
        and result["teacher_over_floor"] <= BARS["teacher_over_floor"],
        result["student_over_teacher"] is not None and result["student_over_teacher"] <= ratio_bar,
    ]
    for key, bar in (("mode_mass_err", MODE_MASS_BAR), ("std_rel_err", STD_BAR)):
        for prefix in ("", "teacher_"):
            if result.get(prefix + key) is not None:
                checks.append(result[prefix + key] <= bar)
    return all(checks)


def main(targets: list[str], methods: list[str], workdir: Path, rows_only: bool) -> None:
    workdir = workdir.resolve()  # the stages run inside each project directory
    os.environ.setdefault(SHARED_TEACHERS_ENV, str(workdir / "teachers"))
    measured = {(name, method) for name in targets for method in methods}
    previous = {(r["target"], r["method"]): r for r in previous_rows(__file__)}
    rows = [r for key, r in previous.items() if key not in measured]
    for method in methods:  # every CDDS row first: they share the teachers SCDS then reuses
        for name in targets:
            if rows_only:  # rebuilt from the finished project, keeping its measured wall time
                wall = previous.get((name, method), {}).get("wall_s")
                new = {**row(name, method, Layout(workdir / name / method)), "wall_s": wall}
            else:
                new = measure(name, method, workdir)
            rows.append(new)
            write_results(
                __file__,
                {"rows": rows, "bars": BARS, "mode_mass_bar": MODE_MASS_BAR, "std_bar": STD_BAR},
            )
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=TARGETS)
    parser.add_argument("--methods", nargs="+", default=["cdds", "scds"], choices=["cdds", "scds"])
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmarks/default_budgets"))
    parser.add_argument(
        "--rows-only",
        action="store_true",
        help="rebuild the rows from the finished projects under --workdir without training",
    )
    args = parser.parse_args()
    main(args.targets, args.methods, args.workdir, args.rows_only)
