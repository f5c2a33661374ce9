"""Registering the trained sampler in the MLflow model registry, behind a quality gate.

Every registration creates a new model version (versions are never overwritten), tagged with
the git commit, the method, the NFE, the gate's evidence (scale-free quality and log Z figures
with their standard errors), the checkpoint's md5 and the evaluation protocol it was scored
under. The alias `champion` moves to it only when the gate passes; a failed gate leaves the
alias where it was and tags the version `gate=failed` with the reason. Registering a checkpoint
that is already a version of the model (same md5) creates nothing.

The gate compares like with like: a candidate scored under another evaluation protocol than
the champion (n, reference seed, metric version, target and its options, method, NFE) is
refused with the differing fields named; it is not re-scored here. Users who change the
protocol on purpose register under a new model name (`registry.model_name`). The one exception
is new inputs: when only the content of the target's files changed (new observations in its
data file, an edited density module: scheduled retraining on new data), the champion describes
a density that no longer exists, so the candidate is judged on its own, as the first version
for the new inputs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

import cds
from cds.config import Params, RegistryParams
from cds.pipeline.metrics_schema import Role, keys, tagged_keys
from cds.provenance import INPUTS_DIR, named_strings
from cds.samplers import CHECKPOINT_ARTIFACT

CHAMPION = "champion"
#: Evidence the gate reads, and the shares of non-finite values it refuses beyond a limit.
EVIDENCE = keys(Role.EVIDENCE)
NONFINITE = keys(Role.NONFINITE)
#: Prefix of the protocol tags.
PROTOCOL_TAG = "protocol."
#: The protocol field that records the content of the target's files.
INPUTS_FIELD = PROTOCOL_TAG + "inputs_sha256"
#: Its name in versions registered by older cds (data files only, keyed by option name).
LEGACY_INPUTS_FIELD = PROTOCOL_TAG + "data_sha256"
#: Distributions every consumer of the pyfunc model needs: MLflow's pyfunc and the cds core (the
#: cds package itself ships inside the model).
CONSUMER_REQUIREMENTS = (
    "mlflow-skinny",
    "pandas",
    "torch",
    "numpy",
    "scipy",
    "pydantic",
    "pyyaml",
    "tqdm",
)
#: What a built-in target's data need at sampling time (`cds.extras`), beyond the above.
TARGET_REQUIREMENTS = {
    "logreg_cancer": ("scikit-learn",),
    "image": ("matplotlib", "pillow"),
}
MODEL_CODE = Path(cds.__file__).parent / "pyfunc_model.py"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    gate_passed: bool
    reason: str
    champion: str | None
    #: True when the checkpoint was already registered and no version was created.
    existing: bool = False


def model_name(registry: RegistryParams, target_name: str) -> str:
    """`registry.model_name`, or cds-<target> with characters MLflow URIs dislike replaced."""
    if registry.model_name:
        return registry.model_name
    return "cds-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", target_name).strip("-")


def _current(protocol: dict[str, str]) -> dict[str, str]:
    """A protocol with an older version's `data_sha256` read as `inputs_sha256` (the same
    "{}" where the target reads no files)."""
    if LEGACY_INPUTS_FIELD not in protocol or INPUTS_FIELD in protocol:
        return protocol
    renamed = {k: v for k, v in protocol.items() if k != LEGACY_INPUTS_FIELD}
    return {**renamed, INPUTS_FIELD: protocol[LEGACY_INPUTS_FIELD]}


def protocol_mismatch(candidate: dict[str, str], champion: dict[str, str]) -> list[str]:
    """The protocol fields on which two versions differ ("field: champion → candidate")."""
    candidate, champion = _current(candidate), _current(champion)
    return [
        f"{key}: {champion.get(key)!r} → {candidate.get(key)!r}"
        for key in sorted(set(candidate) | set(champion))
        if not _same(key, candidate.get(key), champion.get(key))
    ]


def _same(key: str, a: str | None, b: str | None) -> bool:
    """Equal protocol values; the inputs field compares the files' contents (an older cds
    keyed them by option name, this one by path)."""
    if key == INPUTS_FIELD and a is not None and b is not None:
        return sorted(json.loads(a).values()) == sorted(json.loads(b).values())
    return a == b


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _combined_error(registry: RegistryParams, *errors: float | None) -> float:
    """`registry.error_multiplier` times the larger standard error of the two estimates
    (unknown errors count as 0). Under one protocol both versions are scored against the same
    reference, floor and random streams, so their errors are positively correlated and the
    difference's error lies between the larger one and the independent √(a² + b²)."""
    return registry.error_multiplier * max((e for e in errors if _finite(e)), default=0.0)


