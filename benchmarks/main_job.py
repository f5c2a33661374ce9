"""The main job from fresh clones, quiet and beside a CPU-bound process, stage by stage against
each stage's arithmetic limit on this machine.

Each round clones this repository's committed HEAD into a temporary directory and runs there
what the README's first command runs, timed in two parts: `make install` (a fresh .venv) and
`make run` (the main job: Prefect flow, DVC stages, MLflow registration, on the embedded default
params.yaml). Stage wall times come from the clone's `.cds/timings/<stage>.json`
(`stage_seconds`, recorded by `cds stage`). `--loads` is the sequence of rounds, each the number
of single-threaded busy loops beside it (`busy_processes`, started before the clone and stopped
after the run): the default `0 1 0 1 0 1` interleaves three quiet and three loaded rounds, so
drift in the machine's other load touches both alike. Reported: per load, the median of its
rounds, and the loaded/quiet ratio of the medians.

Arithmetic limits (`stage_limits`) count only the dominant arithmetic of each stage, from the
params: the networks' multiply-adds for the teacher, fragment and student stages (forward 2·MACs
FLOPs per row, a training step's backward twice that), the exponentials of the paper Sinkhorns
for the evaluation. They are divided by this machine's rates measured quietly at the start of
the run (`machine_rates`, all usable cores): the float32 matrix-multiply peak (a 2048² product)
and, as the rate a width-64 network can reach, the same product at the training shapes (512 rows
× 64 × 64); the Sinkhorn by the exp2 rate. Everything else a stage does (Python and autograd
dispatch, elementwise activations, the target's score, I/O, process starts) is outside the
limit: the gap between measured and limit is what that costs.

Run:  .venv/bin/python benchmarks/main_job.py [--loads 0 1 0 1 0 1] [--workdir DIR]
(about 10 minutes per quiet round and 15 per loaded one on 2 cores; commit first: the clones
are of HEAD)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import best_of, busy_processes, print_table, write_results

from cds import threads
from cds.config import Params, load_params
from cds.pipeline.stages.evaluate import budgets

ROOT = Path(__file__).resolve().parents[1]
#: The DVC stages (registration, which `cds run` does after them, writes no timings file: its
#: seconds are in `run` minus these).
STAGES = ("target", "teacher", "fragments", "student", "evaluate")
#: One paper Sinkhorn: at most 100 iterations of two passes, then one pass for the value.
SINKHORN_PASSES = 2 * 100 + 1


def network_macs(dim: int, width: int, depth: int) -> int:
    """Multiply-adds of one row through the main network of docs/methods.md §2 (input, depth − 2
    hidden and output layers; the time embedding is computed once per time, not per row)."""
    return dim * width + (depth - 2) * width * width + width * dim


def stage_limits(params: Params, dim: int) -> dict[str, dict[str, float]]:
    """Per stage: the dominant arithmetic in FLOPs ("flops", network stages) or exponentials
    ("exps", evaluation), from the params (module docstring)."""
    teacher, cdds, evaluation = params.teacher, params.cdds, params.evaluation
    teacher_row = 2 * network_macs(dim, teacher.network.width, teacher.network.depth)
    student_row = 2 * network_macs(dim, cdds.network.width, cdds.network.depth)
    paths = cdds.bank_size / (cdds.n_coarse - 1)  # each path serves every pair
    n = evaluation.n_samples
    sinkhorns = evaluation.floor_repeats + 2 + 2 * len(budgets(params))  # floor, teacher ×2, K
    return {
        # forward and backward (2×) through the control at every SDE step of every path
        "teacher": {
            "flops": 3.0
            * teacher_row
            * teacher.optim.iterations
            * teacher.optim.batch_size
            * teacher.n_steps
        },
        "fragments": {"flops": 1.0 * teacher_row * paths * cdds.n_fine},
        # the online network forward and backward, the target network's forward
        "student": {"flops": 4.0 * student_row * cdds.optim.iterations * cdds.optim.batch_size},
        "evaluate": {"exps": float(sinkhorns * SINKHORN_PASSES * n * n)},
    }


def machine_rates() -> dict[str, float]:
    """This machine's float32 matmul rate at 2048² and at the training shape (GFLOP/s), and
    its exp2 rate (G elements/s), on all usable cores."""
    torch.set_num_threads(threads.usable_cores())
    big = torch.randn(2048, 2048)
    rows, weight = torch.randn(512, 64), torch.randn(64, 64)
    values = torch.randn(1 << 22)
    out = torch.empty_like(values)

    def small() -> None:
        for _ in range(100):
            torch.mm(rows, weight)

    return {
        "gemm_peak_gflops": 2 * 2048**3 / best_of(lambda: torch.mm(big, big)) / 1e9,
        "gemm_width64_gflops": 100 * 2 * 512 * 64 * 64 / best_of(small) / 1e9,
        "exp2_gexps": values.numel() / best_of(lambda: torch.exp2(values, out=out)) / 1e9,
    }


def run_round(load: int, workdir: Path, index: int) -> dict[str, Any]:
    """One fresh clone of HEAD: `make install`, then `make run`, beside `load` busy loops (their
    output in the clone's make-install.log and make-run.log, kept with --workdir)."""
    clone = workdir / f"round{index}"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    seconds: dict[str, Any] = {"load": load}
    with busy_processes(load):
        for step in ("install", "run"):
            started = time.perf_counter()
            result = subprocess.run(
                ["make", step], cwd=clone, capture_output=True, text=True, check=False
            )
            seconds[step] = time.perf_counter() - started
            log = clone / f"make-{step}.log"
            log.write_text(result.stdout + result.stderr)
            if result.returncode != 0:
                raise RuntimeError(
                    f"make {step} failed in {clone} (see {log}):\n"
                    f"{(result.stdout + result.stderr)[-3000:]}"
                )
    seconds["total"] = seconds["install"] + seconds["run"]
    for stage in STAGES:
        path = clone / ".cds" / "timings" / f"{stage}.json"
        recorded = json.loads(path.read_text()) if path.exists() else {}
        seconds[stage] = recorded.get("stage_seconds")
        if "train_seconds" in recorded:
            seconds[f"{stage}_train"] = recorded["train_seconds"]
    metrics = json.loads((clone / "data" / "eval" / "metrics.json").read_text())
    seconds["cdds_vs_teacher"] = metrics["sinkhorn_vs_teacher"]
    return seconds


def _median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(loads: list[int], workdir: Path | None) -> None:
    # the params the clones run: HEAD's params.yaml
    committed = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(committed)
        params = load_params(Path(tmp) / "params.yaml")
    rates = machine_rates()
    limits = stage_limits(params, dim=2)  # the embedded default, gmm9, is 2-dimensional
    rounds = []
    with tempfile.TemporaryDirectory(prefix="cds-main-job-") as tmp:
        for index, load in enumerate(loads):
            rounds.append(run_round(load, workdir or Path(tmp), index))
            print(json.dumps(rounds[-1]), flush=True)
    keys = ["install", *STAGES, "run", "total", "teacher_train", "student_train"]
    medians = {
        load: {key: _median([r for r in rounds if r["load"] == load], key) for key in keys}
        for load in sorted(set(loads))
    }
    quiet = medians.get(0, {})
    rows = []
    for key in keys:
        row: dict[str, Any] = {"step": key}
        for load, values in medians.items():
            row[f"s_load{load}"] = values[key]
        if 1 in medians and quiet.get(key) and medians[1][key] is not None:
            row["loaded_over_quiet"] = medians[1][key] / quiet[key]
        limit = limits.get(key, {})
        if "flops" in limit:
            row["limit_s_peak"] = limit["flops"] / (rates["gemm_peak_gflops"] * 1e9)
            row["limit_s_width64"] = limit["flops"] / (rates["gemm_width64_gflops"] * 1e9)
        elif "exps" in limit:
            row["limit_s_peak"] = row["limit_s_width64"] = limit["exps"] / (
                rates["exp2_gexps"] * 1e9
            )
        if quiet.get(key) and "limit_s_width64" in row:
            row["quiet_over_limit"] = quiet[key] / row["limit_s_width64"]
        rows.append(row)
    columns = ["step", *(f"s_load{load}" for load in medians), "loaded_over_quiet"]
    print_table(rows, [*columns, "limit_s_peak", "limit_s_width64", "quiet_over_limit"])
    path = write_results(
        __file__,
        {
            "loads": loads,
            "rates": rates,
            "limits": limits,
            "rounds": rounds,
            "rows": rows,
            "cdds_vs_teacher": [r["cdds_vs_teacher"] for r in rounds],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--loads",
        nargs="+",
        type=int,
        default=[0, 1, 0, 1, 0, 1],
        help="busy loops beside each round, in order (default: 0 1 0 1 0 1)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the clones (round0, round1, ...) here instead of a deleted temporary directory",
    )
    args = parser.parse_args()
    main(args.loads, args.workdir)
