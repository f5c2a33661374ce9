"""The evaluation stage: score the student and the teacher (at its N steps and at one step, the
paper's "DIS-1") against the target stage's exact reference samples beside the noise floor,
trace the student's quality-vs-NFE budget curve (Sinkhorn, |Δlog Z| and ESS per K), and
write data/eval/metrics.json (headline numbers, what `dvc metrics` shows and the gate reads),
report.json (every metric of student, teacher and floor), budget_curve.json and PNG plots."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.evaluation import score_sampler
from cds.metrics import noise_floor
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


#: Backward passes per sample allowed for a budget-curve point's exact flow log-dets (D per
#: step); beyond it the point gets the Hutchinson estimate. gmm9 gets exact weights at every
#: K ≤ 128, mw54 up to K = 32, mw52 up to K = 4; the K = 128 point on gmm9 takes about 30 s at
#: n = 6000 on 2 cores.
CURVE_JACOBIAN_PASSES = 256


def budgets(params: Params) -> list[int]:
    """Step counts of the budget curve: powers of two up to SCDS's N, or CDDS's K ≤ 8 that the
    coarse grid allows. SCDS is also scored as its N-step SDE sampler, whose weights are the
    valid ones at K = N (spec §5): report.json["student_sde"], and a separate marker in the
    plot."""
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
    extra = 3 if params.method == "scds" else 2
    bar = tqdm(total=len(steps) + extra, desc="evaluate", disable=not progress, dynamic_ncols=True)

    def score(checkpoint: Path, seed: int, **how: Any) -> tuple[dict[str, Any], Tensor]:
        result = score_sampler(
            sampler_from_checkpoint(checkpoint, **how),
            target,
            reference,
            floor,
            seed,
            cfg.n_samples,
        )
        bar.update(1)
        return result

    teacher_metrics, teacher_samples = score(teacher_path, cfg.seed + 10)
    teacher_one_step, _ = score(teacher_path, cfg.seed + 11, n_steps=1)
    student_metrics, student_samples = score(student_path, cfg.seed + 20)
    curve = [_curve_point(student_metrics)]
    for k in steps[1:]:
        curve.append(_curve_point(score(student_path, cfg.seed + 20 + k, n_steps=k)[0]))
    student_sde = None
    if params.method == "scds":
        student_sde = score(student_path, cfg.seed + 30, sde=True)[0]
    bar.close()
    report: dict[str, Any] = {
        "target": target.name,
        "dim": target.dim,
        "method": params.method,
        "student": student_metrics,
        "teacher": teacher_metrics,
        "teacher_one_step": teacher_one_step,
        "floor": floor,
        "training": {"teacher": _training(teacher_path), "student": _training(student_path)},
        **({"student_sde": student_sde} if student_sde is not None else {}),
    }
    metrics: dict[str, Any] = {
        "target": target.name,
        "dim": target.dim,
        "method": params.method,
        **{key: student_metrics[key] for key in HEADLINE if key in student_metrics},
        "teacher_nfe": teacher_metrics["nfe"],
        "teacher_abs_dlogZ_is": teacher_metrics.get("abs_dlogZ_is"),
        "teacher_ess": teacher_metrics.get("ess"),
        "train_seconds": report["training"]["student"]["seconds"],
        "teacher_train_seconds": report["training"]["teacher"]["seconds"],
    }
    if reference is not None:
        metrics["sinkhorn_floor_std"] = floor["sinkhorn_std"]  # type: ignore[index]
        metrics["teacher_sinkhorn"] = teacher_metrics["sinkhorn"]
        metrics["sinkhorn_vs_teacher"] = student_metrics["sinkhorn"] / teacher_metrics["sinkhorn"]
    plotted = curve if student_sde is None else [*curve, _curve_point(student_sde)]
    _plots(params, layout, target, reference, student_samples, teacher_samples, plotted, metrics)
    write_json_atomic(layout.budget_curve, {"budget_curve": curve})
    write_json_atomic(layout.report, report)
    write_json_atomic(layout.metrics, metrics)
    return metrics


#: What each budget-curve point keeps of a sampler's metrics.
CURVE_KEYS = (
    "method",
    "nfe",
    "weights",
    "sinkhorn",
    "sinkhorn_ratio",
    "abs_dlogZ_is",
    "abs_dlogZ_elbo",
    "ess",
    "sample_seconds",
)


def _training(checkpoint: Path) -> dict[str, float]:
    """Iterations and wall time (training iterations only, summed over resumes) of a run."""
    payload = load_checkpoint(checkpoint)
    return {"iterations": int(payload["step"]), "seconds": float(payload["train_seconds"])}


def _curve_point(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in CURVE_KEYS if key in metrics}


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
