"""The DIS teacher: building it from params, its log-variance objective, evaluation and loading.

Training (spec §3): each iteration simulates B detached Euler–Maruyama paths on the N-step grid
with the current control, then recomputes every u_k in one batched pass and minimizes
L_LV = (1/D)·Var_b(R_b).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cds import seeding
from cds.checkpoints import frozen_with_ema, load_finished_checkpoint
from cds.config import NetworkParams, Params
from cds.losses import log_variance_loss
from cds.metrics import log_z_report, paper_sinkhorn
from cds.networks import Control
from cds.provenance import code_version, input_digests
from cds.samplers import path_rnd, sample_sde, simulate_sde
from cds.sde import VPSchedule, uniform_grid
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.training import Trainer, TrainingMonitor, TrainingResult

TEACHER_KIND = "dis"


def fingerprint(payload: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serializable configuration."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_config(params: Params, **sections: Any) -> dict[str, Any]:
    """What a training run depends on: seed, target and SDE, the method's own sections, the
    cds code version and the content of the target's user files (`cds.provenance`).

    Its fingerprint decides whether a checkpoint may be resumed; it is stored in the checkpoint
    so that the model can be rebuilt."""
    return {
        "seed": params.seed,
        "target": params.target.model_dump(),
        "sde": params.sde.model_dump(),
        "code_version": code_version(),
        "inputs": input_digests(params.target.name, params.target.options),
        **sections,
    }


def teacher_fingerprint(params: Params) -> str:
    """The fingerprint of the teacher run `params` describe (what its checkpoint records)."""
    return fingerprint(run_config(params, teacher=params.teacher.model_dump()))


def make_schedule(params: Params) -> VPSchedule:
    return VPSchedule(params.sde.beta_min, params.sde.beta_max, params.sde.T)


def make_control(
    dim: int,
    schedule: VPSchedule,
    network: NetworkParams,
    clip_value: float,
    step_conditioned: bool = False,
) -> Control:
    return Control(
        dim,
        schedule,
        width=network.width,
        depth=network.depth,
        activation=network.activation,
        step_conditioned=step_conditioned,
        clip_net=clip_value,
        clip_score=clip_value,
    )


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
    log_path: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    monitor: TrainingMonitor | None = None,
    reuse_finished: bool = False,
) -> TrainingResult:
    """Train (or resume) the DIS teacher of `params` on `target` (`Trainer.try_resume` says
    which checkpoints resume; `monitor` watches the run)."""
    teacher = params.teacher
    schedule = make_schedule(params)
    torch.manual_seed(seeding.stream_seed(params.seed, seeding.INIT))
    control = make_control(target.dim, schedule, teacher.network, teacher.clip.initial)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
    grid = uniform_grid(teacher.n_steps, schedule.T)
    objective = LogVarianceObjective(control, target, prior, grid, teacher.optim.batch_size)
    config = run_config(params, teacher=teacher.model_dump())
    reference = None
    if target.has_exact_samples:
        reference = target.sample(
            teacher.eval_samples,
            seeding.generator(params.evaluation.seed, seeding.TRAINING_REFERENCE),
        )

    def evaluation(model: torch.nn.Module, iteration: int) -> dict[str, Any]:
        return evaluate_sde_sampler(
            model,
            target,
            prior,
            grid,
            teacher.eval_samples,
            seeding.generator(params.seed, seeding.TRAIN_EVAL, iteration),
            reference,
        )  # type: ignore[arg-type]

    trainer = Trainer(
        control,
        objective,
        teacher.optim,
        seed=seeding.stream_seed(params.seed, seeding.TRAIN),
        kind=TEACHER_KIND,
        fingerprint=teacher_fingerprint(params),
        checkpoint_path=checkpoint_path,
        clip=teacher.clip,
        metadata={"config": json.dumps(config), "dim": target.dim},
        evaluation=evaluation,
        eval_every=teacher.eval_every,
        log_path=log_path,
        progress=progress,
        monitor=monitor,
    )
    trainer.try_resume(reuse_finished)
    return trainer.run(stop_after=stop_after)


def load_teacher(path: str | Path) -> tuple[Control, dict[str, Any]]:
    """Rebuild the teacher control with its EMA weights (spec pitfall 11) and its config."""
    payload = load_finished_checkpoint(path, TEACHER_KIND)
    config = json.loads(payload["metadata"]["config"])
    params = Params.model_validate(
        {
            "seed": config["seed"],
            "target": config["target"],
            "sde": config["sde"],
            "teacher": config["teacher"],
        }
    )
    control = make_control(
        int(payload["metadata"]["dim"]),
        make_schedule(params),
        params.teacher.network,
        params.teacher.clip.value_at(params.teacher.optim.iterations),
    )
    frozen_with_ema(control, payload)
    return control, config
