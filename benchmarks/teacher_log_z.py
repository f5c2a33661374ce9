"""log Z of a trained DIS teacher run as an SDE sampler at several step counts, with the discrete
normaliser and, on the same paths, the continuous-time term it replaced (docs/methods.md §3).

The continuous-time drift-divergence term shifts every log weight by the same constant D·c_N,
c_N = Σ_k [¼(β_k + β_{k+1})Δt_k − log(1 + ½β_kΔt_k)], so the old figures are the new ones plus
D·c_N on identical paths: the table shows both side by side.

    python benchmarks/teacher_log_z.py [--checkpoint data/teacher/teacher.pt]

Defaults: one step at n = 200,000 (one seed) and the trained 128 steps at n = 20,000 for
three seeds (mean and spread). Writes benchmarks/results/teacher_log_z.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import TEACHER_LOG_Z_SAMPLES, print_table, write_results

from cds.metrics import log_z_report
from cds.samplers import DiffusionSampler, sampler_from_checkpoint
from cds.sde import uniform_grid


def continuous_minus_discrete(sampler: DiffusionSampler) -> float:
    """D·c_N: the old continuous-time term minus the discrete normaliser, on this grid."""
    schedule = sampler.control.schedule
    grid = uniform_grid(sampler.nfe, schedule.T).double()
    beta = schedule.beta(grid)
    continuous = 0.25 * sampler.dim * ((beta[:-1] + beta[1:]) * (grid[1:] - grid[:-1])).sum()
    return float(continuous - schedule.drift_divergence_increments(grid, sampler.dim).sum())


def measure(checkpoint: Path, n_steps: int, n: int, seed: int) -> dict:
    sampler = sampler_from_checkpoint(checkpoint, n_steps)
    assert isinstance(sampler, DiffusionSampler)
    start = time.perf_counter()
    weighted = sampler.weighted_samples(n, TEACHER_LOG_Z_SAMPLES.generator(seed))
    report = log_z_report(weighted.log_weights, sampler.target.log_Z)
    offset = continuous_minus_discrete(sampler)
    return {
        "n_steps": n_steps,
        "n": n,
        "seed": seed,
        "log_Z_is": report["log_Z_is"],
        "log_Z_is_se": report["log_Z_is_se"],
        "elbo": report["elbo"],
        "elbo_se": report["elbo_se"],
        "ess": report["ess"],
        "old_term_offset": offset,
        "log_Z_is_old_term": report["log_Z_is"] + offset,
        "elbo_old_term": report["elbo"] + offset,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("data/teacher/teacher.pt"))
    parser.add_argument("--one-step-n", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {str(args.checkpoint)!r} does not exist: run `cds run` first")
    trained = sampler_from_checkpoint(args.checkpoint).nfe
    rows = [measure(args.checkpoint, 1, args.one_step_n, 0)]
    rows += [measure(args.checkpoint, trained, args.n, seed) for seed in range(args.seeds)]
    full = [r for r in rows if r["n_steps"] == trained]
    summary = {
        "one_step_log_Z_is": rows[0]["log_Z_is"],
        "one_step_log_Z_is_se": rows[0]["log_Z_is_se"],
        f"steps_{trained}_mean_log_Z_is": statistics.mean(r["log_Z_is"] for r in full),
        f"steps_{trained}_stdev_log_Z_is": statistics.stdev(r["log_Z_is"] for r in full)
        if len(full) > 1
        else 0.0,
    }
    print_table(
        rows,
        ["n_steps", "n", "seed", "log_Z_is", "log_Z_is_se", "elbo", "ess", "log_Z_is_old_term"],
    )
    print(summary)
    write_results(
        __file__,
        {
            "checkpoint": str(args.checkpoint),
            "true_log_Z": sampler_from_checkpoint(args.checkpoint).target.log_Z,
            "rows": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
