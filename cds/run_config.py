"""What a training run is built from, and the fingerprint that identifies it.

A run's configuration is the seed, the target and SDE, the method's own section, the cds code
version and the content of the target's user files (`cds.provenance`). Its fingerprint decides
whether a checkpoint may be resumed (`cds.training.Trainer.try_resume`); the configuration is
stored in the checkpoint so that the model can be rebuilt from it alone.

This is the one module that reads the whole `Params` tree for training; the library below it
(`cds.sde`, `cds.networks`, `cds.losses`, the integrators) takes only the values it uses.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import Tensor

from cds import seeding
from cds.config import NetworkParams, Params, SDEParams
from cds.devices import resolve_device
from cds.networks import Control
from cds.preconditioning import AffineMap, WhitenedTarget, laplace_map
from cds.provenance import code_version, input_digests
from cds.sde import VPSchedule
from cds.targets.base import Target
from cds.targets.catalog import IN_MEMORY_TARGET, TARGETS
from cds.targets.prior import StandardNormalPrior

#: Prior draws from which the Laplace prior's mode search starts (`cds.preconditioning`).
LAPLACE_START_COUNT = 4


def fingerprint(payload: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serializable configuration."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_config(params: Params, **sections: Any) -> dict[str, Any]:
    """What a training run depends on: seed, target and SDE, the kind of device it runs on
    (CPU and CUDA random streams differ), the method's own `sections`, the cds code version and
    the content of the target's user files."""
    return {
        "seed": params.seed,
        "device": run_device(params).type,
        "target": params.target.model_dump(),
        "sde": params.sde.model_dump(),
        "code_version": code_version(),
        "inputs": input_digests(params.target.name, params.target.options),
        **sections,
    }


def teacher_config(params: Params) -> dict[str, Any]:
    """The configuration of the DIS teacher run `params` describe."""
    return run_config(params, teacher=params.teacher.model_dump())


def scds_config(params: Params) -> dict[str, Any]:
    """The configuration of the SCDS run `params` describe."""
    return run_config(params, scds=params.scds.model_dump())


def cdds_config(params: Params, teacher_fingerprint: str) -> dict[str, Any]:
    """The configuration of the CDDS run `params` describe, distilling the teacher whose
    checkpoint has `teacher_fingerprint`."""
    return run_config(params, cdds=params.cdds.model_dump(), teacher=teacher_fingerprint)


def teacher_fingerprint(params: Params) -> str:
    """The fingerprint of the teacher run `params` describe (what its checkpoint records)."""
    return fingerprint(teacher_config(params))


def scds_fingerprint(params: Params) -> str:
    """The fingerprint of the SCDS run `params` describe (what its checkpoint records)."""
    return fingerprint(scds_config(params))


def make_schedule(sde: SDEParams) -> VPSchedule:
    """The VP noise schedule of the `sde` section (docs/methods.md §1)."""
    return VPSchedule(sde.beta_min, sde.beta_max, sde.T)


def make_control(
    dim: int,
    schedule: VPSchedule,
    network: NetworkParams,
    clip_value: float,
    step_conditioned: bool = False,
) -> Control:
    """The control u_θ of a `network` section (docs/methods.md §2), both clips at `clip_value`."""
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


def matching_target(params: Params, target: Target) -> Target:
    """`target`, refused when it cannot be what `params.target` names: a run records the
    target by name, and a sampler that needs it later is rebuilt from that name, so training on
    one density while params name a built-in one would silently swap them at sampling time."""
    name = params.target.name
    if name in TARGETS and target.name != name:
        raise ValueError(
            f"target.name = {name!r}, but the target given is {target.name!r}: name it in "
            f"params (a built-in name, 'module.path:ClassName', or {IN_MEMORY_TARGET!r} for a "
            "density passed as an object, which must then be passed again to sample)"
        )
    return target


def run_setting(params: Params, target: Target) -> tuple[torch.device, VPSchedule]:
    """What every training run starts from: its device, with `target` checked against the
    params (`matching_target`) and moved there, and its noise schedule."""
    device = run_device(params)
    matching_target(params, target).to(device)
    return device, make_schedule(params.sde)


def sampler_space(params: Params, target: Target) -> tuple[Target, AffineMap | None]:
    """The target as the samplers of `params` see it, and the map x = μ + L·z back to the
    target's coordinates: the target itself under the standard prior (no map), its whitened
    form under the Laplace prior (docs/methods.md §1), computed from the draws of stream
    `laplace_starts` of `params.seed` (`cds.preconditioning.laplace_map`). The teacher or SCDS
    run calls this and its checkpoint records the map (`cds.training.train`); what is built from
    a teacher takes the recorded one (`teacher_space`)."""
    if params.sde.prior == "standard":
        return target, None
    starts = StandardNormalPrior(target.dim).sample(
        LAPLACE_START_COUNT, seeding.generator(params.seed, seeding.LAPLACE_STARTS)
    )
    prior_map = laplace_map(target, starts)
    return teacher_space(params, target, prior_map), prior_map


def teacher_space(params: Params, target: Target, prior_map: AffineMap | None) -> Target:
    """The target in the coordinates of `prior_map` (None: the standard prior): the map the
    teacher or SCDS run has just computed (`sampler_space`), or the one a teacher's checkpoint
    records, for what is built from that teacher (the fragment bank, the CDDS student), so a
    run has one map. Refused when the params' prior is not the map's."""
    if params.sde.prior == "laplace" and prior_map is None:
        raise ValueError(
            "sde.prior = 'laplace', but no map was given: pass the one the teacher's checkpoint "
            "records (prior_map=recorded_prior_map(load_checkpoint(teacher_path))), or train "
            "the teacher again if it was trained with the standard prior"
        )
    if params.sde.prior == "standard" and prior_map is not None:
        raise ValueError(
            "sde.prior = 'standard', but the teacher was trained with the Laplace prior: "
            "train the teacher again"
        )
    return target if prior_map is None else WhitenedTarget(target, prior_map).to(target.device)


def run_device(params: Params) -> torch.device:
    """The device `params.device` names on this machine (`cds.devices.resolve_device`)."""
    return resolve_device(params.device)


def training_reference(params: Params, target: Target, n: int) -> Tensor | None:
    """The exact samples in-training evaluations compare with (None for a target without an
    exact sampler): drawn on the CPU from the evaluation seed, so every device and every
    version sees the same set, then placed on the run's device."""
    if not target.has_exact_samples:
        return None
    generator = seeding.generator(params.evaluation.seed, seeding.TRAINING_REFERENCE)
    return target.sample(n, generator).to(run_device(params))
