"""MLflow tracking: where runs go, and one run per pipeline run with a nested run per stage.

Defaults: tracking and registry in `sqlite:///<project>/mlflow.db`, artifacts in
`<project>/mlartifacts` (beside whichever SQLite file is used). The standard variables
MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI override them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cds.config import Params
from cds.pipeline.dvc_lock import lock_hashes
from cds.pipeline.layout import Layout
from cds.pipeline.stage_graph import STAGES, stage_params
from cds.pipeline.timings import read_timings


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


def _run_tags(params: Params, layout: Layout, tags: dict[str, str] | None) -> dict[str, str]:
    return {
        "git_commit": git_commit(layout.root),
        "target": params.target.name,
        "method": params.method,
        **(tags or {}),
    }


def start_pipeline_run(params: Params, layout: Layout, tags: dict[str, str] | None = None) -> str:
    """Open the pipeline run (tags and params logged) before any stage runs, so that the
    stages can log into nested runs of it while they train (`cds.pipeline.live_tracking`);
    `log_pipeline_run` completes it. Returns its id."""
    import mlflow

    configure(layout.root)
    exp = experiment_id(params.registry.experiment)
    with mlflow.start_run(
        experiment_id=exp,
        run_name=f"retrain-{params.target.name}",
        tags=_run_tags(params, layout, tags),
    ) as run:
        mlflow.log_params({k: str(v) for k, v in flatten(params.model_dump()).items()})
    mlflow.MlflowClient().update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def end_failed_run(run_id: str) -> None:
    """Mark a pipeline run whose stages failed (best effort: the stage's error is the news)."""
    import mlflow

    try:
        mlflow.MlflowClient().set_terminated(run_id, "FAILED")
    except Exception as err:
        print(f"could not mark MLflow run {run_id} FAILED: {err}", file=sys.stderr)


def _stage_run(experiment: str, parent: str, stage: str) -> str | None:
    """The nested run a stage logged live into under `parent`, if any."""
    import mlflow

    found = mlflow.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.stage = '{stage}'",
        output_format="list",
    )
    return found[0].info.run_id if found else None


def log_pipeline_run(
    params: Params,
    layout: Layout,
    statuses: dict[str, str],
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> str:
    """Log the finished pipeline: into the run `start_pipeline_run` opened (`run_id`) or a new
    one, a nested run per stage (the one the stage logged live into, when it did) with params,
    DVC output hashes, training curves, wall times, metrics and plots; returns the run id."""
    import mlflow

    client = mlflow.MlflowClient()
    raw = params.model_dump()
    hashes = lock_hashes(layout.root)
    metrics = json.loads(layout.metrics.read_text())
    # wall times of the stages this run executed (a cached stage's file is another run's)
    timings = {
        stage: read_timings(layout.root, stage) if statuses.get(stage) == "ran" else {}
        for stage in STAGES
    }
    exp = experiment_id(params.registry.experiment)
    mlflow.set_experiment(experiment_id=exp)  # nested runs inherit the active experiment
    run_tags = {**_run_tags(params, layout, tags), "weights_valid": str(metrics["weights_valid"])}
    opened = (
        mlflow.start_run(run_id=run_id)
        if run_id is not None
        else mlflow.start_run(experiment_id=exp, run_name=f"retrain-{params.target.name}")
    )
    with opened as parent:
        mlflow.set_tags(run_tags)
        mlflow.log_params({k: str(v) for k, v in flatten(raw).items()})
        mlflow.log_metrics(numeric(metrics))
        wall_times = {
            "train_seconds": timings["student"].get("train_seconds"),
            "teacher_train_seconds": timings["teacher"].get("train_seconds"),
            "sample_seconds": timings["evaluate"].get("student_K1.sample_seconds"),
        }
        mlflow.log_metrics({k: v for k, v in wall_times.items() if v is not None})
        mlflow.log_artifacts(str(layout.plots_dir), "plots")
        mlflow.log_artifact(str(layout.metrics))
        for stage in STAGES:
            live = _stage_run(exp, parent.info.run_id, stage)
            stage_tags = {
                **(tags or {}),
                "stage": stage,
                "dvc_status": statuses.get(stage, "unknown"),
                **{f"dvc.md5.{path}": md5 for path, md5 in hashes.get(stage, {}).items()},
            }
            opened_stage = (
                mlflow.start_run(run_id=live, nested=True)
                if live is not None
                else mlflow.start_run(run_name=stage, nested=True)
            )
            with opened_stage as child:
                mlflow.set_tags(stage_tags)
                listed = stage_params(raw, stage, layout.root / "dvc.yaml")
                mlflow.log_params({k: str(v) for k, v in flatten(listed).items()})
                mlflow.log_metrics({f"seconds.{k}": v for k, v in timings[stage].items()})
                if stage in ("teacher", "student") and live is None:
                    log = layout.teacher_log if stage == "teacher" else layout.student_log
                    _log_training_curve(client, child.info.run_id, log)
                elif stage == "evaluate":
                    mlflow.log_metrics(numeric(json.loads(layout.report.read_text())))
                    mlflow.log_artifacts(str(layout.eval_dir), "eval")
                elif stage == "target":
                    mlflow.log_artifact(str(layout.manifest))
        return parent.info.run_id
