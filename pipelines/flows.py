"""Prefect flows. `retrain` chains the stages by driving `dvc repro` one stage at a time (so a
Prefect run and a manual `dvc repro` produce the same artifacts and leave `dvc status` clean),
then logs the run to MLflow and registers the student behind the quality gate.

One flow run is one process: Prefect's temporary server, when no PREFECT_API_URL is set, starts
once per run, not once per stage (the stages are subprocesses that do not import Prefect).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import Task

from cds.config import load_params
from pipelines.dvc import TRANSIENT_MARKERS, TransientStageError, is_clean, repro_stage
from pipelines.layout import STAGES, Layout
from pipelines.params_file import write_complete_params
from pipelines.project_lock import project_lock
from pipelines.publish import publish

#: How often a transient failure (DVC lock held, SQLite busy) is retried, and after how long.
RETRIES = 2
RETRY_DELAY_S = 10


def is_transient(_task: Task, _task_run: TaskRun, state: State) -> bool:
    """Retry only failures that go away by themselves; bad params or a crash fail at once."""
    try:
        state.result()
    except TransientStageError:
        return True
    except Exception as err:
        return any(marker in str(err) for marker in TRANSIENT_MARKERS)
    return False


@task(
    name="stage",
    task_run_name="{stage}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=None,
)
def run_stage(project: str, stage: str, echo: bool = True) -> str:
    """`dvc repro STAGE`; returns "ran" or "cached"."""
    logger = get_run_logger()
    run = repro_stage(Path(project), stage, echo=echo)
    logger.info("stage %s: %s in %.1f s", stage, run.status, run.seconds)
    return run.status


@task(
    name="register",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=None,
)
def register(project: str, statuses: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
    layout = Layout(Path(project))
    summary = publish(load_params(layout.params), layout, statuses, tags)
    get_run_logger().info(
        "registered %s version %s (gate %s: %s); champion is version %s",
        summary["model"],
        summary["version"],
        summary["gate"],
        summary["gate_reason"],
        summary["champion"],
    )
    return summary


@flow(name="retrain", log_prints=True)
def retrain(
    project: str = ".", tags: dict[str, str] | None = None, echo: bool = True
) -> dict[str, Any]:
    """Validate params.yaml, bring every stage up to date through DVC, log and register, all
    under the project's lock (`pipelines.project_lock`)."""
    layout = Layout(Path(project).resolve())
    with project_lock(layout.root):
        params = load_params(layout.params)  # the whole file, before any stage runs
        write_complete_params(layout.params, params)
        statuses = {stage: run_stage(str(layout.root), stage, echo) for stage in STAGES}
        summary = register(str(layout.root), statuses, tags or {})
        return {"stages": statuses, "dvc_status_clean": is_clean(layout.root), **summary}
