"""Validated parameters (params.yaml), with pydantic.

Every key is either consumed or rejected (docs/methods.md §12, pitfall 4): models forbid unknown
keys, and `load_params` turns pydantic's errors into one `ParamsError` that names each offending
key and value, before any expensive work starts. Defaults are those of docs/methods.md §10 except
where the embedded default budget says otherwise.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cds.devices import DEVICE_PATTERN
from cds.networks import ACTIVATIONS
from cds.targets.catalog import IN_MEMORY_TARGET, TARGETS

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ParamsError(ValueError):
    """Invalid parameters; the message names every bad key and its value."""


class _Strict(BaseModel):
    """Unknown keys, values of the wrong kind (a boolean for a number, a string for a float)
    and non-finite floats are all errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TargetParams(_Strict):
    """Which density to sample: a registry name or `module.path:ClassName`, with options."""

    name: str = "gmm9"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        module, _, attribute = name.partition(":")
        user = all(part.isidentifier() for part in module.split(".")) and attribute.isidentifier()
        if name not in TARGETS and not user and name != IN_MEMORY_TARGET:
            raise ValueError(
                f"unknown target {name!r}; valid: {', '.join(TARGETS)} or 'module.path:ClassName'"
            )
        return name


class SDEParams(_Strict):
    """VP schedule: linear β from beta_max (t = 0) to beta_min (t = T), and the prior: N(0, I)
    ("standard") or the target's Laplace approximation ("laplace": the samplers work in its
    whitened coordinates, for unimodal posteriors; docs/methods.md §1, `cds.preconditioning`)."""

    beta_min: PositiveFloat = 0.1
    beta_max: PositiveFloat = 10.0
    T: PositiveFloat = 1.0
    prior: Literal["standard", "laplace"] = "standard"
    prior_truncation: PositiveFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SDEParams:
        if self.beta_min > self.beta_max:
            raise ValueError(
                f"beta_min = {self.beta_min} must not exceed beta_max = {self.beta_max}"
            )
        return self


class NetworkParams(_Strict):
    """Main network of docs/methods.md §2: `depth` linear layers of `width` units."""

    width: PositiveInt = 64
    depth: Annotated[int, Field(ge=2)] = 4
    activation: str = "gelu"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str) -> str:
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
        return name


class ClipParams(_Strict):
    """Clamp schedule for c_m and c_s: `initial`, multiplied by `factor` at each milestone."""

    initial: PositiveFloat = 10.0
    factor: PositiveFloat = 5.0
    milestones: list[PositiveInt] = Field(default_factory=lambda: [200, 400])

    def value_at(self, iteration: int) -> float:
        """The clip value in force at a (0-based) iteration."""
        return self.initial * self.factor ** sum(iteration >= m for m in self.milestones)


class OptimParams(_Strict):
    """Adam with step decay, gradient clipping and the EMA of docs/methods.md §10."""

    iterations: PositiveInt = 20_000
    batch_size: Annotated[int, Field(ge=2)] = 512
    lr: PositiveFloat = 5e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-7
    lr_decay_every: PositiveInt = 100
    lr_final_factor: Annotated[float, Field(gt=0, le=1)] = 0.02
    grad_clip: PositiveFloat = 1.0
    ema_window: PositiveInt = 1500
    ema_every: PositiveInt = 5
    checkpoint_every: PositiveInt = 250


class StoppingParams(_Strict):
    """When training ends (docs/methods.md §10, "Budgets"). "fixed": after `optim.iterations`,
    the LR decaying over the whole run and the EMA over its last `optim.ema_window`. "plateau":
    `optim.iterations` is a cap; the LR stays at `optim.lr` while a validation of the live
    model (on draws of its own stream, the same at every check, no exact samples) is run every
    `check_every` iterations, until `patience` checks in a row bring no gain on any of its
    figures (after at least `min_iterations`); then the weights and optimizer state of the last
    check with a gain come back and a cool-down of `cooldown` iterations decays the LR by
    `optim.lr_final_factor` with the EMA over its last `optim.ema_window`. A run that reaches
    cap − cooldown cools down there. A check that finds the run diverged (a non-finite figure,
    most iterations since the last check skipped as non-finite, or after `min_iterations` an
    error grown `divergence_factor`-fold over its best) also brings back the last check with a
    gain (or the start) and multiplies the LR by `backoff` from then on; the divergence after
    `max_backoffs` of these starts the cool-down instead, at one more back-off."""

    rule: Literal["fixed", "plateau"] = "plateau"
    check_every: PositiveInt = 250
    patience: PositiveInt = 3
    min_iterations: Annotated[int, Field(ge=0)] = 1000
    cooldown: PositiveInt = 500
    backoff: Annotated[float, Field(gt=0, lt=1)] = 0.5
    max_backoffs: Annotated[int, Field(ge=0)] = 4
    divergence_factor: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 3.0
    #: Paths (teacher, SCDS) or held-out fragment paths (CDDS) each validation draws.
    validation_samples: Annotated[int, Field(ge=16)] = 2000


