"""Registering the trained sampler in the MLflow model registry, behind a quality gate.

Every registration creates a new model version (versions are never overwritten), tagged with
the git commit, the method, the NFE, the headline metrics and the checkpoint's md5. The alias
`champion` moves to it only when the gate passes; a failed gate leaves the alias where it was
and tags the version `gate=failed` with the reason. Registering a checkpoint that is already a
version of the model (same md5) creates nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cds
from cds.config import RegistryParams
from cds.serving import CHECKPOINT_ARTIFACT

CHAMPION = "champion"
#: Metrics copied onto each version as tags (what the gate compares).
GATED = ("sinkhorn", "abs_dlogZ_is")
TAGGED = (*GATED, "sinkhorn_ratio", "sinkhorn_vs_teacher", "ess", "nfe")
#: Distributions a consumer of the pyfunc model needs (the cds package itself ships with it).
CONSUMER_REQUIREMENTS = (
    "mlflow-skinny",
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "pydantic",
    "pyyaml",
    "tqdm",
    "sqlalchemy",
    "alembic",
)
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


def gate(
    candidate: dict[str, float | None],
    champion: dict[str, float | None] | None,
    registry: RegistryParams,
) -> tuple[bool, str]:
    """Whether the candidate may take the alias: its paper Sinkhorn is at most (1 + tol)× the
    champion's, and its |Δlog Z| (where both know it) at most the champion's + tol. The first
    version passes when its metrics are finite."""
    for key in GATED:
        value = candidate.get(key)
        if value is not None and not math.isfinite(value):
            return False, f"{key} = {value} is not finite"
    if champion is None:
        return True, "first version"
    reasons = []
    new, old = candidate.get("sinkhorn"), champion.get("sinkhorn")
    if new is not None and old is not None:
        limit = old * (1 + registry.sinkhorn_tolerance)
        ok = new <= limit
        reasons.append(f"sinkhorn {new:.4g} {'<=' if ok else '>'} {limit:.4g}")
        if not ok:
            return False, "; ".join(reasons)
    new, old = candidate.get("abs_dlogZ_is"), champion.get("abs_dlogZ_is")
    if new is not None and old is not None:
        limit = old + registry.log_z_tolerance
        ok = new <= limit
        reasons.append(f"|dlogZ| {new:.4g} {'<=' if ok else '>'} {limit:.4g}")
        if not ok:
            return False, "; ".join(reasons)
    return True, "; ".join(reasons) or "nothing comparable"


def _tag_float(tags: dict[str, str], key: str) -> float | None:
    value = tags.get(key)
    return None if value in (None, "", "None") else float(value)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_requirements() -> list[str]:
    """Exact pins of the consumer requirements as installed here (local tags like +cpu
    dropped, so the CPU wheel index or PyPI can satisfy them)."""
    return [
        f"{name}=={importlib.metadata.version(name).split('+')[0]}"
        for name in CONSUMER_REQUIREMENTS
    ]


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


def register_sampler(
    run_id: str,
    checkpoint: Path,
    metrics: dict[str, Any],
    registry: RegistryParams,
    extra_tags: dict[str, str],
) -> Registration:
    """Log the sampler as a pyfunc model under `run_id`, register a new version and apply the
    gate. `metrics` is the evaluation stage's metrics.json."""
    import mlflow
    import pandas as pd

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
            artifacts={"sampler": str(staged)},
            code_paths=[str(Path(cds.__file__).parent)],
            signature=signature(int(metrics["dim"])),
            input_example=pd.DataFrame({"n": [2], "seed": [0]}),
            pip_requirements=pip_requirements(),
        )
    candidate = {key: metrics.get(key) for key in GATED}
    champion_metrics = {key: _tag_float(champion.tags, key) for key in GATED} if champion else None
    passed, reason = gate(candidate, champion_metrics, registry)
    tags = {
        **extra_tags,
        "method": metrics["method"],
        "checkpoint_md5": md5,
        "gate": "passed" if passed else "failed",
        "gate_reason": reason,
        **{key: str(metrics.get(key)) for key in TAGGED},
    }
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    if passed:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    new_champion = version.version if passed else (champion.version if champion else None)
    champion_version = None if new_champion is None else str(new_champion)
    return Registration(name, str(version.version), passed, reason, champion_version)
