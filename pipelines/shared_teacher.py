"""One teacher per sweep for cells that need the same one.

The CDDS and the SCDS cell of a seed (and cells whose overrides touch only the student) need the
same DIS teacher: its fingerprint covers seed, target, SDE and teacher params, the code version
and the target's input files, and nothing the method changes. Each cell runs in its own working
copy, and DVC's run-cache does not restore a `persist` output, so without help every such cell
would train the teacher again. The teacher stage itself shares (a sweep names the store in
CDS_SHARED_TEACHERS), so the fingerprint is computed where the stage runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from cds.checkpoints import CheckpointError, atomic_write, load_finished_checkpoint
from cds.dis import TEACHER_KIND


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


@contextmanager
def shared_teacher(checkpoint: Path, store: Path, fingerprint: str) -> Iterator[None]:
    """Around a cell's teacher training: cells with the same teacher `fingerprint` take turns
    (a file lock in `store`). The first trains as usual and, once it succeeded, deposits the
    finished checkpoint in `store`; each later one finds it there and starts from a copy, which
    its dvc.lock does not record, so the trainer hands it on as finished and only the log is
    rewritten (`pipelines.stages.common.recorded_by_dvc`)."""
    store.mkdir(parents=True, exist_ok=True)
    deposit = store / f"{fingerprint}.pt"
    with FileLock(store / f"{fingerprint}.lock"):  # nobody else touches the deposit meanwhile
        deposited = _finished_fingerprint(deposit) == fingerprint
        if deposited and _finished_fingerprint(checkpoint) != fingerprint:
            _copy_atomic(deposit, checkpoint)
        yield
        if not deposited and _finished_fingerprint(checkpoint) == fingerprint:
            _copy_atomic(checkpoint, deposit)