def _check_budget(optim: OptimParams, stopping: StoppingParams, section: str) -> None:
    """A plateau run needs room for its cool-down, and its EMA within it."""
    if stopping.rule != "plateau":
        return
    if stopping.cooldown >= optim.iterations:
        raise ValueError(
            f"{section}.stopping.cooldown = {stopping.cooldown} must be below the cap "
            f"{section}.optim.iterations = {optim.iterations} (or set "
            f"{section}.stopping.rule=fixed for a fixed budget)"
        )
    if optim.ema_window > stopping.cooldown:
        raise ValueError(
            f"{section}.optim.ema_window = {optim.ema_window} must not exceed "
            f"{section}.stopping.cooldown = {stopping.cooldown} (the EMA runs in the cool-down)"
        )


class TeacherParams(_Strict):
    """DIS teacher (docs/methods.md §3)."""

    n_steps: PositiveInt = 128
    network: NetworkParams = NetworkParams()
    clip: ClipParams = ClipParams()
    #: Up to 10,000 iterations, ending when the validation ELBO and ESS stop improving
    #: (gmm9's preset keeps its measured fixed 1,500; docs/decisions.md §6, §31).
    optim: OptimParams = OptimParams(iterations=10_000, ema_window=300)
    stopping: StoppingParams = StoppingParams()
    eval_every: PositiveInt = 500
    eval_samples: PositiveInt = 2000

    @model_validator(mode="after")
    def _budget(self) -> TeacherParams:
        _check_budget(self.optim, self.stopping, "teacher")
        return self


class CDDSParams(_Strict):
    """Consistency distillation of the teacher (docs/methods.md §4)."""

    n_fine: PositiveInt = 128
    #: 5 coarse points (K ≤ 4), not the paper's 18: with 4 pairs the boundary condition reaches
    #: τ = T in 4 bootstrap links instead of 17. At 30,000 iterations on gmm9 the one-step
    #: student is 1.19× the teacher with 5 points; 18 points diverged (cdds_quality.py).
    n_coarse: Annotated[int, Field(ge=2)] = 5
    network: NetworkParams = NetworkParams()
    #: pseudo-Huber: at lr 5e-3 and 100,000 iterations on gmm9, 1.108× the teacher (1.138× at
    #: n = 20,000), |Δlog Z| 0.004, ESS 0.88, no Jacobian sign flips; MSE 1.115× (1.166×).
    loss: Literal["mse", "pseudo_huber"] = "pseudo_huber"
    target_network: Literal["stopgrad", "ema"] = "stopgrad"
    target_ema_decay: Annotated[float, Field(gt=0, lt=1)] = 0.999
    #: "bank" (default): pairs drawn from the fragment stage's bank, about 7× less CPU than
    #: "online" at equal quality (docs/decisions.md); "refresh" rebuilds it every refresh_every.
    fragments: Literal["online", "bank", "refresh"] = "bank"
    #: "shared": one pair index per batch (paper); "all": every pair of every path.
    pair_sampling: Literal["shared", "all"] = "shared"
    bank_size: PositiveInt = 262_144
    refresh_every: PositiveInt = 500
    #: 100,000 iterations at lr 5e-3: lr 2e-3 gives 1.18× the teacher on gmm9 (1.26× at
    #: n = 20,000); 150,000 iterations with MSE 1.096× (1.141×) (docs/decisions.md,
    #: cdds_quality.json). The lr is per target: on mw54 lr 5e-3 oscillates (1.57×) and lr 3e-3
    #: gives 1.14×, which on gmm9 gives 1.19× (1.13× / 1.16× at 200,000 iterations); set 3e-3
    #: there. logreg_cancer's preset sets 2e-3 (docs/decisions.md §34).
    optim: OptimParams = OptimParams(
        iterations=100_000, lr=5e-3, ema_window=300, checkpoint_every=2500
    )
    #: Ends when the distillation error on held-out teacher paths stops improving.
    stopping: StoppingParams = StoppingParams(
        check_every=2500, min_iterations=10_000, cooldown=10_000
    )
    eval_every: PositiveInt = 20_000
    eval_samples: PositiveInt = 2000

    @model_validator(mode="after")
    def _coarse_within_fine(self) -> CDDSParams:
        if self.n_coarse > self.n_fine + 1:
            raise ValueError(
                f"n_coarse = {self.n_coarse} must be at most n_fine + 1 = {self.n_fine + 1}"
            )
        if self.fragments != "online" and self.bank_size < self.n_coarse - 1:
            raise ValueError(
                f"bank_size = {self.bank_size} must be at least n_coarse - 1 = "
                f"{self.n_coarse - 1}: every coarse pair needs rows in the fragment bank"
            )
        _check_budget(self.optim, self.stopping, "cdds")
        return self


