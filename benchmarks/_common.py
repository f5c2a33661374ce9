"""Helpers shared by the benchmark scripts: timing, result files, tables."""

from __future__ import annotations

import json
import math
import multiprocessing
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cds.config import Params
    from cds.pipeline.layout import Layout

RESULTS = Path(__file__).resolve().parent / "results"
#: The preset under which the fixed-budget studies (every script but default_budgets.py) were
#: measured: the embedded defaults with gmm9's fixed budgets, i.e. the project's params.yaml
#: (the defaults themselves now end training by convergence, docs/methods.md §10). Results
#: recorded before docs/decisions.md §31 ran gmm9's teacher at 1000 iterations, the preset's
#: budget then (1500 since); so did the gmm9 rows of paper_table.py, baselines.py and
#: default_budgets.py, which take the preset's teacher settings. A rerun uses the preset as it
#: is.
FIXED_BUDGETS = "gmm9"


@dataclass(frozen=True)
class Stream:
    """A named random stream of the benchmark scripts: draw `index` uses seed `seed + index`.

    Every seed a benchmark script draws with is one of the streams below, defined here once;
    their values are those the committed results (`benchmarks/results/`) were measured with, so
    a rerun draws the same samples. The pipeline's own draws (training, fragment bank,
    evaluation) come from `cds.seeding`'s streams of `params.seed` and `evaluation.seed`, not
    from these."""

    seed: int

    def generator(self, index: int = 0) -> torch.Generator:
        """A torch generator on draw `index` of the stream."""
        return torch.Generator().manual_seed(self.seed + index)

    def seed_global(self, index: int = 0) -> None:
        """Seed torch's global generator with draw `index` of the stream (what network
        initialisers and Pyro draw from)."""
        torch.manual_seed(self.seed + index)


#: Exact samples a script scores against, one set per size n: draw n (cdds_quality.py,
#: scds_quality.py).
EXACT_REFERENCE = Stream(100)
#: The 128-step teacher's SDE and PF-ODE samples scored (cdds_quality.py, scds_quality.py).
TEACHER_SAMPLES = Stream(7)
#: The student's samples scored: one step and, for SCDS, every K (cdds_quality.py,
#: scds_quality.py).
STUDENT_SAMPLES = Stream(8)
#: CDDS's multistep (K = 2, 4, 8) samples (cdds_quality.py).
CDDS_MULTISTEP_SAMPLES = Stream(9)
#: CDDS's one-step deterministic-flow weights (cdds_quality.py).
CDDS_WEIGHTS = Stream(10)
#: SCDS's log weights at each K and of its SDE sampler (scds_quality.py).
SCDS_WEIGHTS = Stream(9)
#: The teacher's samples scored by teacher_quality.py.
TEACHER_QUALITY_SAMPLES = Stream(11)
#: The exact sample sets teacher_quality.py compares with (and its floor pairs).
TEACHER_QUALITY_EXACT = Stream(12)
#: The exact samples scds_short_runs.py scores against.
SHORT_RUN_REFERENCE = Stream(2)
#: The one-step samples scds_short_runs.py scores.
SHORT_RUN_SAMPLES = Stream(3)
#: Initialisation of scds_short_runs.py's untrained network (torch's global generator).
UNTRAINED_INIT = Stream(0)
#: baselines.py's NUTS run: Pyro's draws (global generator), chain c's start from draw c.
NUTS_CHAINS = Stream(0)
#: baselines.py's long NUTS reference run for targets without exact samples (as NUTS_CHAINS).
NUTS_REFERENCE_CHAINS = Stream(1000)
#: baselines.py's exact reference samples.
BASELINE_REFERENCE = Stream(77)
#: baselines.py's exact-vs-exact floor at m samples: draw m.
BASELINE_FLOOR = Stream(0)
#: baselines.py's cds samples at m: draw m.
BASELINE_CDS_SAMPLES = Stream(0)
#: paper_table.py's timing draws of a row: draw 1000 × seed + the row's place in its cell.
PAPER_TABLE_TIMING = Stream(0)
#: paper_table.py's large-n samples of a row: the same draw index as its timing draw.
PAPER_TABLE_LARGE_N_SAMPLES = Stream(1)
#: paper_table.py's exact reference at the large n, and the second exact set of its floor.
LARGE_N_REFERENCE = Stream(2024)
LARGE_N_FLOOR = Stream(2025)
#: noise_floor.py's exact sample sets (one generator, drawn in turn).
NOISE_FLOOR_SAMPLES = Stream(0)
#: teacher_log_z.py's weighted samples: draw s for the row of seed s.
TEACHER_LOG_Z_SAMPLES = Stream(0)
#: Draws and initialisations of the scripts that only time work (teacher_speed.py,
#: scds_speed.py, sampling_throughput.py, scale.py): their values do not matter.
TIMING = Stream(0)


