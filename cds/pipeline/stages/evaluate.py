"""The evaluate stage: score the student and the teacher (at its N steps and at one step, the
paper's "DIS-1") against the target stage's exact test reference beside the noise floor,
trace the student's quality-vs-NFE budget curve (Sinkhorn, |Δlog Z| and ESS per K; the best K
chosen on the validation reference, reported on the test reference), and write
data/eval/metrics.json (headline numbers, what `dvc metrics` shows and the gate reads),
report.json (every metric of student, teacher and floor), budget_curve.json and PNG plots.
Wall times (sampling, the Sinkhorn) go to `.cds/timings/evaluate.json` and MLflow, not to these
outputs, so that they are the same bytes on any machine that computes the same results."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cds import seeding
from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.metrics import noise_floor
from cds.pipeline.io import write_json_atomic
from cds.pipeline.layout import Layout
from cds.pipeline.metrics_schema import Role, keys
from cds.pipeline.plots import plot_budget_curve, plot_samples
from cds.pipeline.stages.common import checked_target, require
from cds.pipeline.timings import record_timings, split_timings
from cds.provenance import input_digests
from cds.run_config import run_device
from cds.samplers import sampler_from_checkpoint
from cds.scoring import METRIC_VERSION, References, score_sampler
from cds.targets import Target

#: Backward passes per sample allowed for a budget-curve point's exact flow log-dets (D per
#: step); beyond it the point gets the Hutchinson estimate. gmm9 gets exact weights at every
#: K ≤ 128, mw54 up to K = 32, mw52 up to K = 4; the K = 128 point on gmm9 takes about 30 s at
#: n = 6000 on 2 cores.
CURVE_JACOBIAN_PASSES = 256


def budgets(params: Params) -> list[int]:
    """Step counts of the budget curve: powers of two up to SCDS's N, or CDDS's K ≤ 8 that the
    coarse grid allows. SCDS is also scored as its N-step SDE sampler, whose weights are the
    valid ones at K = N (docs/methods.md §5): report.json["student_sde"], and a separate marker in
    the plot."""
    top = params.scds.n_steps if params.method == "scds" else min(8, params.cdds.n_coarse - 1)
    return [2**i for i in range(int(math.log2(top)) + 1)]


def load_references(layout: Layout, device: torch.device | str = "cpu") -> References | None:
    """The target stage's exact reference sets (validation, test) on `device`, or None for
    targets without exact samples."""
    manifest = json.loads(require(layout.manifest, "target").read_text())
    if manifest["reference"] is None:
        return None
    return References(
        torch.from_numpy(np.load(require(layout.reference_validation, "target"))).to(device),
        torch.from_numpy(np.load(require(layout.reference_test, "target"))).to(device),
    )


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Score student and teacher; write metrics, report, budget curve and plots."""
    device = run_device(params)
    target = checked_target(params, layout).to(device)
    references = load_references(layout, device)
    student_path = require(layout.student, "student")
    teacher_path = require(layout.teacher, "teacher")
    shutil.rmtree(layout.eval_dir, ignore_errors=True)
    cfg = params.evaluation
    floor = None
    if references is not None:
        floor = noise_floor(
            target,
            len(references.test),
            seeding.generator(cfg.seed, seeding.FLOOR),
            cfg.floor_repeats,
            device,
        )
    steps = budgets(params)
    extra = 3 if params.method == "scds" else 2
    timings: dict[str, float] = {}
    bar = tqdm(total=len(steps) + extra, desc="evaluate", disable=not progress, dynamic_ncols=True)

    def score(
        checkpoint: Path, label: str, validate: bool = False, curve: bool = False, **how: Any
    ) -> tuple[dict[str, Any], Tensor]:
        result = score_sampler(
            sampler_from_checkpoint(checkpoint, target=target, device=device, **how),
            target,
            references,
            floor,
            cfg.seed,
            label,
            cfg.n_samples,
            validate=validate,
            sinkhorn_only=curve,  # a point of the curve keeps only the `Role.CURVE` keys
        )
        bar.update(1)
        return split_timings(result[0], timings, f"{label}."), result[1]

    teacher_metrics, teacher_samples = score(teacher_path, "teacher")
    teacher_one_step, _ = score(teacher_path, "teacher_one_step", n_steps=1)
    student_metrics, student_samples = score(student_path, "student_K1", validate=True)
    curve = [_curve_point(student_metrics)]
    for k in steps[1:]:
        point, _ = score(student_path, f"student_K{k}", validate=True, curve=True, n_steps=k)
        curve.append(_curve_point(point))
    student_sde = None
    if params.method == "scds":
        student_sde = score(student_path, "student_sde", sde=True)[0]
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
        "protocol": evaluation_protocol(params, student_metrics["nfe"]),
        **({"student_sde": student_sde} if student_sde is not None else {}),
    }
    metrics: dict[str, Any] = {
        "target": target.name,
        "dim": target.dim,
        "method": params.method,
        **{key: student_metrics[key] for key in keys(Role.HEADLINE) if key in student_metrics},
        "teacher_nfe": teacher_metrics["nfe"],
        "teacher_abs_dlogZ_is": teacher_metrics.get("abs_dlogZ_is"),
        "teacher_log_Z_is": teacher_metrics.get("log_Z_is"),
        "teacher_log_Z_is_se": teacher_metrics.get("log_Z_is_se"),
        "teacher_elbo": teacher_metrics.get("elbo"),
        "teacher_elbo_se": teacher_metrics.get("elbo_se"),
        "teacher_ess": teacher_metrics.get("ess"),
        "nonfinite_weight_fraction": _nonfinite_fraction(student_metrics),
        "teacher_nonfinite_weight_fraction": _nonfinite_fraction(teacher_metrics),
        "dropped_path_fraction": report["training"]["student"]["dropped_path_fraction"],
        "teacher_dropped_path_fraction": report["training"]["teacher"]["dropped_path_fraction"],
    }
    if references is not None:
        metrics["sinkhorn_floor_std"] = floor["sinkhorn_std"]  # type: ignore[index]
        metrics["sinkhorn_ratio_se"] = floor["sinkhorn_std"] / floor["sinkhorn"]  # type: ignore[index]
        metrics["teacher_sinkhorn"] = teacher_metrics["sinkhorn"]
        for key in ("mode_mass_err_max", "std_rel_err_max"):
            if key in teacher_metrics:
                metrics[f"teacher_{key}"] = teacher_metrics[key]
        metrics["sinkhorn_vs_teacher"] = student_metrics["sinkhorn"] / teacher_metrics["sinkhorn"]
        best = best_budget(curve)
        metrics["best_nfe"] = best["nfe"]
        metrics["best_sinkhorn"] = best["sinkhorn"]
    plotted = curve if student_sde is None else [*curve, _curve_point(student_sde)]
    _plots(params, layout, target, references, student_samples, teacher_samples, plotted, metrics)
    write_json_atomic(layout.budget_curve, {"budget_curve": curve})
    write_json_atomic(layout.report, split_timings(report, timings))
    write_json_atomic(layout.metrics, metrics)
    record_timings(layout.root, "evaluate", timings)
    return metrics