def _quality_check(
    new: dict[str, Any], old: dict[str, Any], registry: RegistryParams
) -> tuple[bool, str] | None:
    """Sample quality as the ratio to the noise floor (scale-free): the candidate may be at
    most (1 + sinkhorn_tolerance) × the champion's ratio plus the ratios' Monte Carlo error."""
    a, b = new.get("sinkhorn_ratio"), old.get("sinkhorn_ratio")
    if not (_finite(a) and _finite(b)):
        return None
    limit = b * (1 + registry.sinkhorn_tolerance) + _combined_error(
        registry, new.get("sinkhorn_ratio_se"), old.get("sinkhorn_ratio_se")
    )
    ok = a <= limit
    return ok, f"sinkhorn/floor {a:.4g} {'<=' if ok else '>'} {limit:.4g}"


def _log_z_checks(
    new: dict[str, Any], old: dict[str, Any], registry: RegistryParams
) -> list[tuple[bool, str]]:
    """Weight-based checks, each within tolerance plus the estimates' Monte Carlo error:
    |Δlog Z| not larger (true log Z known), ELBO and IS log Z not lower, ESS not below
    (1 − ess_tolerance) × the champion's. Invalid weights fail against valid ones."""
    valid_new, valid_old = new.get("weights_valid"), old.get("weights_valid")
    if valid_new is False and valid_old is True:
        return [(False, "the candidate's importance weights are invalid, the champion's are not")]
    if not (valid_new and valid_old):  # no weights (None), or not both valid
        return []
    checks = []
    tol = registry.log_z_tolerance
    pairs = (
        ("|dlogZ|", "abs_dlogZ_is", "log_Z_is_se", -1),
        ("ELBO", "elbo", "elbo_se", 1),
        ("IS log Z", "log_Z_is", "log_Z_is_se", 1),
    )
    for label, key, se_key, better in pairs:
        a, b = new.get(key), old.get(key)
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            continue  # ±inf compare as numbers (an ELBO of −inf is the worst)
        slack = tol + _combined_error(registry, new.get(se_key), old.get(se_key))
        if better > 0:
            limit, ok = b - slack, a >= b - slack
            checks.append((ok, f"{label} {a:.4g} {'>=' if ok else '<'} {limit:.4g}"))
        else:
            limit, ok = b + slack, a <= b + slack
            checks.append((ok, f"{label} {a:.4g} {'<=' if ok else '>'} {limit:.4g}"))
    a, b = new.get("ess"), old.get("ess")
    if _finite(a) and _finite(b):
        limit = b * (1 - registry.ess_tolerance)
        ok = a >= limit
        checks.append((ok, f"ESS {a:.3g} {'>=' if ok else '<'} {limit:.3g}"))
    return checks


