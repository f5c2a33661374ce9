"""One writer per project: the lock a pipeline run holds from params validation to registration.

`cds run`, the scheduled `retrain` flow and every `cds stage NAME` take the lock on
`<project>/.cds/run.lock` before they write anything (params.yaml included). A second run is
refused at once, or after `wait` seconds, with the holder named (pid, host, command, start
time), and changes nothing. Stage processes that a lock holder starts (`dvc repro` → `cds stage`)
inherit the lock through the environment variable `CDS_PROJECT_LOCK`, so they do not wait on
their own parent.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

#: Set in the environment of a lock holder's children: the lock file they run under.
INHERITED = "CDS_PROJECT_LOCK"


#: Holder files this process wrote and has not removed yet.
_HELD: set[Path] = set()


class ProjectBusyError(RuntimeError):
    """Another cds process holds the project's lock."""


def lock_path(project: Path) -> Path:
    return project.resolve() / ".cds" / "run.lock"


def _holder_path(project: Path) -> Path:
    return lock_path(project).with_suffix(".holder.json")


def holder(project: Path) -> dict[str, object] | None:
    """Who holds the project's lock (as the holder wrote it), or None."""
    try:
        return json.loads(_holder_path(project).read_text())
    except (OSError, ValueError):
        return None


def _describe(info: dict[str, object] | None) -> str:
    if info is None:
        return "another cds process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))  # type: ignore[arg-type]
    return f"pid {info['pid']} on {info['host']} (`{info['command']}`, since {started})"


@contextmanager
def project_lock(project: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the project's lock for the block; raise `ProjectBusyError` naming the holder when
    it is not free within `wait` seconds. Re-entrant in one process; a child of the holder
    (see module docstring) passes through."""
    path = lock_path(project)
    if os.environ.get(INHERITED) == str(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, is_singleton=True, thread_local=False)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise ProjectBusyError(
            f"project {project.resolve()} is busy: {_describe(holder(project))} holds its lock "
            f"({path}); wait for it to finish or stop it, or pass --wait SECONDS"
        ) from None
    first = lock.lock_counter == 1
    previous = os.environ.get(INHERITED)
    try:
        if first:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(
                    os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)
                ),
                "started": time.time(),
            }
            _holder_path(project).write_text(json.dumps(info))
            _HELD.add(_holder_path(project))
            os.environ[INHERITED] = str(path)
        yield
    finally:
        if first:
            _holder_path(project).unlink(missing_ok=True)
            _HELD.discard(_holder_path(project))
            if previous is None:
                os.environ.pop(INHERITED, None)
            else:
                os.environ[INHERITED] = previous
        lock.release()


def abandon() -> None:
    """Remove this process's holder files, for a process about to exit without unwinding (the
    operating system releases the locks themselves)."""
    for path in list(_HELD):
        path.unlink(missing_ok=True)
        _HELD.discard(path)
