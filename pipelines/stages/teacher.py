"""The teacher stage: train the DIS teacher (docs/methods.md §3), resuming an unfinished
checkpoint written for the same params, code and inputs."""

from __future__ import annotations

import os
from typing import Any

from cds.config import Params
from cds.dis import teacher_fingerprint, train_teacher
from pipelines.layout import Layout
from pipelines.live_tracking import stage_monitor
from pipelines.stages.common import checked_target
from pipelines.timings import record_timings

#: Set (by a sweep) to a teacher fingerprint: a finished checkpoint with that fingerprint is
#: handed on as it is instead of trained again (`pipelines.shared_teacher`).
REUSE_FINISHED_ENV = "CDS_REUSE_FINISHED_TEACHER"


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    target = checked_target(params, layout)
    reuse = os.environ.get(REUSE_FINISHED_ENV) == teacher_fingerprint(params)
    with stage_monitor("teacher", params.teacher.optim.iterations) as monitor:
        result = train_teacher(
            params,
            target,
            layout.teacher,
            layout.teacher_log,
            progress=progress,
            monitor=monitor,
            reuse_finished=reuse,
        )
    record_timings(layout.root, "teacher", {"train_seconds": result.train_seconds})
    return {"iterations": result.iterations, "skipped": result.skipped}
