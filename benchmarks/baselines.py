"""What a user would pick instead: NUTS (Pyro) against the cds samplers, training cost counted in.

NUTS: Pyro's `NUTS` on the target's potential −log ρ (diagonal mass matrix and step size
adapted during warm-up), CHAINS independent chains started from prior draws, WARMUP warm-up
and DRAWS kept draws each, run one after another on this machine's cores. Every potential call
(with its gradient) is counted, and a Pyro hook timestamps each draw, so the pooled draws give a
quality curve against wall time and gradient evaluations. Quality: for targets with exact
samples, the paper Sinkhorn of the first m pooled draws (chains interleaved) against m fresh
exact samples, over the floor at m, and mode coverage; for `logreg_cancer`, the error of the
posterior means and standard deviations against a long NUTS reference run (REFERENCE chains ×
draws).

The cds samplers come from `paper_table.py`'s pipeline runs (seed 0; `logreg_cancer` from a
sweep cell this script runs, no exact samples: scored on the same moment errors): DIS at 128
steps, CDDS at 1 step, SCDS at 1 step. Their cost for m samples is the training wall time (CDDS:
teacher and student) plus m times the measured sampling time per sample; their gradient
evaluations are the training's target-score calls (`training_grads`: every SDE and ODE step of
every training path, CDDS's fragment bank and SCDS's self-consistency terms included) plus the
sampler's per-sample calls (128 for DIS, 0 for CDDS, K for SCDS). The break-even is the number
of samples after which the one-step sampler's total wall time falls below NUTS's (warm-up plus
draws at its measured rate) and below the 128-step teacher's.

Run:  .venv/bin/python benchmarks/baselines.py [--targets gmm9 funnel mw54 logreg_cancer]
(needs paper_table.py's results for gmm9, funnel, mw54 and the cells they record under
runs/sweeps; writes baselines.json, keeping the targets not named, and one PNG per target)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    BASELINE_CDS_SAMPLES,
    BASELINE_FLOOR,
    BASELINE_REFERENCE,
    NUTS_CHAINS,
    NUTS_REFERENCE_CHAINS,
    RESULTS,
    Stream,
    machine,
    previous_results,
    print_table,
    train_seconds,
    write_results,
)
from matplotlib.figure import Figure
from pyro.infer.mcmc import MCMC, NUTS

from cds.config import Params, load_params
from cds.metrics import noise_floor, paper_sinkhorn
from cds.metrics.modes import marginal_std_errors, mode_coverage
from cds.pipeline.layout import Layout
from cds.pipeline.sweep import SweepGrid, cells, run_sweep
from cds.samplers import sampler_from_checkpoint
from cds.scds import extra_steps_at
from cds.targets import Target, get_target

ROOT = Path(__file__).resolve().parents[1]
CHAINS, WARMUP, DRAWS = 4, 500, 1500
#: The long NUTS run that serves as logreg_cancer's reference posterior.
REFERENCE = (4, 5000)
#: Sample counts at which the NUTS curve is scored (pooled over chains).
CURVE_M = (250, 500, 1000, 2000, 4000, 6000)
CDS_SAMPLERS = ("DIS-128", "CDDS-1", "SCDS-1")
#: logreg_cancer's bar: one-step CDDS within this factor of NUTS's own moment errors at the
#: same number of draws (NUTS's last curve point, 6000).
NUTS_FACTOR = 3.0
#: Weight diagnostics (valid weights, from the cells' evaluations) copied into the summary.
WEIGHT_KEYS = ("elbo", "log_Z_is", "ess", "abs_dlogZ_is")


def run_nuts(
    target: Target, chains: int, warmup: int, draws: int, stream: Stream
) -> dict[str, torch.Tensor]:
    """Pooled draws (chains interleaved), each chain's cumulative wall time and gradient
    evaluations per kept draw (chains × draws), and the warm-ups' totals. Pyro draws from
    `stream`'s first draw, chain c starts from draw c."""
    calls = 0

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return -target.log_prob(params["x"][None].double())[0]

    stream.seed_global()
    per_chain, warmup_s, warmup_grads = [], 0.0, 0
    for chain in range(chains):
        start, stamps, marks = time.perf_counter(), [], {}

        def hook(_kernel: Any, _params: Any, stage: str, _i: int) -> None:
            if stage == "Warmup":
                marks["warmup_end"] = (time.perf_counter(), calls)  # noqa: B023
            else:
                stamps.append((time.perf_counter(), calls))  # noqa: B023

        x0 = torch.randn(target.dim, generator=stream.generator(chain))
        mcmc = MCMC(
            NUTS(potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True),
            num_samples=draws,
            warmup_steps=warmup,
            initial_params={"x": x0.double()},
            hook_fn=hook,
            disable_progbar=True,
        )
        calls_before = calls
        mcmc.run()
        w_time, w_calls = marks["warmup_end"]
        warmup_s += w_time - start
        warmup_grads += w_calls - calls_before
        times = torch.tensor([t - w_time for t, _ in stamps], dtype=torch.float64)
        grads = torch.tensor([c - w_calls for _, c in stamps], dtype=torch.float64)
        per_chain.append((mcmc.get_samples()["x"].float(), times, grads))
    # interleave chains: the first m pooled draws are about m / chains of each chain
    return {
        "x": torch.stack([c[0] for c in per_chain], 1).reshape(-1, target.dim),
        "seconds": torch.stack([c[1] for c in per_chain]),
        "grads": torch.stack([c[2] for c in per_chain]),
        "warmup_s": torch.tensor(warmup_s),
        "warmup_grads": torch.tensor(float(warmup_grads)),
    }


