"""Trained samplers as self-contained torch modules with `.sample(n, generator)`.

`sampler_from_checkpoint` rebuilds the sampler a training run produced (CDDS: one consistency
step, docs/methods.md §4; SCDS: K shortcut ODE steps, docs/methods.md §5; DIS: the N-step SDE,
docs/methods.md §3). `load_sampler` does the same for a model in the MLflow registry
(`models:/cds-gmm9@champion`, whose file is checked against the version's `checkpoint_md5` tag), a
run artifact, or a local checkpoint path.

Loading never runs code named inside a file. SCDS and DIS need their target at sampling time:
a built-in target is rebuilt by name from the checkpoint; a user target (`module:Class` in the
file) is used only when the caller passes it (`target=`) or says it trusts the file's author
(`trust_target_code=True`, which imports the named class). CDDS needs no target.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cds.checkpoints import CheckpointError, load_checkpoint
from cds.devices import resolve_device
from cds.extras import require
from cds.integrators import (
    WeightedSamples,
    coarse_indices,
    consistency_times_to_go,
    sample_consistency,
    sample_pf_ode,
    sample_sde,
)
from cds.networks import ConsistencyStudent, Control
from cds.preconditioning import AffineMap, WhitenedTarget, recorded_prior_map
from cds.sde import VPSchedule, is_power_of_two, uniform_grid
from cds.targets import StandardNormalPrior, get_target
from cds.targets.base import Target
from cds.targets.catalog import IN_MEMORY_TARGET, TARGETS

#: File name of the checkpoint inside a logged MLflow model's artifacts.
CHECKPOINT_ARTIFACT = "sampler.pt"


class Sampler(nn.Module):
    """A trained sampler: `sample(n, generator)` → (n, dim) float32 samples using `nfe` network
    evaluations per sample, on the sampler's `device` (`sampler.to(device)` moves all of it,
    its target and prior included; the generator must be on that device)."""

    method: str
    dim: int
    nfe: int
    prior: StandardNormalPrior

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the sampler's network, and so its samples, live."""
        return next(self.parameters()).device

    def _apply(self, fn: Callable[..., Tensor], recurse: bool = True) -> Sampler:
        """`to`, `cuda` and `cpu` also move what is not a module: the prior's draws and the
        target's constants."""
        super()._apply(fn, recurse)
        self._place(self.device)
        return self

    def _place(self, device: torch.device) -> None:
        self.prior.device = device

    def _checked(self, n: int, generator: torch.Generator | None) -> None:
        """Refuse a bad n, or a generator on another device, before any work."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if generator is not None and generator.device != self.device:
            raise ValueError(
                f"generator is on {generator.device}, the sampler on {self.device}: pass "
                f"torch.Generator(device={str(self.device)!r})"
            )


class ConsistencySampler(Sampler):
    """CDDS: x = f_θ(x₀, T) with x₀ from the prior, one network evaluation; with K > 1 steps,
    the multistep consistency sampler on the times to go `taus` (docs/methods.md §4)."""

    method = "cdds"

    def __init__(
        self,
        student: ConsistencyStudent,
        prior: StandardNormalPrior,
        alpha: Callable[[float], float],
        taus: list[float],
    ):
        super().__init__()
        self.student = student
        self.prior = prior
        self.alpha = alpha
        self.taus = taus
        self.dim = student.dim
        self.nfe = len(taus)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._checked(n, generator)
        x0 = self.prior.sample(n, generator)
        return sample_consistency(self.student, self.alpha, self.taus, x0, generator)


class _ControlSampler(Sampler):
    """A sampler that integrates a trained control on a uniform grid of `n_steps` steps."""

    def __init__(self, control: Control, target: Target, prior: StandardNormalPrior, n_steps: int):
        super().__init__()
        self.control = control
        self.target = target
        self.prior = prior
        self.dim = target.dim
        self.nfe = n_steps
        self.register_buffer("grid", uniform_grid(n_steps, control.schedule.T), persistent=False)

    def _place(self, device: torch.device) -> None:
        super()._place(device)
        self.target.to(device)


class ShortcutSampler(_ControlSampler):
    """SCDS: K Euler steps of the step-conditioned PF ODE with step size d = T/K (docs/methods.md
    §5)."""

    method = "scds"

    def __init__(self, control: Control, target: Target, prior: StandardNormalPrior, n_steps: int):
        if not is_power_of_two(n_steps):
            raise ValueError(f"n_steps must be a power of two, got {n_steps}")
        super().__init__(control, target, prior, n_steps)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._checked(n, generator)
        step = self.control.schedule.T / self.nfe
        x = sample_pf_ode(
            self.control, self.target, self.prior, self.grid, n, generator, step_size=step
        )
        return x.detach()


class DiffusionSampler(_ControlSampler):
    """The N-step Euler–Maruyama SDE sampler (docs/methods.md §3): the DIS teacher (the 128-step
    baseline), or an SCDS control run as a diffusion sampler with its base step d = T/N
    (docs/methods.md §5)."""

    def __init__(
        self,
        control: Control,
        target: Target,
        prior: StandardNormalPrior,
        n_steps: int,
        step_size: float | None = None,
    ):
        super().__init__(control, target, prior, n_steps)
        self.step_size = step_size
        self.method = "dis" if step_size is None else "scds-sde"

    def weighted_samples(self, n: int, generator: torch.Generator | None = None) -> WeightedSamples:
        """n samples with their log importance weights −R (docs/methods.md §3)."""
        self._checked(n, generator)
        return sample_sde(
            self.control, self.target, self.prior, self.grid, n, generator, self.step_size
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.weighted_samples(n, generator).samples


class WhitenedSampler(Sampler):
    """A sampler trained in the whitened coordinates z of the Laplace prior (`sde.prior:
    laplace`, docs/methods.md §1): its draws are x = μ + L·z of the `inner` sampler's. Its
    importance weights are the inner sampler's against the whitened target
    (`cds.scoring.sampler_weights`): log ρ_z(z) − log q_z(z) = log ρ(x) − log q(x)."""

    def __init__(self, inner: Sampler, prior_map: AffineMap):
        super().__init__()
        self.inner = inner
        self.method = inner.method
        self.dim = inner.dim
        self.nfe = inner.nfe
        self.prior = inner.prior
        self.register_buffer("shift", prior_map.shift.float())
        self.register_buffer("scale_tril", prior_map.scale_tril.float())

    @property
    def prior_map(self) -> AffineMap:
        """x = μ + L·z, on the sampler's device."""
        return AffineMap(self.shift, self.scale_tril)

    def whitened(self, target: Target) -> WhitenedTarget:
        """`target` in the inner sampler's coordinates."""
        return WhitenedTarget(target, self.prior_map)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior_map.forward(self.inner.sample(n, generator))


