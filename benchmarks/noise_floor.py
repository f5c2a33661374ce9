"""Noise floor of every metric at n = 6000 for each target with exact samples, and the wall time
of one paper-Sinkhorn evaluation at 6000×6000 per target dimension.

The floor is the metric between two independent exact sample sets of the same size (mean of
3 pairs, with the spread of the paper Sinkhorn). For gmm9 the paper-Sinkhorn floor is also given
at n = 20,000 (chunked, bounded memory). The fast Sinkhorn is checked side by side against a
straightforward float64 implementation at n = 2000.

Run:  .venv/bin/python benchmarks/noise_floor.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import NOISE_FLOOR_SAMPLES, print_table, write_results

from cds.metrics import noise_floor, paper_sinkhorn
from cds.targets import get_target

# The straightforward float64 transcription of the definition lives with the tests, which check
# the fast implementation against it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_metrics import slow_paper_sinkhorn

N = 6000
TARGETS = ["gmm9", "funnel", "mw54", "mw52", "image"]


def main() -> None:
    gen = NOISE_FLOOR_SAMPLES.generator()
    floors = []
    for name in TARGETS:
        target = get_target(name)
        start = time.perf_counter()
        floor = noise_floor(target, N, gen, repeats=3)
        floors.append(
            {"target": name, "dim": target.dim, **floor, "seconds": time.perf_counter() - start}
        )
        print(f"floor {name}: done in {floors[-1]['seconds']:.0f} s", file=sys.stderr)

    timings = []
    for dim_target in ["gmm9", "mw54", "funnel", "mw52"]:
        target = get_target(dim_target)
        x, y = target.sample(N, gen), target.sample(N, gen)
        start = time.perf_counter()
        paper_sinkhorn(x, y)
        timings.append(
            {
                "dim": target.dim,
                "target": dim_target,
                "n": N,
                "seconds": time.perf_counter() - start,
            }
        )

    gmm = get_target("gmm9")
    x, y = gmm.sample(2000, gen), gmm.sample(2000, gen)
    start = time.perf_counter()
    slow = slow_paper_sinkhorn(x.double().numpy(), y.double().numpy())
    slow_s = time.perf_counter() - start
    start = time.perf_counter()
    fast = paper_sinkhorn(x, y).value
    fast_s = time.perf_counter() - start
    side_by_side = {
        "n": 2000,
        "straightforward_seconds": slow_s,
        "cds_seconds": fast_s,
        "speedup": slow_s / fast_s,
        "straightforward_value": slow,
        "cds_value": fast,
    }

    x, y = gmm.sample(20000, gen), gmm.sample(20000, gen)
    start = time.perf_counter()
    big = paper_sinkhorn(x, y)
    floor_20k = {"n": 20000, "sinkhorn": big.value, "seconds": time.perf_counter() - start}

    write_results(
        __file__,
        {
            "n": N,
            "floors": floors,
            "sinkhorn_timings": timings,
            "side_by_side_n2000": side_by_side,
            "gmm9_floor_n20000": floor_20k,
        },
    )
    print(f"\nNoise floor at n = {N} (mean of 3 exact-vs-exact pairs)\n")
    print_table(
        floors,
        [
            "target",
            "dim",
            "sinkhorn",
            "sinkhorn_std",
            "sinkhorn_divergence",
            "mmd",
            "entropic_coverage",
            "std_abs_err_max",
        ],
    )
    print(f"\nPaper Sinkhorn wall time at {N}x{N}\n")
    print_table(timings, ["target", "dim", "seconds"])
    print(
        f"\nSide by side at n=2000: straightforward {slow_s:.1f} s, cds {fast_s:.2f} s "
        f"({slow_s / fast_s:.0f}x), values {slow:.6f} vs {fast:.6f}"
    )
    print(f"gmm9 floor at n=20000: {big.value:.4f} ({floor_20k['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
