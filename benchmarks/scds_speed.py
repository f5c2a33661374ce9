"""SCDS training speed: one iteration (B = 512, N = 128, width 64, gmm9) of cds's joint update,
of its alternating update (the authors' two optimizer steps), both with the paper's
self-consistency target and no extra steps (the default), of cds's joint update with the
fine-ODE target and 32 extra self-consistency steps, and of a straightforward implementation
of the paper's joint iteration, side by side in one run.

The straightforward version (kept here only) simulates the SDE step by step with the autograd
graph through every control evaluation (per-sample time and step embeddings), then adds the
self-consistency loss and backpropagates once. cds simulates under no_grad, recomputes all
controls in one batched pass (docs/methods.md §3) and evaluates the self-consistency steps as in
docs/methods.md §5 (c). The authors' implementation took 0.44–0.49 s per iteration on this
machine.

Run:  .venv/bin/python benchmarks/scds_speed.py
"""

from __future__ import annotations

import torch
from _common import FIXED_BUDGETS, TIMING, best_of, print_table, write_results
from teacher_speed import textbook_rnd

from cds.config import load_params
from cds.losses import log_variance_loss
from cds.run_config import make_control, make_schedule
from cds.scds import SelfConsistencyObjective, draw_shortcut_pairs, pf_ode_step
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target

BATCH, N_STEPS = 512, 128
AUTHORS_S = (0.44, 0.49)


def main() -> None:
    params = load_params(
        None, [f"scds.optim.batch_size={BATCH}", f"scds.n_steps={N_STEPS}"], preset=FIXED_BUDGETS
    )
    target = get_target("gmm9")
    TIMING.seed_global()
    control = make_control(2, make_schedule(params.sde), params.scds.network, 250.0, True)
    with torch.no_grad():  # a trained-like network: the zero output layer would skip work
        control.net.output.weight.normal_(0, 0.01)
    prior = StandardNormalPrior(2)
    grid = uniform_grid(N_STEPS)
    h0 = float(grid[1] - grid[0])
    opt = torch.optim.Adam(control.parameters(), lr=1e-5)
    gen = TIMING.generator()

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cds_iteration(**update: object):
        objective = SelfConsistencyObjective(
            control, target, prior, grid, params.scds.model_copy(update=update)
        )

        def run() -> None:
            loss, info = objective(0, gen)
            step(loss)
            for follow_up in info.get("follow_ups", ()):
                step(follow_up())

        return run

    def textbook_iteration() -> None:
        states: list[torch.Tensor] = []
        rnd = textbook_rnd(control, target, prior, grid, BATCH, gen, True, d=h0, keep=states)
        loss_s, _ = log_variance_loss(rnd, 2)
        j, start = draw_shortcut_pairs(N_STEPS, BATCH, gen)
        x = torch.stack(states)[start, torch.arange(BATCH)]
        t = grid[start]
        half, full = grid[start + 2**j] - t, grid[start + 2 ** (j + 1)] - t
        with torch.no_grad():
            goal = pf_ode_step(
                control, target, pf_ode_step(control, target, x, t, half), t + half, half
            )
        loss_sc = (pf_ode_step(control, target, x, t, full) - goal).square().mean() / 2
        step(loss_s + loss_sc)

    paper = {"sc_target": "half_steps", "sc_extra_steps": 0}
    timings = {
        "cds joint (one Adam step)": best_of(cds_iteration(update="joint", **paper), repeats=5),
        "cds alternating (two Adam steps)": best_of(
            cds_iteration(update="alternating", **paper), repeats=5
        ),
        "cds joint, fine-ODE target, 32 extra SC steps": best_of(
            cds_iteration(
                update="joint", sc_target="fine_ode", sc_extra_steps=32, sc_extra_ramp=0.0
            ),
            repeats=5,
        ),
        "straightforward (joint)": best_of(textbook_iteration, repeats=5),
    }
    base = timings["straightforward (joint)"]
    rows = [
        {"implementation": name, "iteration_s": s, "speedup_vs_straightforward": base / s}
        for name, s in timings.items()
    ]
    write_results(
        __file__,
        {"batch": BATCH, "n_steps": N_STEPS, "authors_iteration_s": AUTHORS_S, "rows": rows},
    )
    print_table(rows, ["implementation", "iteration_s", "speedup_vs_straightforward"])
    print(f"authors' implementation: {AUTHORS_S[0]}–{AUTHORS_S[1]} s per iteration")


if __name__ == "__main__":
    main()
