"""SCDS at a short budget: the one-step Sinkhorn after 300 iterations (N = 32, batch 256, EMA
over the last 100), the budget of `tests/test_scds.py`'s short-training test, for the paper's
self-consistency target and for the fine-ODE target with 8 or 32 extra shortcut steps, over
seeds, and with those 32 extra steps ramped in over a quarter, half or all of the run
(`scds.sc_extra_ramp`). 32 extra steps from the first iteration meet the one-step bar at the
default budget (`scds_quality.py`) but are unstable here; ramped in over the first quarter
(the default) they are stable here and nearly as good there.

One-step samples (n = 1000) against 1000 exact gmm9 samples, beside the untrained network.

Run:  .venv/bin/python benchmarks/scds_short_runs.py [--runs LABEL ...]
(naming runs reruns only those and keeps the other rows of the results file)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (
    FIXED_BUDGETS,
    SHORT_RUN_REFERENCE,
    SHORT_RUN_SAMPLES,
    UNTRAINED_INIT,
    previous_rows,
    print_table,
    write_results,
)

from cds.config import load_params
from cds.metrics import paper_sinkhorn
from cds.networks import Control
from cds.samplers import Sampler, ShortcutSampler, sampler_from_checkpoint
from cds.scds import train_scds
from cds.sde import VPSchedule
from cds.targets import StandardNormalPrior, get_target

BUDGET = [
    "scds.n_steps=32",
    "scds.optim.iterations=300",
    "scds.optim.batch_size=256",
    "scds.optim.ema_window=100",
]
PAPER = ["scds.sc_target=half_steps", "scds.sc_extra_steps=0"]
FINE_ODE = ["scds.sc_target=fine_ode", "scds.sc_extra_ramp=0"]
#: label → (seed, overrides)
RUNS = {
    "paper target, seed 0": (0, PAPER),
    "fine-ODE + 8, seed 0": (0, [*FINE_ODE, "scds.sc_extra_steps=8"]),
    "fine-ODE + 32, seed 0": (0, [*FINE_ODE, "scds.sc_extra_steps=32"]),
    "fine-ODE + 32, seed 1": (1, [*FINE_ODE, "scds.sc_extra_steps=32"]),
    "fine-ODE + 32, seed 2": (2, [*FINE_ODE, "scds.sc_extra_steps=32"]),
    "fine-ODE + 32, grad clip 0.1, seed 0": (
        0,
        [*FINE_ODE, "scds.sc_extra_steps=32", "scds.optim.grad_clip=0.1"],
    ),
    **{
        f"fine-ODE + 32, ramp {ramp}, seed {seed}": (
            seed,
            [*FINE_ODE, "scds.sc_extra_steps=32", f"scds.sc_extra_ramp={ramp}"],
        )
        for ramp in (0.25, 0.5, 1)
        for seed in (0, 1, 2)
    },
}


def main(runs: list[str]) -> None:
    unknown = [label for label in runs if label not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; valid: {list(RUNS)}")
    target, prior = get_target("gmm9"), StandardNormalPrior(2)
    reference = target.sample(1000, SHORT_RUN_REFERENCE.generator())

    def one_step_sinkhorn(sampler: Sampler) -> float:
        return paper_sinkhorn(sampler.sample(1000, SHORT_RUN_SAMPLES.generator()), reference).value

    UNTRAINED_INIT.seed_global()
    untrained = one_step_sinkhorn(
        ShortcutSampler(Control(2, VPSchedule(), step_conditioned=True), target, prior, 1)
    )
    kept = {r["run"]: r for r in previous_rows(__file__) if runs and r["run"] not in runs}
    rows = []
    for label, (seed, overrides) in RUNS.items():
        if label in kept:
            rows.append(kept[label])
            continue
        if runs and label not in runs:
            continue
        params = load_params(None, [f"seed={seed}", *BUDGET, *overrides], preset=FIXED_BUDGETS)
        with tempfile.TemporaryDirectory() as tmp:
            train_scds(params, target, Path(tmp) / "s.pt", progress=False)
            sampler = sampler_from_checkpoint(Path(tmp) / "s.pt", 1)
        value = one_step_sinkhorn(sampler)
        rows.append({"run": label, "one_step_sinkhorn": value, "vs_untrained": value / untrained})
        print(f"{label}: {value:.3f}", flush=True)
    write_results(__file__, {"budget": BUDGET, "untrained": untrained, "rows": rows})
    print_table(rows, ["run", "one_step_sinkhorn", "vs_untrained"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], metavar="LABEL")
    main(parser.parse_args().runs)