def evaluation_protocol(params: Params, nfe: int) -> dict[str, Any]:
    """What a version's figures depend on besides the sampler: the metric version, the target
    with its options and the sha256 of its files (a user module, the data files its options
    name), the reference size and seed, the floor repeats, the method and its NFE. The registry
    gate compares only versions whose protocols are equal."""
    options = params.target.options
    cfg = params.evaluation
    return {
        "metric_version": METRIC_VERSION,
        "target": params.target.name,
        "target_options": options,
        "inputs_sha256": input_digests(params.target.name, options),
        "n": cfg.n_samples,
        "reference_seed": cfg.seed,
        "floor_repeats": cfg.floor_repeats,
        "method": params.method,
        "nfe": nfe,
    }


def best_budget(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The budget-curve point with the lowest Sinkhorn on the validation reference (its
    reported `sinkhorn` is on the test reference, which plays no part in the choice)."""
    return min(curve, key=lambda point: point["sinkhorn_validation"])


def _training(checkpoint: Path) -> dict[str, Any]:
    """Iterations, how the budget ended (`cds.training`: the rule, and for "plateau" where
    the cool-down began and why, the check it restored and the LR back-offs), and the share
    of simulated paths the LV loss dropped for a non-finite RND (0 for CDDS, which has none)."""
    payload = load_checkpoint(checkpoint)
    config = json.loads(payload["metadata"]["config"])
    section = next(
        config[key] for key in ("teacher", "scds", "cdds") if isinstance(config.get(key), dict)
    )
    paths = int(payload["step"]) * int(section["optim"]["batch_size"])
    out: dict[str, Any] = {
        "iterations": int(payload["step"]),
        "dropped_path_fraction": int(payload["dropped_paths"]) / paths if paths else 0.0,
    }
    if "plateau" in payload:
        plateau = json.loads(payload["plateau"])
        out["budget"] = {
            key: plateau.get(key) for key in ("cooldown_from", "reason", "best_step", "backoffs")
        }
    return out


def _nonfinite_fraction(metrics: dict[str, Any]) -> float | None:
    """Share of a sampler's log weights that were NaN or +inf (None without weights)."""
    if "n_weights" not in metrics:
        return None
    return metrics["n_invalid_weights"] / metrics["n_weights"]


def _curve_point(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in keys(Role.CURVE) if key in metrics}


def _plots(
    params: Params,
    layout: Layout,
    target: Target,
    references: References | None,
    student_samples: Tensor,
    teacher_samples: Tensor,
    curve: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> None:
    name = f"{target.name}: {params.method.upper()}"
    reference = None if references is None else references.test
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
