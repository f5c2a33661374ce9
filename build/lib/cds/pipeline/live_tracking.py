"""Live MLflow logging of a training stage while it runs.

`cds run` opens the pipeline's MLflow run before the first stage and hands its id to the stage
processes in CDS_MLFLOW_PARENT_RUN. A training stage then logs into a nested run of its own
(named after the stage): the loss curve (window means, about `CURVE_POINTS` points per run),
the learning rate and skipped-iteration count, and each periodic evaluation as it is made,
flushed in batches at least every `FLUSH_EVERY_S` seconds, so a long student stage can be
watched in the MLflow UI. Without the variable (plain `dvc repro`) nothing is logged here;
`cds stage register` logs the finished stages afterwards.

Logging is best effort: an MLflow failure (a busy SQLite store, a server away) is reported once
as a warning and ends the live logging, never the training.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cds.training import TrainingResult

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "CDS_MLFLOW_PARENT_RUN"
#: Tag marking a stage run that was logged live (its curve is not logged again afterwards).
LIVE_TAG = "cds.live"
FLUSH_EVERY_S = 10.0
CURVE_POINTS = 1000


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class LiveRun:
    """A `cds.training.TrainingMonitor` logging to one MLflow run in batches."""

    def __init__(self, client: Any, run_id: str, iterations: int):
        self.client = client
        self.run_id = run_id
        self.stride = max(1, iterations // CURVE_POINTS)
        self.pending: list[Any] = []
        self.window: list[float] = []
        self.last_flush = time.monotonic()
        self.failed = False

    def _metric(self, key: str, value: float, step: int) -> None:
        from mlflow.entities import Metric

        self.pending.append(Metric(key, value, int(time.time() * 1000), step))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if self.failed:
            return
        try:
            for start in range(0, len(pending), 1000):  # log_batch takes at most 1000
                self.client.log_batch(self.run_id, metrics=pending[start : start + 1000])
        except Exception as err:
            self.failed = True
            log.warning("live MLflow logging stopped (training goes on): %s", err)

    def iteration(self, step: int, loss: float, lr: float, skipped: int) -> None:
        if loss == loss and abs(loss) != float("inf"):  # finite losses make the curve
            self.window.append(loss)
        if step % self.stride == 0:
            if self.window:
                self._metric("loss", sum(self.window) / len(self.window), step)
            self._metric("lr", lr, step)
            self._metric("skipped", float(skipped), step)
            self.window = []
        if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def evaluation(self, record: dict[str, Any]) -> None:
        step = int(record["iteration"])
        for key, value in _numbers(record).items():
            if key != "iteration":
                self._metric(f"eval.{key}", value, step)
        self.flush()

    def finished(self, result: TrainingResult) -> None:
        self._metric("train_seconds", result.train_seconds, result.iterations)
        self._metric("iterations", result.iterations, result.iterations)
        if result.stop.get("cooldown_from") is not None:  # the plateau rule: when, and why
            self._metric("cooldown_from", result.stop["cooldown_from"], result.iterations)
            self._metric("lr_backoffs", result.stop["backoffs"], result.iterations)
            self.client.set_tag(self.run_id, "budget", result.stop["reason"])
        self.flush()


@contextmanager
def stage_monitor(stage: str, iterations: int) -> Iterator[LiveRun | None]:
    """A live run nested in the pipeline run named by CDS_MLFLOW_PARENT_RUN, ended FINISHED
    or FAILED with the stage; None (and no MLflow import) when the variable is unset."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        yield None
        return
    import mlflow

    client = mlflow.MlflowClient()
    try:
        experiment = client.get_run(parent).info.experiment_id
        run = client.create_run(
            experiment,
            run_name=stage,
            tags={"mlflow.parentRunId": parent, "stage": stage, LIVE_TAG: "true"},
        )
    except Exception as err:
        log.warning("no live MLflow logging for this stage: %s", err)
        yield None
        return
    monitor = LiveRun(client, run.info.run_id, iterations)
    status = "FAILED"
    try:
        yield monitor
        status = "FINISHED"
    finally:
        monitor.flush()
        try:
            client.set_terminated(run.info.run_id, status)
        except Exception as err:
            log.warning("could not mark the live MLflow run %s: %s", status, err)