class SCDSParams(_Strict):
    """Self-consistent diffusion sampler trained from scratch (docs/methods.md §5)."""

    n_steps: PositiveInt = 128
    network: NetworkParams = NetworkParams()
    clip: ClipParams = ClipParams()
    lambda_s: Annotated[float, Field(ge=0)] = 1.0
    lambda_sc: Annotated[float, Field(ge=0)] = 1.0
    #: "joint": one Adam step on λ_S·L_S + λ_SC·L_SC (paper, Algorithm 2); "alternating": the
    #: authors' implementation, one step on each in turn.
    update: Literal["joint", "alternating"] = "joint"
    #: Further Adam steps per iteration on λ_SC·L_SC alone, each on fresh (d, t) pairs from the
    #: iteration's detached states: one network evaluation with gradient on B states each
    #: (fine_ode; half_steps adds two without), against the ~2N·B of the sampling loss, so the
    #: shortcut gets more updates at little cost. Default 32 with fine_ode, ramped in over the
    #: first quarter (docs/decisions.md: gmm9 one step 1.22× the teacher at 1500 iterations,
    #: stable at 300; the paper has 0).
    sc_extra_steps: Annotated[int, Field(ge=0)] = 32
    #: Curriculum for those extra steps: their number rises linearly from 0 at the first
    #: iteration to sc_extra_steps at this fraction of the iterations (of a fixed budget; of
    #: stopping.min_iterations under the plateau rule, so that the ramp is over before the run
    #: can stop), so the shortcut is not pulled hard towards the ODE of a sampler that is not
    #: trained yet. 0: all from the start.
    sc_extra_ramp: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.25
    #: Curriculum over step sizes: the half-step level j ∈ {0, …, L−1} of the self-consistency
    #: pairs is drawn with probability ∝ 2^(level_bias·j). 0 is uniform (docs/methods.md §5); 1
    #: draws each step size in proportion to its size, so the one-step level is trained most
    #: often.
    level_bias: Annotated[float, Field(ge=-4, le=4, allow_inf_nan=False)] = 0.0
    #: The self-consistency target for a step 2d from x_t. "half_steps": two PF-ODE steps of d
    #: with the stop-gradient network (docs/methods.md §5 (c), the paper), on SDE states.
    #: "fine_ode": the state 2d later on a PF-ODE path integrated at the base step h₀ with the
    #: stop-gradient network (B paths per iteration, states and targets from them): each shortcut
    #: learns the sampler's own fine ODE directly instead of bootstrapping through the levels
    #: below it.
    sc_target: Literal["half_steps", "fine_ode"] = "fine_ode"
    #: Up to 10,000 iterations, ending when the self-consistency error and the N-step ELBO
    #: stop improving.
    optim: OptimParams = OptimParams(iterations=10_000, ema_window=300)
    stopping: StoppingParams = StoppingParams()

    @field_validator("n_steps")
    @classmethod
    def _power_of_two(cls, n: int) -> int:
        if n & (n - 1):
            raise ValueError(f"must be a power of two, got {n}")
        return n

    @model_validator(mode="after")
    def _budget(self) -> SCDSParams:
        _check_budget(self.optim, self.stopping, "scds")
        return self


class EvaluationParams(_Strict):
    """Final evaluation: the size of each exact reference set (validation and test) and of
    every scored sample set, and the root seed of the evaluation's random streams
    (`cds.seeding`): the same seed gives every version of a model the same exam."""

    n_samples: Annotated[int, Field(ge=10)] = 6000
    seed: Annotated[int, Field(ge=0, lt=2**63, strict=True)] = 1
    #: Independent exact-vs-exact pairs averaged for the metric's noise floor.
    floor_repeats: PositiveInt = 3


class RegistryParams(_Strict):
    """Registration of the final sampler in the MLflow model registry, and its quality gate
    (README: Quality gate). A new version takes the `champion` alias only if it was evaluated
    under the champion's protocol and, on every figure both versions have, it is no worse
    than the champion within the tolerance plus `error_multiplier` combined standard errors:
    its Sinkhorn/floor ratio at most (1 + sinkhorn_tolerance) × the champion's; its |Δlog Z|
    at most, and its ELBO and IS log Z at least, the champion's ∓ log_z_tolerance; its ESS at
    least (1 − ess_tolerance) × the champion's; its weights valid where the champion's are."""

    #: Registered model name; None means "cds-<target name>".
    model_name: str | None = None
    experiment: str = "cds"
    sinkhorn_tolerance: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.05
    log_z_tolerance: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.05
    ess_tolerance: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.5
    #: Largest share of training paths or weighted samples on which the target may be
    #: non-finite (NaN or +inf); above it no version passes the gate.
    max_nonfinite_fraction: Annotated[float, Field(ge=0, le=0.1)] = 1e-3
    #: How many combined standard errors a difference may exceed the tolerance by.
    error_multiplier: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] = 2.0

    @field_validator("model_name")
    @classmethod
    def _non_empty(cls, name: str | None) -> str | None:
        if name is not None and (not name.strip() or "/" in name or ":" in name):
            raise ValueError("must be a non-empty name without '/' or ':' (MLflow's rule), or null")
        return name


