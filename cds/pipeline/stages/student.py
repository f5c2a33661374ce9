"""The student stage: CDDS distils the teacher through the fragment bank (docs/methods.md §4);
SCDS trains its step-conditioned control from scratch (§5)."""

from __future__ import annotations

from typing import Any

from cds.cdds import load_bank, train_student
from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.pipeline.layout import Layout
from cds.pipeline.live_tracking import stage_monitor
from cds.pipeline.stages.common import StageInputError, checked_target, require
from cds.pipeline.timings import record_timings
from cds.preconditioning import recorded_prior_map
from cds.run_config import run_device
from cds.scds import train_scds
from cds.teacher import load_teacher
from cds.training import TrainingResult


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    target = checked_target(params, layout)
    section = params.scds if params.method == "scds" else params.cdds
    with stage_monitor("student", section.optim.iterations) as monitor:
        result: TrainingResult
        if params.method == "scds":
            result = train_scds(
                params,
                target,
                layout.student,
                log_path=layout.student_log,
                progress=progress,
                monitor=monitor,
            )
        else:
            device = run_device(params)
            teacher, _ = load_teacher(require(layout.teacher, "teacher"), device)
            payload = load_checkpoint(layout.teacher)
            teacher_fingerprint = payload["fingerprint"]
            bank = None
            if params.cdds.fragments != "online":
                bank, manifest = load_bank(require(layout.bank, "fragments"), device)
                if manifest.get("teacher_fingerprint") != teacher_fingerprint:
                    raise StageInputError(
                        f"{layout.bank} was built from another teacher: "
                        "run `cds stage fragments` again"
                    )
            result = train_student(
                params,
                target,
                teacher,
                teacher_fingerprint,
                layout.student,
                bank=bank,
                prior_map=recorded_prior_map(payload),
                log_path=layout.student_log,
                progress=progress,
                monitor=monitor,
            )
    record_timings(layout.root, "student", {"train_seconds": result.train_seconds})
    return {"iterations": result.iterations, "skipped": result.skipped}