def sampler_from_checkpoint(
    path: str | Path,
    n_steps: int | None = None,
    sde: bool = False,
    target: Target | None = None,
    trust_target_code: bool = False,
    device: torch.device | str = "cpu",
) -> Sampler:
    """The sampler stored in a finished training checkpoint (teacher, CDDS or SCDS), on
    `device` (cpu, cuda, cuda:N or auto, `cds.devices`).

    `n_steps` picks the CDDS or SCDS budget (default 1) or the DIS step count (default: the
    trained one). `sde=True` turns an SCDS checkpoint into its N-step diffusion sampler (the
    trained grid and base step, docs/methods.md §5), whose SDE weights are valid at K = N. `target`
    and `trust_target_code`: how an SCDS or DIS sampler gets its target (module docstring)."""
    from cds.scds import SCDS_KIND

    device = resolve_device(device)
    payload = load_checkpoint(path)
    kind = payload.get("kind")
    if sde and kind != SCDS_KIND:
        raise ValueError(f"{path}: sde=True needs an SCDS checkpoint, this one is {kind!r}")
    prior_map = recorded_prior_map(payload)
    if prior_map is None:
        return _sampler(path, kind, n_steps, sde, target, trust_target_code).to(device)
    inner = _sampler(path, kind, n_steps, sde, target, trust_target_code, prior_map)
    return WhitenedSampler(inner, prior_map).to(device)


