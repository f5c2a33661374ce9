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

import torch
from _common import previous_rows, print_table, write_results

from cds.config import load_params
from cds.metrics import paper_sinkhorn
from cds.networks import Control
from cds.samplers import sample_pf_ode
from cds.scds import load_scds, train_scds
from cds.sde import VPSchedule, sub_grid, uniform_grid
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
    reference = target.sample(1000, torch.Generator().manual_seed(2))
    one_step = sub_grid(uniform_grid(32), 1)

    def one_step_sinkhorn(control: Control) -> float:
        x = sample_pf_ode(
            control, target, prior, one_step, 1000, torch.Generator().manual_seed(3), step_size=1.0
        )
        return paper_sinkhorn(x, reference).value

    torch.manual_seed(0)
    untrained = one_step_sinkhorn(Control(2, VPSchedule(), step_conditioned=True))
    kept = {r["run"]: r for r in previous_rows(__file__) if runs and r["run"] not in runs}
    rows = []
    for label, (seed, overrides) in RUNS.items():
        if label in kept:
            rows.append(kept[label])
            continue
        if runs and label not in runs:
            continue
        params = load_params(None, [f"seed={seed}", *BUDGET, *overrides])
        with tempfile.TemporaryDirectory() as tmp:
            train_scds(params, target, Path(tmp) / "s.pt", progress=False)
            control, _ = load_scds(Path(tmp) / "s.pt")
        value = one_step_sinkhorn(control)
        rows.append({"run": label, "one_step_sinkhorn": value, "vs_untrained": value / untrained})
        print(f"{label}: {value:.3f}", flush=True)
    write_results(__file__, {"budget": BUDGET, "untrained": untrained, "rows": rows})
    print_table(rows, ["run", "one_step_sinkhorn", "vs_untrained"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], metavar="LABEL")
    main(parser.parse_args().runs)
