"""What every stage shares: checking upstream outputs and building the target of the params.

Each stage reads only the validated params and its upstream outputs, refuses to start when an
upstream output is missing or stale, and writes atomically. Checkpoints persist across runs so
that a killed stage resumes; every other output is removed before the stage recomputes it, so
a failed stage never leaves an old output looking current.
"""

from __future__ import annotations

import json
from pathlib import Path

from cds import seeding
from cds.config import Params
from cds.pipeline.layout import Layout
from cds.pipeline.project_inputs import check_tracked, use_project_inputs
from cds.provenance import input_digests
from cds.run_config import run_device
from cds.targets import StandardNormalPrior, Target, check_density, get_target

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


def build_target(params: Params, root: Path) -> Target:
    """The target of `params` in the project at `root`: its files must be under `inputs/`
    (`cds.pipeline.project_inputs`), and user modules are imported from there."""
    check_tracked(params, root)
    use_project_inputs(root)
    return get_target(params.target.name, **params.target.options)


def probed_target(params: Params, root: Path) -> Target:
    """The target of `params`, refused (`TargetInputError` and friends, naming the target and
    value) unless its density and score are finite on prior samples. Cheap: what `cds run`
    checks before it writes anything, and what the target stage checks again. A device this
    machine does not have is refused first (`cds.devices.DeviceError`)."""
    run_device(params)
    target = build_target(params, root)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
    check_density(
        target, prior.sample(DENSITY_PROBE, seeding.generator(params.seed, seeding.DENSITY_PROBE))
    )
    return target


def checked_target(params: Params, layout: Layout) -> Target:
    """The target of `params`, after checking the target stage ran for these params and for
    the current content of the target's files."""
    manifest = json.loads(require(layout.manifest, "target").read_text())
    if manifest["params"] != params.target.model_dump():
        raise StageInputError(
            f"{layout.manifest} was written for target {manifest['params']}, "
            f"but params say {params.target.model_dump()}: run `cds stage target` again"
        )
    target = build_target(params, layout.root)
    changed = sorted(
        set(manifest.get("inputs_sha256", {}).items())
        ^ set(input_digests(params.target.name, params.target.options).items())
    )
    if changed:
        raise StageInputError(
            f"the target's files changed since `cds stage target` ran "
            f"({', '.join(sorted({name for name, _ in changed}))}): run it again"
        )
    return target
