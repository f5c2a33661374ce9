"""The training stages that dvc.yaml runs through `cds stage NAME`: target setup, teacher,
trajectory fragments and student. Evaluation is in `pipelines.evaluation`.

Each stage reads only the validated params and its upstream outputs, refuses to start when an
upstream output is missing or stale, and writes atomically. Checkpoints persist across runs so
that a killed stage resumes; every other output is removed before the stage recomputes it, so
a failed stage never leaves an old output looking current.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cds import seeding
from cds.cdds import generate_fragments, load_bank, save_bank, train_student
from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.dis import load_teacher, train_teacher
from cds.evaluation import References
from cds.samplers import coarse_indices
from cds.scds import train_scds
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, Target, check_density, get_target
from pipelines.io import save_npy_atomic, write_json_atomic
from pipelines.layout import Layout

#: Prior samples on which the target density is checked before anything is trained.
DENSITY_PROBE = 1024


class StageInputError(RuntimeError):
    """An upstream output is missing or was produced for other parameters."""


def require(path: Path, producer: str) -> Path:
    """`path` must exist; otherwise say which stage produces it."""
    if not path.exists():
        raise StageInputError(
            f"{path} is missing: run `cds stage {producer}` (or `dvc repro`) first"
        )
    return path


def build_target(params: Params) -> Target:
    return get_target(params.target.name, **params.target.options)


def probed_target(params: Params) -> Target:
    """The target of `params`, refused (`TargetInputError` and friends, naming the target and
    value) unless its density and score are finite on prior samples. Cheap: what `cds run`
    checks before it writes anything, and what the target stage checks again."""
    target = build_target(params)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
    check_density(
        target, prior.sample(DENSITY_PROBE, seeding.generator(params.seed, seeding.DENSITY_PROBE))
    )
    return target


def checked_target(params: Params, layout: Layout) -> Target:
    """The target of `params`, after checking the target stage ran for these params."""
    manifest = json.loads(require(layout.manifest, "target").read_text())
    if manifest["params"] != params.target.model_dump():
        raise StageInputError(
            f"{layout.manifest} was written for target {manifest['params']}, "
            f"but params say {params.target.model_dump()}: run `cds stage target` again"
        )
    return build_target(params)


def run_target(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Validate the target (density finite on prior samples), write its manifest and, where
    an exact sampler exists, `evaluation.n_samples` reference samples."""
    target = probed_target(params)
    shutil.rmtree(layout.target_dir, ignore_errors=True)
    manifest: dict[str, Any] = {
        **target.describe(),
        "n_modes": target.n_modes,
        "params": params.target.model_dump(),
        "reference": None,
    }
    if target.has_exact_samples:
        n, seed = params.evaluation.n_samples, params.evaluation.seed
        files = {}
        for role, path in (
            ("validation", layout.reference_validation),
            ("test", layout.reference_test),
        ):
            stream = f"reference_{role}"
            save_npy_atomic(path, target.sample(n, seeding.generator(seed, stream)).numpy())
            files[role] = {"file": path.name, "stream": stream}
        manifest["reference"] = {"n": n, "seed": seed, **files}
    write_json_atomic(layout.manifest, manifest)
    return manifest


def load_references(layout: Layout) -> References | None:
    """The target stage's exact reference sets (validation, test), or None for targets
    without exact samples."""
    manifest = json.loads(require(layout.manifest, "target").read_text())
    if manifest["reference"] is None:
        return None
    return References(
        torch.from_numpy(np.load(require(layout.reference_validation, "target"))),
        torch.from_numpy(np.load(require(layout.reference_test, "target"))),
    )


def run_teacher(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Train the DIS teacher, resuming from its checkpoint when one matches the params."""
    target = checked_target(params, layout)
    result = train_teacher(params, target, layout.teacher, layout.teacher_log, progress=progress)
    return {"iterations": result.iterations, "skipped": result.skipped}


def run_fragments(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Build the fragment bank from the teacher's PF ODE when the student reads one
    (`method: cdds` with `cdds.fragments: bank | refresh`); otherwise record why there is none."""
    target = checked_target(params, layout)
    shutil.rmtree(layout.fragments_dir, ignore_errors=True)
    cfg = params.cdds
    manifest: dict[str, Any] = {"method": params.method, "fragments": cfg.fragments, "bank": None}
    if params.method == "cdds" and cfg.fragments != "online":
        teacher, _ = load_teacher(require(layout.teacher, "teacher"))
        prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
        bank = generate_fragments(
            teacher,
            target,
            prior,
            uniform_grid(cfg.n_fine, params.sde.T),
            coarse_indices(cfg.n_fine, cfg.n_coarse),
            cfg.bank_size,
            seeding.generator(params.seed, seeding.FRAGMENTS),
            progress=progress,
        )
        manifest["bank"] = {"file": layout.bank.name, "pairs": len(bank)}
        manifest["teacher_fingerprint"] = load_checkpoint(layout.teacher)["fingerprint"]
        save_bank(layout.bank, bank, manifest)
    write_json_atomic(layout.fragments_manifest, manifest)
    return manifest


def run_student(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Train the student of `method`: CDDS distils the teacher, SCDS trains from scratch."""
    target = checked_target(params, layout)
    if params.method == "scds":
        result = train_scds(params, target, layout.student, layout.student_log, progress=progress)
        return {"iterations": result.iterations, "skipped": result.skipped}
    teacher, _ = load_teacher(require(layout.teacher, "teacher"))
    teacher_fingerprint = load_checkpoint(layout.teacher)["fingerprint"]
    bank = None
    if params.cdds.fragments != "online":
        bank, manifest = load_bank(require(layout.bank, "fragments"))
        if manifest.get("teacher_fingerprint") != teacher_fingerprint:
            raise StageInputError(
                f"{layout.bank} was built from another teacher: run `cds stage fragments` again"
            )
    result = train_student(
        params,
        target,
        teacher,
        teacher_fingerprint,
        layout.student,
        bank=bank,
        log_path=layout.student_log,
        progress=progress,
    )
    return {"iterations": result.iterations, "skipped": result.skipped}