def pooled_cost(per_chain: torch.Tensor, m: int) -> float:
    """Cost (chains × draws cumulative) of the first m interleaved draws: chain c contributes
    its first ⌈(m − c)/chains⌉ draws, and the chains run one after another."""
    chains = len(per_chain)
    return float(sum(per_chain[c, math.ceil((m - c) / chains) - 1] for c in range(min(m, chains))))


def quality(
    target: Target, x: torch.Tensor, reference: torch.Tensor, floors: dict[int, float]
) -> dict[str, Any]:
    """Paper Sinkhorn over its floor at m = len(x) and mode coverage (targets with exact
    samples), or the posterior moment errors against a reference run (others)."""
    if not target.has_exact_samples:
        return marginal_std_errors(x, reference)
    m = len(x)
    if m not in floors:
        floors[m] = noise_floor(target, m, BASELINE_FLOOR.generator(m))["sinkhorn"]
    value = paper_sinkhorn(x, reference[:m]).value
    out = {"sinkhorn": value, "floor": floors[m], "ratio": value / floors[m]}
    assignments = target.mode_assignment(x)
    if assignments is not None:
        out.update(mode_coverage(assignments, target.n_modes))
    return out


def nuts_curve(
    target: Target,
    nuts: dict[str, torch.Tensor],
    reference: torch.Tensor,
    floors: dict[int, float],
) -> list[dict[str, Any]]:
    points = []
    for m in (m for m in CURVE_M if m <= len(nuts["x"])):
        points.append(
            {
                "sampler": "NUTS",
                "m": m,
                "seconds": float(nuts["warmup_s"]) + pooled_cost(nuts["seconds"], m),
                "grads": float(nuts["warmup_grads"]) + pooled_cost(nuts["grads"], m),
                **quality(target, nuts["x"][:m], reference, floors),
            }
        )
    return points


def training_grads(params: Params, sampler: str) -> float:
    """Target-score calls spent training a sampler.

    DIS: one per SDE step of every path. CDDS: its teacher's, plus one per fine ODE step of
    every bank fragment (rebuilt every `refresh_every` iterations with `fragments: refresh`).
    SCDS: per iteration the SDE paths' steps, the fine PF-ODE paths' steps (`sc_target:
    fine_ode`), and per self-consistency term one score call per state for the 2d step (plus
    two for the half steps with `half_steps`); the terms are 1 + the extra steps at that
    iteration (`extra_steps_at`, the ramp included).
    """
    teacher = params.teacher
    teacher_calls = teacher.optim.iterations * teacher.optim.batch_size * teacher.n_steps
    if sampler.startswith("DIS"):
        return float(teacher_calls)
    if sampler.startswith("CDDS"):
        cdds = params.cdds
        if cdds.fragments == "online":
            raise ValueError("cdds.fragments = 'online': its score calls are not counted here")
        banks = 1
        if cdds.fragments == "refresh":
            banks += (cdds.optim.iterations - 1) // cdds.refresh_every
        return float(teacher_calls + banks * cdds.bank_size * cdds.n_fine)
    scds = params.scds
    iterations, batch = scds.optim.iterations, scds.optim.batch_size
    fine = scds.sc_target == "fine_ode"
    terms = sum(
        1 + extra_steps_at(i, iterations, scds.sc_extra_steps, scds.sc_extra_ramp)
        for i in range(iterations)
    )
    paths = iterations * batch * scds.n_steps * (2 if fine else 1)
    return float(paths + terms * batch * (1 if fine else 3))