def gate(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    registry: RegistryParams,
    protocols: tuple[dict[str, str], dict[str, str]] | None = None,
) -> tuple[bool, str]:
    """Whether the candidate may take the alias, and why.

    - Its figures must be finite where present, and the target must have been finite on all
      but `registry.max_nonfinite_fraction` of the training paths and weighted samples; the
      first version then passes.
    - `protocols` (candidate's, champion's) must agree, or the candidate is refused; where only
      the target's inputs differ, the candidate is judged as a first version.
    - Every check that both versions allow must pass (`_quality_check`, `_log_z_checks`), and
      at least one must apply: the gate never promotes because nothing was comparable.
    - Invalid weights (a folding map) block a version only where the weights are all there is
      to compare (no exact samples); with exact samples the sample quality decides.
    """
    for key in EVIDENCE:
        value = candidate.get(key)
        if key.endswith("_se") or not isinstance(value, float):
            continue  # an infinite error bar only means "no information"
        # an ELBO of −inf is a sampler that puts mass where the target has none: the worst
        # value, but a value; NaN or +inf anywhere is a broken evaluation
        if math.isnan(value) or value == math.inf or (value == -math.inf and key != "elbo"):
            return False, f"{key} = {value} is not finite"
    for key in NONFINITE:
        value = candidate.get(key)
        if value is not None and value > registry.max_nonfinite_fraction:
            return False, (
                f"{key} = {value:.3g}: the target was not finite on more than "
                f"{registry.max_nonfinite_fraction:g} of the samples"
            )
    if champion is None:
        if candidate.get("weights_valid") is False:
            if not _finite(candidate.get("sinkhorn_ratio")):
                return False, "first version, but its importance weights (all there is) are invalid"
            return True, "first version (its weights are invalid: the map folds)"
        return True, "first version"
    if protocols is not None:
        differences = protocol_mismatch(*protocols)
        if differences and all(d.partition(":")[0] == INPUTS_FIELD for d in differences):
            passed, reason = gate(candidate, None, registry)
            return passed, f"the target's inputs changed since the champion: {reason} for them"
        if differences:
            return False, "evaluated under another protocol than the champion: " + "; ".join(
                differences
            )
    quality = _quality_check(candidate, champion, registry)
    checks = [quality] if quality is not None else []
    folded = candidate.get("weights_valid") is False and champion.get("weights_valid") is True
    if folded and quality is not None:
        # with exact samples the sample quality decides; the lost log Z is reported
        checks.append((True, "weights invalid (the map folds): log Z not compared"))
    else:
        checks += _log_z_checks(candidate, champion, registry)
    if not checks:
        return False, "nothing comparable with the champion (no quality or valid weights)"
    reason = "; ".join(text for _, text in checks)
    return all(ok for ok, _ in checks), reason


def evaluation_protocol(report: dict[str, Any]) -> dict[str, str]:
    """The evaluation protocol of a report.json (`protocol`) as string tags."""
    return {
        PROTOCOL_TAG + key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in report["protocol"].items()
    }


def _tag_value(tags: dict[str, str], key: str) -> float | bool | None:
    value = tags.get(key)
    if value in (None, "", "None"):
        return None
    if value in ("True", "False"):
        return value == "True"
    return float(value)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_requirements(bundle: TargetBundle) -> list[str]:
    """Exact pins, as installed here, of what sampling the model needs (local tags like +cpu
    dropped, so the CPU wheel index or PyPI can satisfy them): the core, and the target's own
    requirements where the sampler needs its target."""
    return [
        f"{name}=={importlib.metadata.version(name).split('+')[0]}"
        for name in (*CONSUMER_REQUIREMENTS, *bundle.requirements)
    ]


@dataclass(frozen=True)
class TargetBundle:
    """What a registered model carries so that its sampler finds its target in any directory
    and on any machine: the user's density module (a file or package from `inputs/`, shipped
    as a code path, so it is importable wherever the model loads), the data files its options
    name (shipped as artifacts, the options pointed at them when the model loads) and the
    distributions the target needs. Empty for a sampler that needs no target (CDDS)."""

    code: tuple[Path, ...] = ()
    #: the option's value as written in params (a path relative to the project) → the file
    files: dict[str, Path] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()

    @classmethod
    def of(cls, params: Params, root: Path) -> TargetBundle:
        if params.method == "cdds":
            return cls()
        name, options = params.target.name, params.target.options
        code: tuple[Path, ...] = ()
        if ":" in name:
            top = name.partition(":")[0].split(".")[0]
            inputs = root / INPUTS_DIR
            code = tuple(p for p in (inputs / f"{top}.py", inputs / top) if p.exists())
        files = {
            value: root / value
            for _, value in named_strings(options)
            if value.strip() and (root / value).is_file()
        }
        return cls(code, files, TARGET_REQUIREMENTS.get(name, ()))

    def artifacts(self) -> dict[str, str]:
        """Artifact name → file, for the model's data files."""
        return {f"target_file_{i}": str(path) for i, path in enumerate(self.files.values())}

    def model_config(self) -> dict[str, str]:
        """Option value → artifact name, for `cds.pyfunc_model` to point the options at."""
        return {value: f"target_file_{i}" for i, value in enumerate(self.files)}


