"""`cds.fit`: a one-step sampler for your own density, in memory, in a few lines.

    import cds, torch
    def log_prob(x):  # a batched log-density, up to a constant: (B, D) → (B,)
        return -0.5 * ((x - 2.0) / 0.5).square().sum(1)
    sampler = cds.fit(log_prob, dim=2, preset="smoke")
    x = sampler.sample(1000, sampler.generator(0))   # a generator on the sampler's device
    print(sampler.log_z)   # LogZ(value=…, std_error=…, …)
    sampler.save("my_sampler.pt")   # cds.load_sampler("my_sampler.pt", target=…) reads it

It trains exactly what the pipeline's stages train (the DIS teacher, the CDDS fragment bank and
student, or SCDS), through the same functions, with the same params (presets and dotted
overrides as `cds run --set` takes them), but with no params.yaml, DVC, MLflow or Prefect.
With a `workdir`, checkpoints are kept there and an interrupted fit resumes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from cds import seeding
from cds.cdds import build_fragment_bank, train_student
from cds.checkpoints import atomic_write, load_checkpoint
from cds.config import Params, load_params
from cds.devices import resolve_device
from cds.integrators import WeightedSamples
from cds.metrics import log_z_report
from cds.preconditioning import recorded_prior_map
from cds.presets import target_preset
from cds.run_config import run_device
from cds.samplers import (
    Sampler,
    sampler_from_checkpoint,
)
from cds.scds import train_scds
from cds.scoring import MAX_EXACT_DIM, sampler_weights
from cds.targets import (
    IN_MEMORY_TARGET,
    TARGETS,
    StandardNormalPrior,
    Target,
    check_density,
    get_target,
)
from cds.teacher import load_teacher, train_teacher

#: Probe points on which a density given as a function is fingerprinted (its values there).
PROBE_POINTS = 16
#: Prior samples on which the density must be finite before anything trains.
DENSITY_PROBE = 1024
CPU = torch.device("cpu")


@dataclass(frozen=True)
class LogZ:
    """The fitted sampler's log Z estimate from its importance weights (docs/methods.md §7).

    value, std_error: the importance-sampling estimate and its Monte Carlo standard error;
    elbo, elbo_std_error: the evidence lower bound and its standard error; ess: the normalised
    effective sample size; valid: whether the weights are valid (a deterministic map that folds
    gives none: then value and elbo are None); n: the number of weighted samples."""

    value: float | None
    std_error: float | None
    elbo: float | None
    elbo_std_error: float | None
    ess: float | None
    valid: bool
    n: int


class FunctionTarget(Target):
    """A density given as a batched function of x: log_prob(x) of shape (B,) for x (B, D); its
    score by autograd."""

    def __init__(self, log_prob: Callable[[Tensor], Tensor], dim: int, name: str):
        self.function = log_prob
        self.dim = dim
        self.name = name

    def _log_prob(self, x: Tensor) -> Tensor:
        return self.function(x)


class FittedSampler:
    """A trained sampler with its target: `sample`, `weighted_samples`, `log_z` and `save`;
    `budgets` says how long each training run took and why it stopped (`cds.training`)."""

    def __init__(
        self,
        sampler: Sampler,
        target: Target,
        checkpoint: bytes,
        log_z: LogZ,
        budgets: dict[str, dict[str, Any]] | None = None,
    ):
        self.sampler = sampler
        self.target = target
        self._checkpoint = checkpoint
        self.log_z = log_z
        self.budgets = budgets or {}

    @property
    def method(self) -> str:
        return self.sampler.method

    @property
    def nfe(self) -> int:
        """Network evaluations per sample."""
        return self.sampler.nfe

    @property
    def device(self) -> torch.device:
        """Where the sampler runs; generators passed to it must live there too."""
        return self.sampler.device

    def generator(self, seed: int) -> torch.Generator:
        """A generator on the sampler's device seeded with `seed` (same seed, same samples)."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples (n, D) on the sampler's device; the same seed gives the same samples."""
        return self.sampler.sample(n, generator)

    def weighted_samples(self, n: int, generator: torch.Generator | None = None) -> WeightedSamples:
        """n samples with valid log importance weights log w = log ρ(x) − log q(x) (so that
        E[w] = Z): −R of the SDE paths, or the deterministic-flow weights with exact Jacobians
        of a one-step CDDS or K-step SCDS map (docs/methods.md §6). A map that folds has no
        valid weights, nor does a K-step SCDS map in more dimensions than exact Jacobians allow
        (`cds.scoring.MAX_EXACT_DIM`): then this raises."""
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.seed()
        self.sampler._checked(n, generator)
        samples, log_weights, signs, exact = _weighted(self.sampler, self.target, n, generator)
        if not exact:
            raise ValueError(
                f"this {self.method} map has D = {self.target.dim} > {MAX_EXACT_DIM}: only a "
                "trace estimate of its log-determinants exists, not valid weights"
            )
        report = log_z_report(log_weights, None, det_signs=signs)
        if not report.get("weights_valid", True):
            raise ValueError(
                f"this {self.method} map folds (its Jacobian changes sign on "
                f"{report['folded_fraction']:.2%} of samples): its weights are not valid"
            )
        return WeightedSamples(samples, log_weights)

    def save(self, path: str | Path) -> Path:
        """Write the trained checkpoint to `path` (atomically); `cds.load_sampler(path)` reads
        it back (with `target=` for a density passed as an object, when the sampler needs it)."""
        return atomic_write(path, lambda fh: fh.write(self._checkpoint))


def as_target(
    log_prob: str | Target | Callable[[Tensor], Tensor],
    dim: int | None,
    device: torch.device = CPU,
) -> Target:
    """A `Target` for what `cds.fit` was given: a target name (built-in or
    'module.path:ClassName'), a copy of a target object (training moves it to the device), or
    a batched function with its dimension, checked on `device`."""
    if isinstance(log_prob, str):
        log_prob = get_target(log_prob)
    elif isinstance(log_prob, Target):
        log_prob = copy.deepcopy(log_prob)
    if isinstance(log_prob, Target):
        if dim is not None and dim != log_prob.dim:
            raise ValueError(f"dim = {dim}, but the target has dim {log_prob.dim}")
        return log_prob.to(device)
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a function or a Target, got {type(log_prob).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim = {dim!r}: a function needs its dimension, a positive integer")
    target = FunctionTarget(log_prob, dim, getattr(log_prob, "__name__", "density")).to(device)
    probe = torch.randn(4, dim, generator=torch.Generator().manual_seed(0)).to(device)
    value = target.log_prob(probe)
    if not isinstance(value, Tensor) or value.shape != (4,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"log_prob of a (4, {dim}) batch must have shape (4,), got {shape}")
    return target


def fit_params(
    target: Target,
    named: str | None = None,
    method: str = "cdds",
    preset: str | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Params:
    """The params `cds.fit` trains with: the preset (a built-in target's own unless given),
    then `overrides` (dotted keys, as `cds run --set`), the method and device, and the target:
    by its `named` name when it was given by name (rebuildable), else as an in-memory density
    fingerprinted by its values."""
    if preset is None and target.name in TARGETS:
        preset = target_preset(target.name)
    for key in overrides or {}:
        if key.split(".")[0] in ("target", "method"):
            raise ValueError(
                f"overrides[{key!r}]: the target and method are fit's own arguments (log_prob, "
                "method); pass a target with options as an object or 'module.path:ClassName'"
            )
    items = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    items.append(f"method={method}")
    if device is not None:
        items.append(f"device={device}")
    params = load_params(None, items, preset)
    recorded = {"name": named, "options": {}} if named is not None else _in_memory(target)
    return params.model_copy(update={"target": params.target.model_validate(recorded)})


def _in_memory(target: Target) -> dict[str, Any]:
    """The record of a density passed as an object: not rebuildable, so named `<in-memory>`,
    with a digest of its values on fixed probe points, so that a checkpoint of another density
    is never resumed."""
    probe = torch.randn(PROBE_POINTS, target.dim, generator=torch.Generator().manual_seed(0))
    values = target.log_prob(probe.to(target.device)).detach().double().cpu().numpy().tobytes()
    digest = hashlib.sha256(values).hexdigest()[:16]
    return {"name": IN_MEMORY_TARGET, "options": {"label": target.name, "values_sha256": digest}}


def fit(
    log_prob: str | Target | Callable[[Tensor], Tensor],
    dim: int | None = None,
    method: Literal["cdds", "scds"] = "cdds",
    preset: str | None = None,
    device: str | None = None,
    workdir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> FittedSampler:
    """Train a one-step sampler for `log_prob` and return it (module docstring).

    `log_prob` is a batched function of x (then give `dim`), a `cds.targets.Target`, or a
    target's name (built-in or 'module.path:ClassName', rebuilt by name when sampling). `method`:
    "cdds" distils a DIS teacher, "scds" trains one step-size-conditioned control. `preset`
    names a file of `cds.presets` (a built-in target picks its own; "posterior" starts from the
    density's Laplace approximation, for a unimodal posterior); `overrides` maps dotted
    params keys to values (`{"teacher.optim.iterations": 20000}`: a higher cap); `device`:
    auto, cpu, cuda or cuda:N (default: the params' `auto`). `workdir` keeps the checkpoints,
    so a fit resumes where it stopped; without it they live in a temporary directory."""
    if method not in ("cdds", "scds"):
        raise ValueError(f"method = {method!r}: expected 'cdds' or 'scds'")
    asked = device if device is not None else (overrides or {}).get("device", "auto")
    target = as_target(log_prob, dim, resolve_device(asked))
    named = log_prob if isinstance(log_prob, str) else None
    params = fit_params(target, named, method, preset, device, overrides)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation)
    probe = prior.sample(DENSITY_PROBE, seeding.generator(params.seed, seeding.DENSITY_PROBE))
    check_density(target, probe.to(target.device))  # as the target stage does, before training
    with _workdir(workdir) as root:
        student = root / "student.pt"
        options = {"progress": progress, "reuse_finished": True}
        budgets = {}
        if method == "scds":
            log_path = root / "student_log.jsonl"
            budgets["scds"] = train_scds(params, target, student, log_path=log_path, **options).stop
        else:
            teacher_path = root / "teacher.pt"
            budgets["teacher"] = train_teacher(params, target, teacher_path, **options).stop
            teacher, _ = load_teacher(teacher_path, run_device(params))
            payload = load_checkpoint(teacher_path)
            prior_map = recorded_prior_map(payload)
            bank = build_fragment_bank(params, teacher, target, progress, prior_map)
            budgets["cdds"] = train_student(
                params,
                target,
                teacher,
                payload["fingerprint"],
                student,
                bank,
                prior_map,
                **options,
            ).stop
        checkpoint = student.read_bytes()
        sampler = sampler_from_checkpoint(student, target=target, device=params.device)
    log_z = estimate_log_z(sampler, target, params)
    return FittedSampler(sampler, target, checkpoint, log_z, budgets)


def estimate_log_z(sampler: Sampler, target: Target, params: Params) -> LogZ:
    """log Z from `evaluation.n_samples` weighted samples of the one-step sampler, drawn on the
    evaluation seed's scoring stream."""
    n = params.evaluation.n_samples
    generator = seeding.generator(
        params.evaluation.seed, f"{seeding.SCORING}:fit", device=sampler.device
    )
    _, log_weights, signs, exact = _weighted(sampler, target, n, generator)
    report = log_z_report(log_weights, None, det_signs=signs)
    valid = exact and bool(report.get("weights_valid", True))

    def figure(key: str) -> float | None:
        value = report.get(key)
        return float(value) if valid and value is not None and math.isfinite(value) else None

    return LogZ(
        value=figure("log_Z_is"),
        std_error=figure("log_Z_is_se"),
        elbo=figure("elbo"),
        elbo_std_error=figure("elbo_se"),
        ess=figure("ess"),
        valid=valid,
        n=n,
    )


def _weighted(
    sampler: Sampler, target: Target, n: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    """Samples, log weights, the Jacobian signs (deterministic maps) and whether the weights
    are exact (`cds.scoring.sampler_weights`; a trace estimate is not)."""
    weighted = sampler_weights(sampler, target, n, generator)
    if weighted is None:
        raise ValueError("a multistep CDDS sampler re-noises: it has no importance weights")
    samples, log_weights, signs, estimator = weighted
    return samples, log_weights, signs, estimator in ("sde", "exact_logdet")


@contextmanager
def _workdir(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="cds-fit-") as tmp:
        yield Path(tmp)