def target_overrides(
    name: str, sections: tuple[str, ...] = ("teacher", "cdds", "scds")
) -> dict[str, Any]:
    """The params a target's own preset sets in `sections` (`cds/presets/<name>.yaml`, the one
    home of what was learned per target), as dotted keys; {} for a target without one."""
    from cds.pipeline.tracking import flatten
    from cds.presets import read_preset, target_preset

    preset = target_preset(name)
    found = flatten(read_preset(preset)) if preset else {}
    return {key: value for key, value in found.items() if key.split(".")[0] in sections}


def teacher_overrides(name: str) -> dict[str, Any]:
    """The teacher's part of the target's preset (its budget)."""
    return {k: v for k, v in target_overrides(name).items() if k.startswith("teacher.")}


def train_seconds(cell_dir: Path, stage: str) -> float:
    """Training wall time of a pipeline cell's stage ("teacher" or "student"), as the stage
    recorded it (`cds.pipeline.timings`): for a teacher another sweep cell handed on, that cell's
    time; NaN where the cell has no record (outputs pulled from a DVC remote)."""
    from cds.pipeline.timings import read_timings

    seconds = read_timings(cell_dir, stage)
    return float(seconds.get("shared_train_seconds", seconds.get("train_seconds", math.nan)))


def as_set_items(overrides: dict[str, Any]) -> list[str]:
    """Overrides as `--set` items (KEY=VALUE), the form `load_params` takes."""
    return [f"{key}={value}" for key, value in overrides.items()]


def parse_set_items(items: Iterable[str]) -> dict[str, Any]:
    """`--set` items (KEY=VALUE, the value read as params YAML) as overrides (dotted key →
    value), the form a `SweepGrid` takes; the inverse of `as_set_items`."""
    from cds.config import read_yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = read_yaml(value)
    return overrides


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def best_of(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of `repeats` calls after `warmup` calls (shared, noisy machines)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """The load generator: `count` single-threaded CPU-bound processes (spawned Python busy
    loops) for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # past their interpreters' start
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
            process.join()


def write_results(script: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{Path(script).stem}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, sort_keys=True) + "\n")
    return path


def previous_results(script: str) -> dict[str, Any]:
    """This script's last results file (empty if there is none)."""
    path = RESULTS / f"{Path(script).stem}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def previous_rows(script: str) -> list[dict[str, Any]]:
    """The rows of this script's last results file (empty if there is none)."""
    return previous_results(script).get("rows", [])


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def run_stage(name: str, params: Params, layout: Layout, progress: bool = False) -> dict[str, Any]:
    """Pipeline stage `name` (`cds.pipeline.stages.<name>.run`) on the project at `layout.root`,
    in that directory, as `cds stage NAME` runs it (without DVC and the project lock)."""
    import contextlib
    import importlib

    module = importlib.import_module(f"cds.pipeline.stages.{name}")
    with contextlib.chdir(layout.root):  # params' paths are relative to the project
        return module.run(params, layout, progress)


def quiet_pipeline_environment() -> None:
    """The CLI's offline, quiet settings for Prefect, DVC and MLflow, and Prefect logging at
    WARNING, for scripts that run pipeline sweeps (explicit settings win)."""
    import os

    from cds.pipeline.cli import QUIET_ENV

    for key, value in {**QUIET_ENV, "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(key, value)


# At import, before a script imports Prefect: Prefect reads its settings once, when imported.
quiet_pipeline_environment()