def cds_points(
    target: Target,
    rows: list[dict[str, Any]],
    reference: torch.Tensor,
    floors: dict[int, float],
) -> list[dict[str, Any]]:
    """Each cds sampler's cost and quality at every m of the NUTS curve."""
    points = []
    for row in rows:
        params = load_params(Path(row["checkpoint"]).parents[2] / "params.yaml")
        sampler = sampler_from_checkpoint(row["checkpoint"], row["n_steps"])
        per_sample = row["sample_s_per_1e6"] / 1e6
        for m in CURVE_M:
            x = sampler.sample(m, BASELINE_CDS_SAMPLES.generator(m))
            points.append(
                {
                    "sampler": row["sampler"],
                    "m": m,
                    "seconds": row["total_train_s"] + m * per_sample,
                    "grads": training_grads(params, row["sampler"])
                    + m * (row["nfe"] if row["sampler"] != "CDDS-1" else 0),
                    "train_s": row["total_train_s"],
                    "sample_s": per_sample,
                    **quality(target, x, reference, floors),
                }
            )
    return points


def measured_on(record: dict[str, Any]) -> str:
    """When and on how many torch threads a row was measured (`_common.machine`)."""
    return f"{record['date'][:10]}, {record['threads']} torch threads"


def posterior_bar(points: list[dict[str, Any]], m: int) -> dict[str, Any]:
    """For a target without exact samples: each cds sampler's largest posterior-mean and
    posterior-std errors at m draws over NUTS's own at m, and whether one-step CDDS is within
    `NUTS_FACTOR` of NUTS on both."""
    at = {p["sampler"]: p for p in points if p["m"] == m}
    out: dict[str, Any] = {}
    for sampler in ("DIS-128", "CDDS-1"):
        for key in ("mean_abs_err_max", "std_abs_err_max"):
            out[f"{sampler}_{key}"] = at[sampler][key]
            out[f"{sampler}_{key}_over_nuts"] = at[sampler][key] / at["NUTS"][key]
    out["nuts_std_abs_err_max"] = at["NUTS"]["std_abs_err_max"]
    out["cdds_within_nuts_factor"] = all(
        out[f"CDDS-1_{key}_over_nuts"] <= NUTS_FACTOR
        for key in ("mean_abs_err_max", "std_abs_err_max")
    )
    return out


def break_even(
    nuts: dict[str, torch.Tensor], rows: list[dict[str, Any]]
) -> dict[str, float | None]:
    """Samples after which the one-step CDDS sampler's total wall time drops below NUTS's and
    below the 128-step teacher's (None: never; 0: from the first sample)."""
    by_name = {r["sampler"]: r for r in rows}
    one = by_name["CDDS-1"]
    train, per_sample = one["total_train_s"], one["sample_s_per_1e6"] / 1e6
    nuts_rate = float(nuts["seconds"][:, -1].sum()) / len(nuts["x"])
    out: dict[str, float | None] = {}
    for name, fixed, rate in (
        ("vs_nuts", float(nuts["warmup_s"]), nuts_rate),
        (
            "vs_dis128",
            by_name["DIS-128"]["total_train_s"],
            by_name["DIS-128"]["sample_s_per_1e6"] / 1e6,
        ),
    ):
        gap = rate - per_sample
        out[name] = None if gap <= 0 else max(0.0, (train - fixed) / gap)
    out["nuts_s_per_draw"] = nuts_rate
    out["cdds_s_per_sample"] = per_sample
    return out