def _sampler(
    path: str | Path,
    kind: str | None,
    n_steps: int | None,
    sde: bool,
    target: Target | None,
    trust_target_code: bool,
    prior_map: AffineMap | None = None,
) -> Sampler:
    """The sampler of a checkpoint of `kind`, on the CPU, in the coordinates it was trained in
    (whitened by `prior_map` where there is one, its target too)."""
    from cds.cdds import STUDENT_KIND, load_student
    from cds.scds import SCDS_KIND, load_scds
    from cds.teacher import TEACHER_KIND, load_teacher

    def sampling_target(config: dict, dim: int) -> Target:
        found = _target(path, config, dim, target, trust_target_code)
        return found if prior_map is None else WhitenedTarget(found, prior_map)

    if kind == STUDENT_KIND:
        student, config = load_student(path)
        n_fine, n_coarse = int(config["cdds"]["n_fine"]), int(config["cdds"]["n_coarse"])
        coarse = coarse_indices(n_fine, n_coarse)
        taus = consistency_times_to_go(n_steps or 1, coarse, n_fine, student.T)
        return ConsistencySampler(
            student, _prior(config, student.dim), _schedule(config).alpha, taus
        )
    if kind == SCDS_KIND:
        control, config = load_scds(path)
        trained = int(config["scds"]["n_steps"])
        if n_steps is not None and n_steps > trained:
            raise ValueError(f"n_steps = {n_steps}: this SCDS was trained for at most {trained}")
        found = sampling_target(config, control.dim)
        prior = _prior(config, found.dim)
        if sde:
            step = control.schedule.T / trained
            return DiffusionSampler(control, found, prior, trained, step)
        return ShortcutSampler(control, found, prior, n_steps or 1)
    if kind == TEACHER_KIND:
        control, config = load_teacher(path)
        found = sampling_target(config, control.dim)
        steps = n_steps or int(config["teacher"]["n_steps"])
        return DiffusionSampler(control, found, _prior(config, found.dim), steps)
    raise CheckpointError(f"{path}: kind {kind!r} is not a sampler (expected dis, cdds or scds)")


class TargetNeededError(CheckpointError):
    """A sampler needs its target at sampling time, and only the caller can give it."""


class UntrustedTargetError(TargetNeededError):
    """A checkpoint names user code as its target and the caller did not trust it."""


def _target(path: str | Path, config: dict, dim: int, given: Target | None, trust: bool) -> Target:
    """The sampler's target: `given`, a built-in rebuilt by name, or (trusted) a user class."""
    name, options = config["target"]["name"], config["target"]["options"]
    if given is not None:
        if given.dim != dim:
            raise ValueError(
                f"target has dim {given.dim}, the checkpoint {path} was trained for {dim}"
            )
        return given
    if name == IN_MEMORY_TARGET:
        raise TargetNeededError(
            f"{path}: the sampler needs its target, a density that was passed as a Python "
            "object when it was trained: pass it again (target=...)"
        )
    if name in TARGETS or trust:
        return get_target(name, **options)
    raise UntrustedTargetError(
        f"{path}: the sampler needs its target, which the file names as user code {name!r}; "
        "pass the density (target=...) or, if you trust whoever wrote the file, "
        "trust_target_code=True"
    )


def _schedule(config: dict) -> VPSchedule:
    sde = config["sde"]
    return VPSchedule(sde["beta_min"], sde["beta_max"], sde["T"])


def _prior(config: dict, dim: int) -> StandardNormalPrior:
    return StandardNormalPrior(dim, config["sde"]["prior_truncation"])


def load_sampler(
    uri: str | Path,
    n_steps: int | None = None,
    target: Target | None = None,
    trust_target_code: bool = False,
    device: torch.device | str = "cpu",
) -> Sampler:
    """A registered sampler as a torch module on `device` (the CPU unless asked; "auto" is the
    GPU when there is one): `load_sampler("models:/cds-gmm9@champion")`.

    `uri` is any MLflow model URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/…`)
    resolved against the current tracking/registry URI, or a local checkpoint path. A registry
    version's file must match its `checkpoint_md5` tag. `target`, `trust_target_code`: see
    `sampler_from_checkpoint`."""
    how = {
        "n_steps": n_steps,
        "target": target,
        "trust_target_code": trust_target_code,
        "device": resolve_device(device),  # a bad device fails before any download
    }
    local = Path(uri)
    if not str(uri).partition(":/")[1] and local.exists():
        return sampler_from_checkpoint(local, **how)
    mlflow = require("mlflow", "loading a model from MLflow")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), dst_path=tmp))
        checkpoints = list(model_dir.rglob(CHECKPOINT_ARTIFACT))
        if len(checkpoints) != 1:
            raise CheckpointError(
                f"{uri}: expected one {CHECKPOINT_ARTIFACT} in the model, found {len(checkpoints)}"
            )
        expected = _registered_md5(str(uri))
        if expected is not None:
            with checkpoints[0].open("rb") as fh:
                actual = hashlib.file_digest(fh, "md5").hexdigest()
            if actual != expected:
                raise CheckpointError(
                    f"{uri}: the model's {CHECKPOINT_ARTIFACT} (md5 {actual}) is not the file "
                    f"that was registered (checkpoint_md5 {expected}); refusing to load it"
                )
        if target is None:  # the target the model carries, if it carries one
            how["target"] = _model_target(model_dir, checkpoints[0], trust_target_code)
        return sampler_from_checkpoint(checkpoints[0], **how)