class Params(_Strict):
    """The whole params.yaml."""

    #: Root seed of every training stream (`cds.seeding`).
    seed: Annotated[int, Field(ge=0, lt=2**63, strict=True)] = 0
    #: Where training and evaluation run: auto (CUDA when torch sees it, else the CPU), cpu,
    #: cuda or cuda:N (`cds.devices`). CPU and CUDA random streams differ.
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    #: Which student the pipeline trains and registers (the DIS teacher is always trained: it
    #: is the baseline, and CDDS distils it).
    method: Literal["cdds", "scds"] = "cdds"
    target: TargetParams = TargetParams()
    sde: SDEParams = SDEParams()
    teacher: TeacherParams = TeacherParams()
    cdds: CDDSParams = CDDSParams()
    scds: SCDSParams = SCDSParams()
    evaluation: EvaluationParams = EvaluationParams()
    registry: RegistryParams = RegistryParams()


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameters in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if isinstance(value, dict) and e["type"] == "value_error":
            # a check across a section's fields: its message names the fields and values
            lines.append(f"  {key}: {msg.removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key} = {value!r}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "<dict>") -> Params:
    """Validate a parsed params mapping; raise `ParamsError` naming each bad key and value."""
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(err, source)) from None


def set_by_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested mapping, creating intermediate mappings."""
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ParamsError(f"cannot set {dotted!r}: {key!r} is not a mapping")
    node[keys[-1]] = value


def merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` laid over `defaults` key by key at every depth (a mapping in `given` replaces
    nothing it does not name)."""
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but reading `1e-3` as a number (YAML 1.2) rather than a string
    (YAML 1.1 needs a dot: `1.0e-3`), as DVC's own YAML parser does."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse params YAML (see `_YAMLLoader`)."""
    return yaml.load(text, Loader=_YAMLLoader)


def with_preset(raw: dict[str, Any], preset: str) -> dict[str, Any]:
    """`raw` (complete params) with `preset` laid over it, after undoing the own preset of
    `raw`'s target (`cds.presets.base_preset_values`): each key that preset sets and that still
    holds its value there returns to the embedded default, so nothing of the last target's
    tuning carries over to another target, while what a project set for itself (a smoke budget,
    say) stays."""
    from cds.presets import PresetError, base_preset_values, read_preset

    try:
        layer = read_preset(preset)
        undone = base_preset_values(raw["target"]["name"])
    except PresetError as err:
        raise ParamsError(str(err)) from None
    defaults = Params().model_dump(mode="json")
    out = copy.deepcopy(raw)
    for path, value in undone.items():
        here, default = out, defaults
        for part in path:
            here, default = here[part], default[part]
        if here == value:
            set_by_path(out, ".".join(path), default)
    return merged(out, layer)


def load_params(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    preset: str | None = None,
) -> Params:
    """Read params.yaml (or the defaults when `path` is None), lay the `preset` over it
    (`cds.presets`), apply `key=value` overrides (values parsed as YAML), and validate.

    A file or override that names some keys of a section keeps the embedded defaults of the
    others: both are laid over the complete defaults, so `cdds.optim.iterations=N` keeps CDDS's
    own lr and EMA window instead of falling back to those of a bare optimizer section."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"params file {str(path)!r} does not exist")
        try:
            raw = read_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ParamsError(f"params file {str(path)!r} is not valid YAML: {err}") from None
        source = str(path)
        if raw is None:
            raise ParamsError(
                f"params file {str(path)!r} is empty: write the keys to change, or pass no "
                "--params to use the project's params.yaml"
            )
        if not isinstance(raw, dict):
            return parse_params(raw, source)  # the error names the file
    raw = merged(Params().model_dump(mode="json"), raw)
    if preset is not None:
        raw = with_preset(raw, preset)
        source = f"{source} with preset {preset!r}"
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"override {item!r} must look like key.path=value")
        try:
            parsed = read_yaml(value)
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ParamsError(
                f"override {item!r}: the value is not valid YAML ({problem})"
            ) from None
        set_by_path(raw, key.strip(), parsed)
    if overrides:
        source = f"{source} with overrides {overrides}"
    return parse_params(raw, source)
