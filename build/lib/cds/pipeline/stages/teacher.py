"""The teacher stage: train the DIS teacher (docs/methods.md §3), resuming an unfinished
checkpoint written for the same params, code and inputs."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from cds.config import Params
from cds.pipeline.layout import Layout
from cds.pipeline.live_tracking import stage_monitor
from cds.pipeline.shared_teacher import Handover, shared_teacher
from cds.pipeline.stages.common import checked_target
from cds.pipeline.timings import record_timings
from cds.run_config import teacher_fingerprint
from cds.teacher import train_teacher

#: Set (by a sweep) to a directory where cells needing the same teacher share it
#: (`cds.pipeline.shared_teacher`).
SHARED_TEACHERS_ENV = "CDS_SHARED_TEACHERS"


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Train the teacher; in a sweep cell (CDS_SHARED_TEACHERS set), take a finished teacher of
    the same fingerprint that another cell deposited instead."""
    target = checked_target(params, layout)
    store = os.environ.get(SHARED_TEACHERS_ENV)
    sharing = (
        shared_teacher(layout.teacher, Path(store), teacher_fingerprint(params))
        if store
        else nullcontext(Handover())
    )
    with sharing as handover, stage_monitor("teacher", params.teacher.optim.iterations) as monitor:
        result = train_teacher(
            params,
            target,
            layout.teacher,
            log_path=layout.teacher_log,
            progress=progress,
            monitor=monitor,
            reuse_finished=handover.handed_on,
        )
        if not handover.handed_on:
            handover.train_seconds = result.train_seconds
    seconds = {"train_seconds": result.train_seconds}
    if handover.handed_on and handover.train_seconds is not None:
        seconds["shared_train_seconds"] = handover.train_seconds  # the depositing cell's
    record_timings(layout.root, "teacher", seconds)
    return {"iterations": result.iterations, "skipped": result.skipped}