def signature(dim: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("long", "n"), ColSpec("long", "seed")]),
        outputs=Schema([ColSpec("float", f"x{i}") for i in range(dim)]),
    )


def _existing_version(client: Any, name: str, md5: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get("checkpoint_md5") == md5), None)


def _champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@contextmanager
def _registry_lock(uri: str) -> Iterator[None]:
    """Serialise check-then-register on one SQLite registry (projects and sweep cells may
    share one), so that a checkpoint is registered once and the champion is read and moved by
    one process at a time. A registry server serialises nothing here: run one registering
    process per model name against it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with FileLock(uri.removeprefix("sqlite:///") + ".register.lock", is_singleton=True):
        yield


def register_sampler(
    run_id: str,
    checkpoint: Path,
    metrics: dict[str, Any],
    registry: RegistryParams,
    extra_tags: dict[str, str],
    protocol: dict[str, str],
    bundle: TargetBundle | None = None,
) -> Registration:
    """Log the sampler as a pyfunc model under `run_id`, register a new version and apply the
    gate. `metrics` is the evaluation stage's metrics.json, `protocol` its evaluation protocol
    as tags (`evaluation_protocol`), `bundle` what the model carries for its target."""
    import mlflow
    import pandas as pd

    bundle = bundle or TargetBundle()
    with _registry_lock(mlflow.get_registry_uri()):
        client = mlflow.MlflowClient()
        name = model_name(registry, metrics["target"])
        md5 = file_md5(checkpoint)
        champion = _champion(client, name)
        existing = _existing_version(client, name, md5)
        if existing is not None:
            return Registration(
                name,
                str(existing.version),
                existing.tags.get("gate") == "passed",
                f"checkpoint already registered as version {existing.version}",
                str(champion.version) if champion else None,
                existing=True,
            )
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
            staged = Path(tmp) / CHECKPOINT_ARTIFACT
            shutil.copyfile(checkpoint, staged)
            info = mlflow.pyfunc.log_model(
                name="sampler",
                python_model=str(MODEL_CODE),
                artifacts={"sampler": str(staged), **bundle.artifacts()},
                code_paths=[str(Path(cds.__file__).parent), *map(str, bundle.code)],
                signature=signature(int(metrics["dim"])),
                input_example=pd.DataFrame({"n": [2], "seed": [0]}),
                pip_requirements=pip_requirements(bundle),
                # the registrant's own params named this user target: its model may import it
                model_config={
                    "trust_target_code": ":" in protocol.get(PROTOCOL_TAG + "target", ""),
                    "device": "cpu",  # consumers choose another when they load it
                    "target_files": bundle.model_config(),
                },
            )
        candidate = {key: metrics.get(key) for key in (*EVIDENCE, *NONFINITE)}
        old, protocols = None, None
        if champion is not None:
            old = {key: _tag_value(champion.tags, key) for key in EVIDENCE}
            champion_protocol = {
                key: value for key, value in champion.tags.items() if key.startswith(PROTOCOL_TAG)
            }
            protocols = (protocol, champion_protocol)
        passed, reason = gate(candidate, old, registry, protocols)
        tags = {
            **extra_tags,
            **protocol,
            "method": metrics["method"],
            "checkpoint_md5": md5,
            "gate": "passed" if passed else "failed",
            "gate_reason": reason,
            **{key: str(metrics.get(key)) for key in tagged_keys()},
        }
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        if passed:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        new_champion = version.version if passed else (champion.version if champion else None)
        champion_version = None if new_champion is None else str(new_champion)
        return Registration(name, str(version.version), passed, reason, champion_version)
