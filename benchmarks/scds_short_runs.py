"""SCDS at a short budget: the one-step Sinkhorn after 300 iterations (N = 32, batch 256, EMA
over the last 100), the budget of `tests/test_scds.py`'s short-training test, for the paper's
self-consistency target and for the fine-ODE target with 8 or 32 extra shortcut steps, over
seeds. It is why `sc_target: fine_ode` with 32 extra steps, which meets the one-step bar at the
default budget (`scds_quality.py`), is not the default.

One-step samples (n = 1000) against 1000 exact gmm9 samples, beside the untrained network.

Run:  .venv/bin/python benchmarks/scds_short_runs.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import print_table, write_results

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
FINE_ODE = ["scds.sc_target=fine_ode"]
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
}


def main() -> None:
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
    rows = []
    for label, (seed, overrides) in RUNS.items():
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
    main()
