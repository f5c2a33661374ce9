"""The teacher stage: train the DIS teacher (docs/methods.md §3), resuming an unfinished
checkpoint written for the same params, code and inputs."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from cds.config import Params
from cds.dis import teacher_fingerprint, train_teacher
from pipelines.dvc_lock import recorded_by_dvc
from pipelines.layout import Layout
from pipelines.live_tracking import stage_monitor
from pipelines.shared_teacher import shared_teacher
from pipelines.stages.common import checked_target
from pipelines.timings import record_timings

#: Set (by a sweep) to a directory where cells needing the same teacher share it
#: (`pipelines.shared_teacher`).
SHARED_TEACHERS_ENV = "CDS_SHARED_TEACHERS"


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    target = checked_target(params, layout)
    store = os.environ.get(SHARED_TEACHERS_ENV)
    sharing = (
        shared_teacher(layout.teacher, Path(store), teacher_fingerprint(params))
        if store
        else nullcontext()
    )
    with sharing, stage_monitor("teacher", params.teacher.optim.iterations) as monitor:
        result = train_teacher(
            params,
            target,
            layout.teacher,
            layout.teacher_log,
            progress=progress,
            monitor=monitor,
            reuse_finished=not recorded_by_dvc(layout.root, "teacher", layout.teacher),
        )
    record_timings(layout.root, "teacher", {"train_seconds": result.train_seconds})
    return {"iterations": result.iterations, "skipped": result.skipped}
