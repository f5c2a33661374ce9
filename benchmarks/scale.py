"""Cost against dimension: a training step and 10⁵ one-step samples, time and peak memory.

For gmm9 (D = 2), mw54 (5), funnel (10), mw52 (50) and lgcp (1600), at the default training
configuration (B = 512, N = 128, width 64): the wall time of a DIS teacher step, of a CDDS
distillation step (bank mode, the bank built by the pipeline's fragments stage) and of an SCDS
iteration (joint update, the paper's self-consistency target), each the training loop's own
per-iteration time over a few iterations, and the wall time of drawing 10⁵ one-step CDDS samples
through the serving sampler. Each measurement runs in its own child process, so its peak memory
is its own: reported as the process's peak resident set size and as the peak above the resident
size the process had before the measured work (imports, target, models, bank). Weights are
untrained: the cost of a step does not depend on them.

Run:  .venv/bin/python benchmarks/scale.py [target ...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import FIXED_BUDGETS, TIMING, print_table, run_stage, write_results

from cds.cdds import load_bank, train_student
from cds.config import load_params
from cds.pipeline.layout import Layout
from cds.samplers import sampler_from_checkpoint
from cds.scds import train_scds
from cds.targets import get_target
from cds.teacher import load_teacher, train_teacher

TARGETS = ("gmm9", "mw54", "funnel", "mw52", "lgcp")
#: Iterations timed per training measurement (the first one is not counted: warm-up).
ITERATIONS = {"lgcp": 3}
DEFAULT_ITERATIONS = 20
SAMPLES = 100_000
#: Bank size for the CDDS step: only its draw is timed, so a small bank is enough.
BANK = 4096


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(name: str, work: str, directory: Path) -> dict[str, float]:
    """One measurement in this (fresh) process, in the project at `directory`; returns seconds
    and memory."""
    target = get_target(name)
    iterations = ITERATIONS.get(name, DEFAULT_ITERATIONS)
    params = load_params(
        None,
        [
            f"target.name={name}",
            f"teacher.optim.iterations={iterations}",
            f"cdds.optim.iterations={iterations}",
            f"scds.optim.iterations={iterations}",
            f"cdds.bank_size={BANK}",
            # the SCDS iteration measured: the paper's self-consistency target, no extra steps
            "scds.sc_target=half_steps",
            "scds.sc_extra_steps=0",
            # the loop's final evaluation always runs: keep it negligible
            "teacher.eval_samples=16",
            "cdds.eval_samples=16",
        ],
        preset=FIXED_BUDGETS,
    )
    layout = Layout(directory)
    teacher_path, student_path = layout.teacher, layout.student
    before = _current_rss_mib()
    if work == "teacher":
        result = train_teacher(params, target, teacher_path, progress=False, stop_after=1)
        result = train_teacher(params, target, teacher_path, progress=False)
        seconds = result.train_seconds / (iterations - 1)  # the resumed run's iterations
    elif work == "scds":
        result = train_scds(params, target, directory / "scds.pt", progress=False, stop_after=1)
        result = train_scds(params, target, directory / "scds.pt", progress=False)
        seconds = result.train_seconds / (iterations - 1)  # the resumed run's iterations
    elif work == "cdds":
        run_stage("target", params, layout)
        run_stage("fragments", params, layout)  # the teacher child's teacher
        teacher, _ = load_teacher(teacher_path)
        bank, _ = load_bank(layout.bank)
        before = _current_rss_mib()
        kwargs = {"bank": bank, "progress": False}
        result = train_student(params, target, teacher, "t", student_path, stop_after=1, **kwargs)
        result = train_student(params, target, teacher, "t", student_path, **kwargs)
        seconds = result.train_seconds / (iterations - 1)  # the resumed run's iterations
    else:
        sampler = sampler_from_checkpoint(student_path)
        sampler.sample(1000)
        before = _current_rss_mib()
        start = time.perf_counter()
        sampler.sample(SAMPLES, TIMING.generator())
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mib": _rss_mib(),
        "peak_above_start_mib": _rss_mib() - before,
    }


def main(targets: list[str]) -> None:
    rows = []
    for name in targets or TARGETS:
        with tempfile.TemporaryDirectory() as tmp:
            row: dict[str, float | str | int] = {"target": name, "dim": get_target(name).dim}
            for work in ("teacher", "cdds", "sample", "scds"):  # cdds needs the teacher's file
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, work, tmp],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                measured = json.loads(out.strip().splitlines()[-1])
                key = {"teacher": "teacher_step", "cdds": "cdds_step", "scds": "scds_iteration",
                       "sample": "sample_1e5"}[work]  # fmt: skip
                row[f"{key}_s"] = measured["seconds"]
                row[f"{key}_peak_mib"] = measured["peak_rss_mib"]
                row[f"{key}_above_start_mib"] = measured["peak_above_start_mib"]
            rows.append(row)
            print(f"{name}: done", file=sys.stderr, flush=True)
    write_results(__file__, {"batch": 512, "n_steps": 128, "samples": SAMPLES, "rows": rows})
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
    else:
        main(sys.argv[1:])