def _model_target(model_dir: Path, checkpoint: Path, trusted: bool) -> Target | None:
    """The target a downloaded pyfunc model carries (`cds.pipeline.model_registry.TargetBundle`)
    for its sampler: rebuilt on the model's copies of its data files, a user module imported
    from the model's code only when `trusted`. None where the model carries none."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    import yaml

    flavor = yaml.safe_load(mlmodel.read_text()).get("flavors", {}).get("python_function", {})
    artifacts = {
        name: str(model_dir / spec["path"])
        for name, spec in (flavor.get("artifacts") or {}).items()
    }
    code = model_dir / flavor["code"] if flavor.get("code") else None
    target_files = (flavor.get("config") or {}).get("target_files") or {}  # the model_config
    return bundled_target(checkpoint, target_files, artifacts, code, trusted)


def bundled_target(
    checkpoint: str | Path,
    target_files: dict[str, str],
    artifacts: dict[str, str],
    code: Path | None,
    trusted: bool,
) -> Target | None:
    """The checkpoint's target built from what a model bundles: its options' file names
    (`target_files`: value as written in params → artifact name) pointed at the model's copies
    (`artifacts`: artifact name → local path), and a user module (`module:Class`) imported,
    only when `trusted`, with the model's `code` directory on the path. None when there is
    nothing to build this way: a CDDS sampler (it needs no target), a built-in target without
    files (rebuilt by name later), an untrusted user target (refused later, by name), or a
    model without its code."""
    from cds.cdds import STUDENT_KIND

    if not target_files and code is None:
        return None
    payload = load_checkpoint(checkpoint)
    if payload.get("kind") == STUDENT_KIND:  # CDDS samples without its target
        return None
    config = json.loads(payload["metadata"]["config"])["target"]
    name, user = config["name"], ":" in config["name"]
    if (user and not trusted) or name == IN_MEMORY_TARGET:
        return None
    if not target_files and not user:
        return None
    files = {value: artifacts[artifact] for value, artifact in target_files.items()}
    options = _with_files(config["options"], files)
    if not user or code is None:
        return get_target(name, **options)
    sys.path.append(str(code))  # last: installed packages (cds itself) keep precedence
    try:
        return get_target(name, **options)
    finally:
        sys.path.remove(str(code))


def _with_files(value: Any, files: dict[str, str]) -> Any:
    """An options tree with every string that names a bundled file replaced by its path."""
    if isinstance(value, str):
        return files.get(value, value)
    if isinstance(value, dict):
        return {key: _with_files(item, files) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_files(item, files) for item in value]
    return value


def _registered_md5(uri: str) -> str | None:
    """The `checkpoint_md5` tag of the registry version a `models:/` URI names (None for other
    URIs). A registry version without the tag is refused."""
    if not uri.startswith("models:/"):
        return None
    import mlflow

    name, at, rest = uri.removeprefix("models:/").partition("@")
    client = mlflow.MlflowClient()
    if at:
        version = client.get_model_version_by_alias(name, rest)
    else:
        name, _, number = name.partition("/")
        if number == "latest":
            number = str(
                max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            )
        elif not number.isdigit():
            raise CheckpointError(
                f"{uri}: name a version number, 'latest' or an alias (models:/NAME@champion)"
            )
        version = client.get_model_version(name, number)
    md5 = version.tags.get("checkpoint_md5")
    if not md5:
        raise CheckpointError(f"{uri}: the registry version has no checkpoint_md5 tag")
    return md5
