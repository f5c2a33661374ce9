"""The current main job: train the DIS teacher and evaluate it against the metric's noise floor.

Outputs under `out/`: teacher/teacher.pt (checkpoint), teacher/train_log.jsonl (periodic
evaluations), eval/metrics.json and eval/samples.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cds.config import Params, ParamsError
from cds.dis import load_teacher, train_teacher
from cds.metrics import compare_to_exact, log_z_report
from cds.samplers import sample_sde
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target
from pipelines.io import write_json_atomic
from pipelines.plots import plot_samples


def run_teacher_job(params: Params, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train (resuming if possible) and evaluate the teacher; returns the metrics written."""
    if params.method != "dis":
        raise ParamsError(
            f"method = {params.method!r}: `cds run` trains the DIS teacher only for now; "
            "train CDDS/SCDS with cds.cdds.train_student / cds.scds.train_scds"
        )
    target = get_target(params.target.name, **params.target.options)
    checkpoint = out / "teacher" / "teacher.pt"
    start = time.perf_counter()
    result = train_teacher(
        params, target, checkpoint, out / "teacher" / "train_log.jsonl", progress=progress
    )
    train_seconds = time.perf_counter() - start
    control, _ = load_teacher(checkpoint)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
    grid = uniform_grid(params.teacher.n_steps, params.sde.T)
    n = params.evaluation.n_samples
    metrics: dict[str, Any] = {
        "target": target.name,
        "method": "dis",
        "n_steps": params.teacher.n_steps,
        "train_iterations": result.iterations,
        "train_seconds_this_run": train_seconds,
        "skipped_iterations": result.skipped,
        "dropped_paths": result.dropped_paths,
    }
    start = time.perf_counter()
    weighted = sample_sde(
        control, target, prior, grid, n, torch.Generator().manual_seed(params.evaluation.seed)
    )
    metrics["sample_seconds"] = time.perf_counter() - start
    metrics.update(log_z_report(weighted.log_weights, target.log_Z))
    samples = weighted.samples
    reference = None
    if target.has_exact_samples:
        ref_gen = torch.Generator().manual_seed(params.evaluation.seed + 1)
        reference = target.sample(n, torch.Generator().manual_seed(params.evaluation.seed + 2))
        metrics.update(compare_to_exact(target, samples, ref_gen, params.evaluation.floor_repeats))
    write_json_atomic(out / "eval" / "metrics.json", metrics)
    plot_samples(
        out / "eval" / "samples.png",
        samples,
        reference,
        target.box,
        f"{target.name}: DIS, {params.teacher.n_steps} SDE steps (n={n})",
    )
    return metrics
