"""One-step sampling throughput through `cds.load_sampler(...).sample`, side by side with the
straightforward single-batch forward pass of the same network.

Uses the student the main job trained (data/student/student.pt; run `make run` first) or the
checkpoint or model URI given on the command line. Reference point (issue 4): the authors'
one-step model draws 1.16M samples/s on this machine; the goal is at least 2×.

Run:  .venv/bin/python benchmarks/sampling_throughput.py [CHECKPOINT_OR_MODEL_URI]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _common import TIMING, best_of, print_table, write_results

import cds

N = 1_000_000
AUTHORS_PER_S = 1.16e6
DEFAULT = Path(__file__).resolve().parents[1] / "data" / "student" / "student.pt"


def main(source: str) -> None:
    if "://" not in source and not Path(source).is_file():
        sys.exit(f"{source} does not exist: run `make run` first, or pass a checkpoint or URI")
    sampler = cds.load_sampler(source)
    generator = TIMING.generator()
    ours = best_of(lambda: sampler.sample(N, generator), repeats=5)

    def straightforward() -> torch.Tensor:
        with torch.no_grad():
            x0 = sampler.prior.sample(N, generator)
            return sampler.student(x0, sampler.student.T)

    plain = best_of(straightforward, repeats=5)
    rows = [
        {"implementation": "cds.load_sampler(...).sample", "samples_per_s": N / ours},
        {"implementation": "straightforward (one batch)", "samples_per_s": N / plain},
    ]
    for row in rows:
        row["vs_authors"] = row["samples_per_s"] / AUTHORS_PER_S
    rows[0]["speedup_vs_straightforward"] = plain / ours
    write_results(
        __file__,
        {"source": str(source), "n": N, "method": sampler.method, "nfe": sampler.nfe, "rows": rows},
    )
    print_table(
        rows, ["implementation", "samples_per_s", "vs_authors", "speedup_vs_straightforward"]
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT))
