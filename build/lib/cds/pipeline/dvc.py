"""Driving DVC: `dvc repro` one stage at a time (so each stage gets its own log, status and
retries), and reading the output hashes DVC recorded in dvc.lock.

Stage commands are `cds stage NAME`; DVC runs them with the environment we pass, whose PATH puts
this interpreter's bin directory first, so the stages run in the same environment as the flow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Exit status our CLI uses for failures worth retrying (EX_TEMPFAIL).
EXIT_TRANSIENT = 75
#: Output fragments of failures that go away on retry: another DVC process holds the repo
#: lock, or SQLite is busy.
TRANSIENT_MARKERS = ("Unable to acquire lock", "database is locked")


class StageFailedError(RuntimeError):
    """`dvc repro STAGE` failed; `output` holds the tail of what it printed."""

    def __init__(self, stage: str, returncode: int, output: str):
        super().__init__(f"stage {stage!r} failed with exit status {returncode}:\n{output}")
        self.stage = stage
        self.returncode = returncode
        self.output = output


class TransientStageError(StageFailedError):
    """A stage failure worth retrying (lock contention, busy database)."""


@dataclass(frozen=True)
class StageRun:
    stage: str
    #: "ran" when DVC executed the stage command, "cached" when it did not need to.
    status: str
    seconds: float
    output: str


def dvc_env(root: Path) -> dict[str, str]:
    """The environment for DVC subprocesses: this interpreter first on PATH, no analytics, and
    DVC's site cache inside the repository rather than in a shared system directory."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("DVC_SITE_CACHE_DIR", str(root / ".dvc" / "tmp" / "site-cache"))
    return env


def _pump(stream: IO[str], sink: IO[str], keep: list[str]) -> None:
    """Copy a child's output to our terminal as it comes (progress bars stay live) and keep
    it for the logs."""
    for chunk in iter(lambda: stream.read(256), ""):
        sink.write(chunk)
        sink.flush()
        keep.append(chunk)


def dvc(
    root: Path, *args: str, echo: bool = True, extra_env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `dvc ARGS` in `root` (with `extra_env` added to its environment and its stage
    commands'); returns the exit status and the combined output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env={**dvc_env(root), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    kept: list[str] = []
    sink = sys.stderr if echo else open(os.devnull, "w")  # noqa: SIM115
    pump = threading.Thread(target=_pump, args=(proc.stdout, sink, kept), daemon=True)
    pump.start()
    returncode = proc.wait()
    pump.join()
    if not echo:
        sink.close()
    return returncode, "".join(kept)


def repro_stage(
    root: Path,
    stage: str,
    echo: bool = True,
    pull: bool = False,
    extra_env: dict[str, str] | None = None,
) -> StageRun:
    """`dvc repro STAGE` (upstream stages are already up to date when called in order); with
    `pull`, outputs missing locally are fetched from the DVC remote instead of recomputed."""
    start = time.perf_counter()
    args = ("repro", "--pull", stage) if pull else ("repro", stage)
    returncode, output = dvc(root, *args, echo=echo, extra_env=extra_env)
    seconds = time.perf_counter() - start
    tail = output[-4000:]
    if returncode != 0:
        transient = returncode == EXIT_TRANSIENT or any(m in output for m in TRANSIENT_MARKERS)
        raise (TransientStageError if transient else StageFailedError)(stage, returncode, tail)
    # DVC prints "Running stage 'X'" only when it executes the command; an up-to-date stage,
    # a run-cache hit or outputs pulled from a remote leave that line out.
    status = "ran" if f"Running stage '{stage}'" in output else "cached"
    return StageRun(stage, status, seconds, tail)


def is_clean(root: Path) -> bool:
    """Whether `dvc status` reports every stage up to date."""
    returncode, output = dvc(root, "status", "--json", echo=False)
    return returncode == 0 and output.strip().splitlines()[-1].strip() == "{}"


def save_experiment(root: Path) -> str | None:
    """`dvc exp save`: record the workspace (params, dvc.lock, metrics) as a DVC experiment, as
    `dvc exp run --set-param` would have; returns its name, or None where DVC cannot (no git
    commit yet), with the reason on stderr."""
    returncode, output = dvc(root, "exp", "save", echo=False)
    match = re.search(r"saved as: (\S+)", output)
    if returncode != 0 or match is None:
        print(f"dvc exp save did not record this run: {output.strip()[-500:]}", file=sys.stderr)
        return None
    return match.group(1)
