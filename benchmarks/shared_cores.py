"""Speed when other jobs share the cores: one-step sampling and CDDS training, quiet and beside
one or two CPU-bound single-thread processes, side by side with the previous thread scheme.

Load generator: `--loads` (default 0 1 2) processes, each a single-threaded Python busy loop
started before a cell and stopped after it (`busy_processes`). Each cell runs in a fresh
interpreter, so that its thread settings are its own:

- sampling, n = 10⁶ one-step samples of the project's CDDS student:
  - "cds": `cds.load_sampler(...).sample`, chunks shared out to one single-threaded worker per
    usable core (`cds.threads`);
  - "previous": the same chunks one after another through torch's intra-op pool, one thread
    per core (the scheme before `cds.threads`; `CDS_THREADS=1` and torch's default threads);
  - "plain": one batch through the network, torch's default threads;
- training, `--iterations` CDDS iterations of the project's run (its teacher and fragment
  bank, the embedded defaults with gmm9's preset):
  - "cds": threads adapted to the free cores (`cds.threads.adapt`);
  - "previous": one thread per core throughout (`CDS_THREADS` = the core count).

Rates are the median over `--rounds` rounds, the cells of a round interleaved, so that drift in
the machine's other load touches every cell alike. Reported beside each rate: its share of the
same implementation's quiet rate, and for sampling its ratio to the plain forward at that load.

Run:  .venv/bin/python benchmarks/shared_cores.py [--project DIR]   (DIR holds a finished main
job's data/: `make run` first; default: this checkout)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import busy_processes, machine, print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 1_000_000
#: (workload, implementation) → the environment its interpreter gets beyond the caller's.
CELLS: dict[tuple[str, str], dict[str, str]] = {
    ("sampling", "cds"): {},
    ("sampling", "previous"): {"CDS_THREADS": "1"},
    ("sampling", "plain"): {},
    ("training", "cds"): {},
    ("training", "previous"): {"CDS_THREADS": str(os.cpu_count() or 1)},
}

WORKER = r"""
import json, sys, time, torch
spec = json.loads(sys.argv[1])
project, workload, implementation = spec["project"], spec["workload"], spec["implementation"]
if workload == "sampling":
    import cds
    sampler = cds.load_sampler(f"{project}/data/student/student.pt")
    generator = torch.Generator().manual_seed(0)
    if implementation == "previous":
        torch.set_num_threads(spec["cores"])
    def once():
        if implementation == "plain":
            with torch.no_grad():
                x0 = sampler.prior.sample(spec["n"], generator)
                return sampler.student(x0, sampler.student.T)
        return sampler.sample(spec["n"], generator)
    once()
    times = []
    for _ in range(3):
        start = time.perf_counter(); once(); times.append(time.perf_counter() - start)
    print(json.dumps({"rate": spec["n"] / min(times)}))
else:
    import tempfile
    from cds.cdds import load_bank, train_student
    from cds.config import load_params
    from cds.targets import get_target
    from cds.teacher import load_teacher
    params = load_params(None, ["target.name=gmm9", f"cdds.optim.iterations={spec['iterations']}",
                                "cdds.eval_every=1000000000"], "gmm9")
    teacher, _ = load_teacher(f"{project}/data/teacher/teacher.pt")
    bank, _ = load_bank(f"{project}/data/fragments/bank.pt")
    with tempfile.TemporaryDirectory() as scratch:
        result = train_student(params, get_target("gmm9"), teacher, "benchmark",
                               f"{scratch}/student.pt", bank=bank, progress=False)
    print(json.dumps({"rate": result.iterations / result.train_seconds}))
"""


def run_cell(spec: dict[str, Any]) -> float:
    """One cell in a fresh interpreter; its rate (samples or iterations per second)."""
    env = {**os.environ, **CELLS[(spec["workload"], spec["implementation"])]}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cell {spec} failed:\n{result.stderr[-3000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["rate"])


def main(project: Path, loads: list[int], rounds: int, iterations: int) -> None:
    for needed in ("student/student.pt", "teacher/teacher.pt", "fragments/bank.pt"):
        if not (project / "data" / needed).is_file():
            sys.exit(f"{project / 'data' / needed} does not exist: run `make run` first")
    rates: dict[tuple[int, str, str], list[float]] = {}
    for round_index in range(rounds):
        for load in loads:
            with busy_processes(load):
                for workload, implementation in CELLS:
                    spec = {
                        "project": str(project),
                        "workload": workload,
                        "implementation": implementation,
                        "n": N_SAMPLES,
                        "iterations": iterations,
                        "cores": os.cpu_count() or 1,
                    }
                    rate = run_cell(spec)
                    rates.setdefault((load, workload, implementation), []).append(rate)
                    cell = f"{workload} {implementation}"
                    print(f"round {round_index}, load {load}, {cell}: {rate:.4g}")
    median = {key: statistics.median(values) for key, values in rates.items()}
    rows = []
    for (load, workload, implementation), rate in median.items():
        row = {
            "load": load,
            "workload": workload,
            "implementation": implementation,
            "rate": rate,
            "of_quiet": rate / median[(0, workload, implementation)] if 0 in loads else None,
            "vs_plain": rate / median[(load, "sampling", "plain")]
            if workload == "sampling"
            else None,
            "rounds": rates[(load, workload, implementation)],
        }
        rows.append(row)
    write_results(
        __file__,
        {
            "machine": machine(),
            "n_samples": N_SAMPLES,
            "training_iterations": iterations,
            "loads": loads,
            "rounds": rounds,
            "rows": rows,
        },
    )
    print_table(rows, ["load", "workload", "implementation", "rate", "of_quiet", "vs_plain"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT)
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    main(args.project.resolve(), args.loads, args.rounds, args.iterations)
