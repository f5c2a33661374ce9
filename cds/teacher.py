"""The DIS teacher: its log-variance objective, its evaluation, training and loading.

Training (docs/methods.md §3): each iteration simulates B detached Euler–Maruyama paths on the
N-step grid with the current control, then recomputes every u_k in one batched pass and minimizes
L_LV = (1/D)·Var_b(R_b).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import Tensor

from cds import seeding
from cds.checkpoints import frozen_with_ema, load_finished_checkpoint
from cds.config import Params, SDEParams, TeacherParams
from cds.integrators import path_rnd, sample_sde, simulate_sde
from cds.losses import log_variance_loss
from cds.metrics import log_z_report, paper_sinkhorn
from cds.networks import Control
from cds.run_config import (
    make_control,
    make_schedule,
    run_setting,
    sampler_space,
    teacher_config,
    training_reference,
)
from cds.sde import uniform_grid
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.training import RunOptions, TrainingResult, train
from cds.validation import teacher_validation

TEACHER_KIND = "dis"


@dataclass
class LogVarianceObjective:
    """One LV iteration: simulate detached paths, recompute the RND with graph, Var/D."""

    control: Control
    target: Target
    prior: StandardNormalPrior
    grid: Tensor
    batch_size: int
    step_size: float | None = None

    def __call__(self, iteration: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        paths = simulate_sde(
            self.control,
            self.target,
            self.prior,
            self.grid,
            self.batch_size,
            generator,
            self.step_size,
        )
        rnd = path_rnd(self.control, paths, self.grid, self.step_size)
        loss, dropped = log_variance_loss(rnd, self.control.dim)
        return loss, {"dropped_paths": dropped}


def evaluate_sde_sampler(
    control: Control,
    target: Target,
    prior: StandardNormalPrior,
    grid: Tensor,
    n: int,
    generator: torch.Generator,
    reference: Tensor | None = None,
) -> dict[str, Any]:
    """Draw n weighted SDE samples; log Z estimates, ESS and (with a reference) the paper
    Sinkhorn."""
    start = time.perf_counter()
    weighted = sample_sde(control, target, prior, grid, n, generator)
    out: dict[str, Any] = {"sample_seconds": time.perf_counter() - start}
    out.update(log_z_report(weighted.log_weights, target.log_Z))
    if reference is not None:
        out["sinkhorn"] = paper_sinkhorn(weighted.samples, reference[:n]).value
    return out


def train_teacher(
    params: Params,
    target: Target,
    checkpoint_path: str | Path,
    **options: Unpack[RunOptions],
) -> TrainingResult:
    """Train (or resume) the DIS teacher of `params` on `target` (`Trainer.try_resume` says
    which checkpoints resume; `options` say how the run is watched, `RunOptions`)."""
    teacher = params.teacher
    device, schedule = run_setting(params, target)
    target, prior_map = sampler_space(params, target)
    with seeding.initialisation(params.seed):
        control = make_control(target.dim, schedule, teacher.network, teacher.clip.initial)
    control.to(device)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation, device)
    grid = uniform_grid(teacher.n_steps, schedule.T, device=device)
    reference = training_reference(params, target, teacher.eval_samples)
    stopping = teacher.stopping

    def evaluation(model: torch.nn.Module, iteration: int) -> dict[str, Any]:
        return evaluate_sde_sampler(
            model,
            target,
            prior,
            grid,
            teacher.eval_samples,
            seeding.generator(params.seed, seeding.TRAIN_EVAL, iteration, device=device),
            reference,
        )  # type: ignore[arg-type]

    return train(
        control,
        LogVarianceObjective(control, target, prior, grid, teacher.optim.batch_size),
        teacher.optim,
        kind=TEACHER_KIND,
        config=teacher_config(params),
        dim=target.dim,
        seed=seeding.stream_seed(params.seed, seeding.TRAIN),
        checkpoint_path=checkpoint_path,
        clip=teacher.clip,
        evaluation=evaluation,
        eval_every=teacher.eval_every,
        stopping=stopping,
        validation=teacher_validation(
            target, prior, grid, stopping.validation_samples, params.seed
        ),
        prior_map=prior_map,
        **options,
    )


def load_teacher(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Control, dict[str, Any]]:
    """Rebuild the teacher control on `device` with its EMA weights (docs/methods.md §12,
    pitfall 11), and its config."""
    payload = load_finished_checkpoint(path, TEACHER_KIND)
    config = json.loads(payload["metadata"]["config"])
    teacher = TeacherParams.model_validate(config["teacher"])
    control = make_control(
        int(payload["metadata"]["dim"]),
        make_schedule(SDEParams.model_validate(config["sde"])),
        teacher.network,
        teacher.clip.value_at(int(payload["step"]) - 1),  # in force at its last iteration
    )
    frozen_with_ema(control, payload, device)
    return control, config
