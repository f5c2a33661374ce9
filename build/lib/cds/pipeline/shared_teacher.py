"""One teacher per sweep for cells that need the same one.

The CDDS and the SCDS cell of a seed (and cells whose overrides touch only the student) need the
same DIS teacher: its fingerprint covers seed, target, SDE and teacher params, the code version
and the target's input files, and nothing the method changes. Each cell runs in its own working
copy, and DVC's run-cache does not restore a `persist` output, so without help every such cell
would train the teacher again. The teacher stage itself shares (a sweep names the store in
CDS_SHARED_TEACHERS), so the fingerprint is computed where the stage runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cds.checkpoints import CheckpointError, atomic_write, load_finished_checkpoint
from cds.pipeline.io import write_json_atomic
from cds.teacher import TEACHER_KIND


def _finished_fingerprint(path: Path) -> str | None:
    """The fingerprint of the finished teacher checkpoint at `path`, or None."""
    if not path.exists():
        return None
    try:
        return str(load_finished_checkpoint(path, TEACHER_KIND)["fingerprint"])
    except CheckpointError:
        return None


def _copy_atomic(source: Path, dest: Path) -> None:
    with source.open("rb") as src:
        atomic_write(dest, lambda fh: shutil.copyfileobj(src, fh))


@dataclass
class Handover:
    """What `shared_teacher` did: whether the cell's checkpoint is a copy of another cell's
    finished teacher, and the training time of the run that made it (for the timings)."""

    handed_on: bool = False
    train_seconds: float | None = None


@contextmanager
def shared_teacher(checkpoint: Path, store: Path, fingerprint: str) -> Iterator[Handover]:
    """Around a cell's teacher training: cells with the same teacher `fingerprint` take turns
    (a file lock in `store`). The first trains as usual and, once it succeeded, deposits the
    finished checkpoint (and its training time, which the stage sets on the handover) in
    `store`; each later one finds it there, starts from a copy and is told so
    (`Handover.handed_on`), so that the trainer hands it on instead of training again."""
    store.mkdir(parents=True, exist_ok=True)
    deposit, record = store / f"{fingerprint}.pt", store / f"{fingerprint}.json"
    with FileLock(store / f"{fingerprint}.lock"):  # nobody else touches the deposit meanwhile
        handover = Handover()
        if _finished_fingerprint(deposit) == fingerprint:
            _copy_atomic(deposit, checkpoint)
            seconds = json.loads(record.read_text()) if record.is_file() else {}
            handover = Handover(True, seconds.get("train_seconds"))
        yield handover
        if not handover.handed_on and _finished_fingerprint(checkpoint) == fingerprint:
            _copy_atomic(checkpoint, deposit)
            write_json_atomic(record, {"train_seconds": handover.train_seconds})