def plot(name: str, points: list[dict[str, Any]], key: str, label: str) -> Path:
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for sampler in dict.fromkeys(p["sampler"] for p in points):
        group = [p for p in points if p["sampler"] == sampler]
        for ax, x_key in zip(axes, ("seconds", "grads"), strict=True):
            ax.plot([p[x_key] for p in group], [p[key] for p in group], "o-", label=sampler)
    for ax, x_label in zip(
        axes, ("wall time incl. training [s]", "gradient evaluations"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
    axes[0].legend()
    figure.suptitle(f"{name}: quality against cost (NUTS: {CHAINS} chains, {WARMUP} warm-up)")
    figure.tight_layout()
    path = RESULTS / f"baselines_{name}.png"
    figure.savefig(path, dpi=90)
    return path


def logreg_rows() -> list[dict[str, Any]]:
    """CDDS (and its teacher) on logreg_cancer from one pipeline sweep cell: seed 0, the
    target's own preset and nothing else, as `cds run --set target.name=logreg_cancer` runs."""
    grid = SweepGrid(name="baselines-logreg", targets=["logreg_cancer"], methods=["cdds"])
    directory = ROOT / "runs" / "sweeps" / grid.name
    # the cell's torch threads are this process's (OMP_NUM_THREADS), not all the cores
    _, results = run_sweep(grid, ROOT, directory, "local", torch_threads=torch.get_num_threads())
    (cell,) = cells(grid)
    if results[0]["status"] != "ok":
        raise RuntimeError(f"cell {cell.id} failed: {results[0]['error']}")
    layout = Layout(directory / "cells" / cell.id)
    report = json.loads(layout.report.read_text())
    teacher_s = train_seconds(layout.root, "teacher")
    student_s = train_seconds(layout.root, "student")
    rows = []
    for sampler, path, n_steps, nfe, total, metrics in (
        ("DIS-128", layout.teacher, None, 128, teacher_s, report["teacher"]),
        ("CDDS-1", layout.student, 1, 1, teacher_s + student_s, report["student"]),
    ):
        s = sampler_from_checkpoint(path, n_steps)
        start = time.perf_counter()
        s.sample(20_000)
        rows.append(
            {
                "sampler": sampler,
                "checkpoint": str(path),
                "n_steps": n_steps,
                "nfe": nfe,
                "total_train_s": total,
                "sample_s_per_1e6": (time.perf_counter() - start) * 50,
                **{key: metrics.get(key) for key in WEIGHT_KEYS},
            }
        )
    return rows


def paper_table_rows(table: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The target's seed-0 cds rows of paper_table.json, whose cells must be on this machine."""
    rows = [
        r for r in table if r["target"] == name and r["seed"] == 0 and r["sampler"] in CDS_SAMPLERS
    ]
    if not rows:
        raise SystemExit(f"no paper_table.py rows for {name}: run paper_table.py first")
    missing = [r["checkpoint"] for r in rows if not Path(r["checkpoint"]).exists()]
    if missing:
        raise SystemExit(
            f"{name}: the paper table's checkpoint {missing[0]} is not on this machine: "
            f"run paper_table.py --targets {name} first (it trains the cells again)"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    targets = ["gmm9", "funnel", "mw54", "logreg_cancer"]
    parser.add_argument("--targets", nargs="+", default=targets, choices=targets)
    args = parser.parse_args()
    table = json.loads((RESULTS / "paper_table.json").read_text())["rows"]
    for name in args.targets:  # refused before any NUTS run or training
        if name != "logreg_cancer":
            paper_table_rows(table, name)
    summary, curves = [], {}
    for name in args.targets:
        target = get_target(name)
        if target.has_exact_samples:
            rows = paper_table_rows(table, name)
            reference = target.sample(max(CURVE_M), BASELINE_REFERENCE.generator())
        else:
            rows = logreg_rows()
            long = run_nuts(target, REFERENCE[0], WARMUP, REFERENCE[1], NUTS_REFERENCE_CHAINS)
            reference = long["x"]
        nuts = run_nuts(target, CHAINS, WARMUP, DRAWS, NUTS_CHAINS)
        floors: dict[int, float] = {}
        points = nuts_curve(target, nuts, reference, floors)
        points += cds_points(target, rows, reference, floors)
        key, label = (
            ("ratio", "paper Sinkhorn / floor")
            if target.has_exact_samples
            else ("mean_abs_err_max", "max |posterior mean error|")
        )
        plot(name, points, key, label)
        curves[name] = points
        last = next(p for p in reversed(points) if p["sampler"] == "NUTS")
        summary.append(
            {
                "target": name,
                "measured": measured_on(machine()),
                "nuts_draws": len(nuts["x"]),
                "nuts_warmup_s": float(nuts["warmup_s"]),
                "nuts_s": last["seconds"],
                "nuts_grads": last["grads"],
                "nuts_quality": last[key],
                "nuts_coverage": last.get("entropic_coverage", math.nan),
                "cds_cells": sorted({Path(r["checkpoint"]).parents[2].name for r in rows}),
                "cds_overrides": rows[0].get("overrides", []),
                "cds_weights": {r["sampler"]: {k: r.get(k) for k in WEIGHT_KEYS} for r in rows},
                **{
                    f"{p['sampler']}_quality": p[key]
                    for p in points
                    if p["sampler"] != "NUTS" and p["m"] == last["m"]
                },
                **break_even(nuts, rows),
                **({} if target.has_exact_samples else posterior_bar(points, last["m"])),
            }
        )
        print(f"{name}: done", flush=True)
    kept = previous_results(__file__)
    notes: dict[str, Any] = {}
    others = [r for r in kept.get("summary", []) if r["target"] not in args.targets]
    if others:  # keep the targets this run did not redo, with their machine and notes
        summary = [{"measured": measured_on(kept["machine"]), **r} for r in others] + summary
        curves = {**{k: v for k, v in kept["curves"].items() if k not in args.targets}, **curves}
        notes = {key: kept[key] for key in ("superseded_log_z",) if key in kept}
    write_results(__file__, {"chains": CHAINS, "warmup": WARMUP, "draws": DRAWS,
                             "summary": summary, "curves": curves, **notes})  # fmt: skip
    print_table(summary, list(summary[0]))


if __name__ == "__main__":
    main()
