"""The evaluation stage: score the student and the teacher against the target stage's exact
reference samples beside the noise floor, trace the student's quality-vs-NFE budget curve, and
write data/eval/metrics.json (headline numbers, what `dvc metrics` shows and the gate reads),
report.json (every metric of student, teacher and floor), budget_curve.json and PNG plots."""

from __future__ import annotations

import math
import shutil
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cds.config import Params
from cds.evaluation import score_sampler, timed_samples
from cds.metrics import noise_floor, paper_sinkhorn
from cds.serving import sampler_from_checkpoint
from cds.targets import Target
from pipelines.io import write_json_atomic
from pipelines.layout import Layout
from pipelines.plots import plot_budget_curve, plot_samples
from pipelines.stages import checked_target, load_reference, require

#: Student metrics copied to the top level of metrics.json (what the gate and dashboards read).
HEADLINE = (
    "nfe",
    "sinkhorn",
    "sinkhorn_floor",
    "sinkhorn_ratio",
    "abs_dlogZ_is",
    "abs_dlogZ_elbo",
    "log_Z_is",
    "elbo",
    "ess",
    "sample_seconds",
)


def budgets(params: Params) -> list[int]:
    """Step counts of the budget curve: powers of two up to SCDS's N, or CDDS's K ≤ 8 that the
    coarse grid allows."""
    top = params.scds.n_steps if params.method == "scds" else min(8, params.cdds.n_coarse - 1)
    return [2**i for i in range(int(math.log2(top)) + 1)]


def run_evaluate(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    target = checked_target(params, layout)
    reference = load_reference(layout)
    student_path = require(layout.student, "student")
    teacher_path = require(layout.teacher, "teacher")
    shutil.rmtree(layout.eval_dir, ignore_errors=True)
    cfg = params.evaluation
    floor = None
    if reference is not None:
        floor = noise_floor(
            target, len(reference), torch.Generator().manual_seed(cfg.seed + 2), cfg.floor_repeats
        )
    steps = budgets(params)
    bar = tqdm(total=len(steps) + 1, desc="evaluate", disable=not progress, dynamic_ncols=True)
    teacher = sampler_from_checkpoint(teacher_path)
    teacher_metrics, teacher_samples = score_sampler(
        teacher, target, reference, floor, cfg.seed + 10, cfg.n_samples
    )
    bar.update(1)
    student = sampler_from_checkpoint(student_path)
    student_metrics, student_samples = score_sampler(
        student, target, reference, floor, cfg.seed + 20, cfg.n_samples
    )
    bar.update(1)
    curve = [{"nfe": 1, **_curve_point(student_metrics)}]
    for k in steps[1:]:
        samples, seconds = timed_samples(
            sampler_from_checkpoint(student_path, k), cfg.n_samples, cfg.seed + 20 + k
        )
        point: dict[str, Any] = {"nfe": k, "sample_seconds": seconds}
        if reference is not None:
            point["sinkhorn"] = paper_sinkhorn(samples, reference).value
        curve.append(point)
        bar.update(1)
    bar.close()
    report: dict[str, Any] = {
        "target": target.name,
        "dim": target.dim,
        "method": params.method,
        "student": student_metrics,
        "teacher": teacher_metrics,
        "floor": floor,
    }
    metrics: dict[str, Any] = {
        "target": target.name,
        "dim": target.dim,
        "method": params.method,
        **{key: student_metrics[key] for key in HEADLINE if key in student_metrics},
        "teacher_nfe": teacher_metrics["nfe"],
        "teacher_abs_dlogZ_is": teacher_metrics.get("abs_dlogZ_is"),
        "teacher_ess": teacher_metrics.get("ess"),
    }
    if reference is not None:
        metrics["sinkhorn_floor_std"] = floor["sinkhorn_std"]  # type: ignore[index]
        metrics["teacher_sinkhorn"] = teacher_metrics["sinkhorn"]
        metrics["sinkhorn_vs_teacher"] = student_metrics["sinkhorn"] / teacher_metrics["sinkhorn"]
    _plots(params, layout, target, reference, student_samples, teacher_samples, curve, metrics)
    write_json_atomic(layout.budget_curve, {"budget_curve": curve})
    write_json_atomic(layout.report, report)
    write_json_atomic(layout.metrics, metrics)
    return metrics


def _curve_point(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("sinkhorn", "sample_seconds")
    return {key: metrics[key] for key in keys if key in metrics}


def _plots(
    params: Params,
    layout: Layout,
    target: Target,
    reference: Tensor | None,
    student_samples: Tensor,
    teacher_samples: Tensor,
    curve: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> None:
    name = f"{target.name}: {params.method.upper()}"
    plot_samples(
        layout.plots_dir / "student_samples.png",
        student_samples,
        reference,
        target.box,
        f"{name}, 1 step (n={len(student_samples)})",
    )
    plot_samples(
        layout.plots_dir / "teacher_samples.png",
        teacher_samples,
        reference,
        target.box,
        f"{target.name}: DIS teacher, {metrics['teacher_nfe']} SDE steps",
    )
    if reference is not None:
        plot_budget_curve(
            layout.plots_dir / "budget_curve.png",
            curve,
            metrics["sinkhorn_floor"],
            metrics["teacher_sinkhorn"],
            f"{name}: quality against steps",
        )
