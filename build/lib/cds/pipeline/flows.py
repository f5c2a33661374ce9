"""Prefect flows. `retrain` chains the stages by driving `dvc repro` one stage at a time (so a
Prefect run and a manual `dvc repro` produce the same artifacts and leave `dvc status` clean),
then logs the run to MLflow and registers the student behind the quality gate. The MLflow run
is opened first, so that the training stages log into it while they run.

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
from cds.pipeline.dvc import TRANSIENT_MARKERS, TransientStageError, is_clean, repro_stage
from cds.pipeline.layout import Layout
from cds.pipeline.live_tracking import PARENT_RUN_ENV
from cds.pipeline.params_file import write_complete_params
from cds.pipeline.project_lock import project_lock
from cds.pipeline.publish import publish
from cds.pipeline.stage_graph import STAGES
from cds.pipeline.tracking import end_failed_run, start_pipeline_run

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
def run_stage(project: str, stage: str, echo: bool = True, run_id: str | None = None) -> str:
    """`dvc repro STAGE` (training stages log live into MLflow run `run_id`'s nested runs);
    returns "ran" or "cached"."""
    logger = get_run_logger()
    env = {PARENT_RUN_ENV: run_id} if run_id else None
    run = repro_stage(Path(project), stage, echo=echo, extra_env=env)
    logger.info("stage %s: %s in %.1f s", stage, run.status, run.seconds)
    return run.status


@task(
    name="register",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=None,
)
def register(
    project: str, statuses: dict[str, str], tags: dict[str, str], run_id: str | None = None
) -> dict[str, Any]:
    layout = Layout(Path(project))
    summary = publish(load_params(layout.params), layout, statuses, tags, run_id=run_id)
    get_run_logger().info(
        "registered %s version %s (gate %s: %s); champion is version %s",
        summary["model"],
        summary["version"],
        summary["gate"],
        summary["gate_reason"],
        summary["champion"],
    )
    return summary


@task(
    name="open-run",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=None,
)
def open_run(project: str, tags: dict[str, str]) -> str:
    """The pipeline's MLflow run, opened before the stages so that they log into it live."""
    layout = Layout(Path(project))
    return start_pipeline_run(load_params(layout.params), layout, tags)


@flow(name="retrain", log_prints=True)
def retrain(
    project: str = ".", tags: dict[str, str] | None = None, echo: bool = True
) -> dict[str, Any]:
    """Validate params.yaml, bring every stage up to date through DVC, log and register, all
    under the project's lock (`cds.pipeline.project_lock`)."""
    layout = Layout(Path(project).resolve())
    with project_lock(layout.root):
        params = load_params(layout.params)  # the whole file, before any stage runs
        write_complete_params(layout.params, params)
        run_id = open_run(str(layout.root), tags or {})
        try:
            statuses = {stage: run_stage(str(layout.root), stage, echo, run_id) for stage in STAGES}
            summary = register(str(layout.root), statuses, tags or {}, run_id)
        except BaseException:
            end_failed_run(run_id)
            raise
        return {"stages": statuses, "dvc_status_clean": is_clean(layout.root), **summary}
