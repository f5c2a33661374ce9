"""MLflow tracking: where runs go, and one run per pipeline run with a nested run per stage.

Defaults: tracking and registry in `sqlite:///<project>/mlflow.db`, artifacts in
`<project>/mlartifacts` (beside whichever SQLite file is used). The standard variables
MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI override them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from cds.config import Params
from pipelines.dvc import lock_hashes
from pipelines.layout import STAGES, Layout

#: Params sections each stage depends on (what its nested run logs as params).
STAGE_SECTIONS = {
    "target": ("target", "evaluation"),
    "teacher": ("seed", "target", "sde", "teacher"),
    "fragments": ("method", "cdds"),
    "student": ("seed", "method", "cdds", "scds"),
    "evaluate": ("evaluation",),
}


def project_store(root: Path) -> str:
    """The project's own SQLite tracking and registry store."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def configure(root: Path) -> str:
    """Point MLflow at MLFLOW_TRACKING_URI if set, else at the project's store; returns it."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or project_store(root)
    mlflow.set_tracking_uri(uri)  # note: this also exports MLFLOW_TRACKING_URI
    return uri


def experiment_id(name: str) -> str:
    """The experiment's id, creating it if needed. With a SQLite store, its artifacts go to
    `mlartifacts/<name>` beside the database file (never relative to the working directory);
    a tracking server chooses its own artifact root."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        location = (database.parent / "mlartifacts" / name).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def git_commit(root: Path) -> str:
    """HEAD's commit, suffixed "-dirty" with uncommitted changes to tracked files other than
    dvc.lock; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # dvc.lock is the run's own output, not a code change
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists are kept as JSON strings."""
    if not isinstance(tree, dict):
        return {prefix: json.dumps(tree) if isinstance(tree, list) else tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def numeric(tree: dict[str, Any]) -> dict[str, float]:
    """The finite-or-not numbers of a nested dict, flattened (booleans and strings dropped)."""
    return {
        key: float(value)
        for key, value in flatten(tree).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _log_training_curve(client: Any, run_id: str, path: Path) -> None:
    """Periodic training evaluations as step metrics, in one batch."""
    from mlflow.entities import Metric

    metrics = [
        Metric(key, value, 0, int(record["iteration"]))
        for record in _read_jsonl(path)
        for key, value in numeric(record).items()
        if key != "iteration"
    ]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def log_pipeline_run(
    params: Params,
    layout: Layout,
    statuses: dict[str, str],
    tags: dict[str, str] | None = None,
) -> str:
    """One parent run for the pipeline run and a nested run per stage (params, DVC output
    hashes, training curves, metrics, plots); returns the parent run id."""
    import mlflow

    client = mlflow.MlflowClient()
    raw = params.model_dump()
    hashes = lock_hashes(layout.root)
    metrics = json.loads(layout.metrics.read_text())
    exp = experiment_id(params.registry.experiment)
    mlflow.set_experiment(experiment_id=exp)  # nested runs inherit the active experiment
    run_tags = {
        "git_commit": git_commit(layout.root),
        "target": metrics["target"],
        "method": params.method,
        "weights_valid": str(metrics.get("weights_valid")),
        **(tags or {}),
    }
    with mlflow.start_run(
        experiment_id=exp, run_name=f"retrain-{metrics['target']}", tags=run_tags
    ) as parent:
        mlflow.log_params({k: str(v) for k, v in flatten(raw).items()})
        mlflow.log_metrics(numeric(metrics))
        mlflow.log_artifacts(str(layout.plots_dir), "plots")
        mlflow.log_artifact(str(layout.metrics))
        for stage in STAGES:
            stage_tags = {
                **(tags or {}),
                "stage": stage,
                "dvc_status": statuses.get(stage, "unknown"),
                **{f"dvc.md5.{path}": md5 for path, md5 in hashes.get(stage, {}).items()},
            }
            with mlflow.start_run(run_name=stage, nested=True, tags=stage_tags) as child:
                mlflow.log_params(
                    {
                        k: str(v)
                        for section in STAGE_SECTIONS[stage]
                        for k, v in flatten({section: raw[section]}).items()
                    }
                )
                if stage == "teacher":
                    _log_training_curve(client, child.info.run_id, layout.teacher_log)
                elif stage == "student":
                    _log_training_curve(client, child.info.run_id, layout.student_log)
                elif stage == "evaluate":
                    mlflow.log_metrics(numeric(json.loads(layout.report.read_text())))
                    mlflow.log_artifacts(str(layout.eval_dir), "eval")
                elif stage == "target":
                    mlflow.log_artifact(str(layout.manifest))
        return parent.info.run_id
