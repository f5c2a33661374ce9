"""The registration step: log the pipeline run to MLflow and register the student behind the
quality gate. Shared by the `retrain` flow and `cds stage register`."""

from __future__ import annotations

import json
from typing import Any

from cds.config import Params
from cds.pipeline.layout import Layout
from cds.pipeline.metrics_schema import Role, keys
from cds.pipeline.model_registry import TargetBundle, evaluation_protocol, register_sampler
from cds.pipeline.stages.common import require
from cds.pipeline.tracking import configure, git_commit, log_pipeline_run


def publish(
    params: Params,
    layout: Layout,
    statuses: dict[str, str],
    tags: dict[str, str] | None = None,
    register: bool = True,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Log the run (parent + nested stage runs; into the open run `run_id` when given) and,
    with `register`, register the student; returns a summary with the tracking URI, run id,
    model version, gate outcome and headline metrics."""
    metrics = json.loads(require(layout.metrics, "evaluate").read_text())
    report = json.loads(require(layout.report, "evaluate").read_text())
    checkpoint = require(layout.student, "student")
    uri = configure(layout.root)
    run_id = log_pipeline_run(params, layout, statuses, tags, run_id)
    summary: dict[str, Any] = {
        "tracking_uri": uri,
        "run_id": run_id,
        "metrics": {key: metrics.get(key) for key in keys(Role.SUMMARY)},
    }
    if not register:
        return summary
    registration = register_sampler(
        run_id,
        checkpoint,
        metrics,
        params.registry,
        {"git_commit": git_commit(layout.root), "run_id": run_id, **(tags or {})},
        evaluation_protocol(report),
        TargetBundle.of(params, layout.root),
    )
    return {
        **summary,
        "model": registration.name,
        "version": registration.version,
        "gate": "passed" if registration.gate_passed else "failed",
        "gate_reason": registration.reason,
        "champion": registration.champion,
        "already_registered": registration.existing,
    }
