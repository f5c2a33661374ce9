"""CDDS one-step quality against our own 128-step DIS teacher, measured in the same run.

Runs the pipeline's own stages in a temporary project per target, gmm9 by default: the target
stage, the teacher stage (the budget of the target's preset), the fragments stage
(the pipeline's bank: its size and seed stream; run again only when a configuration changes the
grid or the bank size) and the student stage for each configuration in CONFIGS. For each it
reports: the paper Sinkhorn of the one-step sampler, of the teacher's 128-step SDE and of its
128-step PF ODE (the map the student distils, so its ceiling) against the same fresh exact
samples at n = 6000 (and 20,000 where CONFIGS asks, gmm9 only), the ratio student/teacher, the
K = 2, 4, 8 values that the coarse grid allows (K < n_coarse), one-step DF-weight log Z (IS and
ELBO) with ESS and the share of samples where the Jacobian sign flips, training time and steps,
and one-step sampling throughput. The online-fragment run (the paper's mode, the teacher's PF
ODE integrated every step) against the bank at the same iterations gives the quality per
CPU-second of the two.

Run:  .venv/bin/python benchmarks/cdds_quality.py [target ...] [--configs LABEL ...]
(naming targets or configurations reruns only those and keeps the other rows of the results
file; a rerun trains the same seeded teacher, so its rows stay comparable). The teacher stage
shares finished teachers by fingerprint through --teacher-store (default
runs/benchmarks/teachers), as it does for a sweep's cells, so a rerun reuses them;
teacher_train_s is the training time of this run (0 for a reused teacher).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    CDDS_MULTISTEP_SAMPLES,
    CDDS_WEIGHTS,
    EXACT_REFERENCE,
    FIXED_BUDGETS,
    STUDENT_SAMPLES,
    TEACHER_SAMPLES,
    as_set_items,
    best_of,
    previous_results,
    print_table,
    run_stage,
    target_overrides,
    teacher_overrides,
    write_results,
)

from cds.cdds import one_step_weights_report
from cds.config import load_params
from cds.integrators import sample_pf_ode
from cds.metrics import paper_sinkhorn
from cds.pipeline.layout import Layout
from cds.pipeline.stages.teacher import SHARED_TEACHERS_ENV
from cds.pipeline.timings import read_timings
from cds.samplers import ConsistencySampler, DiffusionSampler, sampler_from_checkpoint
from cds.targets import get_target

#: The default's loss and learning rate, pinned so that a row keeps its meaning whatever the
#: current defaults (every other setting is the default's).
DEFAULT = ["cdds.optim.lr=5e-3", "cdds.loss=pseudo_huber"]
MSE = ["cdds.optim.lr=5e-3", "cdds.loss=mse"]
DEFAULT_CONFIG = "bank, 5 coarse, 100000 it, lr 5e-3, pseudo-Huber (default)"
#: label → (overrides of the cdds params, also evaluate at n = 20,000 on gmm9). The coarse grid
#: is the main lever: the 18 points of docs/methods.md §4 bootstrap the boundary through 17
#: pairs and learn slowly (and diverged on long schedules), fewer points learn the one-step map
#: faster. The labels without a loss ran with MSE.
CONFIGS = {
    "bank, 18 coarse (docs/methods.md §4 grid), 30000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.n_coarse=18", "cdds.optim.iterations=30000"],
        False,
    ),
    "online, 5 coarse, 4000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.fragments=online", "cdds.optim.iterations=4000"],
        False,
    ),
    "bank, 5 coarse, 4000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.optim.iterations=4000"],
        False,
    ),
    "bank, 5 coarse, 30000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.optim.iterations=30000"],
        False,
    ),
    "bank, 2 coarse (direct distillation), 60000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.n_coarse=2", "cdds.optim.iterations=60000"],
        True,
    ),
    "bank, 9 coarse, 60000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.n_coarse=9", "cdds.optim.iterations=60000"],
        True,
    ),
    "bank, 5 coarse, 100000 it, lr 5e-3": (MSE, True),
    DEFAULT_CONFIG: (DEFAULT, True),
    "bank, 5 coarse, 60000 it, lr 5e-3, pseudo-Huber": (
        [*DEFAULT, "cdds.optim.iterations=60000"],
        True,
    ),
    "bank, 5 coarse, 100000 it, lr 2e-3, pseudo-Huber": (
        ["cdds.optim.lr=2e-3", "cdds.loss=pseudo_huber"],
        True,
    ),
    "bank, 5 coarse, 100000 it, lr 3e-3, pseudo-Huber": (
        ["cdds.optim.lr=3e-3", "cdds.loss=pseudo_huber"],
        True,
    ),
    "bank, 5 coarse, 200000 it, lr 3e-3, pseudo-Huber": (
        ["cdds.optim.lr=3e-3", "cdds.loss=pseudo_huber", "cdds.optim.iterations=200000"],
        True,
    ),
    "bank, 5 coarse, 150000 it, lr 5e-3": ([*MSE, "cdds.optim.iterations=150000"], True),
}
#: The results file's note on a run's rows (a rerun that keeps earlier rows keeps the file's
#: notes on them instead).
NOTE = (
    "Fields loss, lr, ema_window and torch_threads give what each row ran with; bank_s is the "
    "fragments stage's time for the row's bank, shared by the rows on the same grid."
)


def recommended_config(name: str) -> str:
    """The configuration that is the default with the CDDS settings of the target's preset
    applied (which paper_table.py's cells use too)."""
    cdds = {k: v for k, v in target_overrides(name).items() if k.startswith("cdds.")}
    settings = as_set_items(cdds)
    wanted = load_params(None, [*CONFIGS[DEFAULT_CONFIG][0], *settings], preset=FIXED_BUDGETS).cdds
    for label, (overrides, _) in CONFIGS.items():
        if load_params(None, overrides, preset=FIXED_BUDGETS).cdds == wanted:
            return label
    raise SystemExit(f"no configuration in CONFIGS is the default with {name}'s {settings}")


def measure_target(name: str, wanted: list[str]) -> list[dict[str, Any]]:
    """The rows of the `wanted` configurations on target `name`, from one temporary project."""
    target = get_target(name)
    sizes = [6000, 20_000] if name == "gmm9" else [6000]
    base = [
        f"target.name={name}",
        *as_set_items(teacher_overrides(name)),
        "cdds.eval_every=1000000",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        params = load_params(None, base, preset=FIXED_BUDGETS)
        run_stage("target", params, layout)
        run_stage("teacher", params, layout)
        teacher_train_s = read_timings(layout.root, "teacher").get("train_seconds", math.nan)
        teacher = sampler_from_checkpoint(layout.teacher, 128)
        assert isinstance(teacher, DiffusionSampler)
        refs = {n: target.sample(n, EXACT_REFERENCE.generator(n)) for n in sizes}
        teacher_val = {
            n: paper_sinkhorn(teacher.sample(n, TEACHER_SAMPLES.generator()), refs[n]).value
            for n in sizes
        }
        # the map the student distils: the teacher's 128-step PF ODE (its quality ceiling)
        teacher_ode = {
            n: paper_sinkhorn(
                sample_pf_ode(
                    teacher.control,
                    teacher.target,
                    teacher.prior,
                    teacher.grid,
                    n,
                    TEACHER_SAMPLES.generator(),
                ),
                refs[n],
            ).value
            for n in sizes
        }
        bank_seconds: dict[tuple[int, int, int], float] = {}
        bank_built = None  # the (n_fine, n_coarse, bank_size) of the bank in the project
        for label, (overrides, large_n) in CONFIGS.items():
            if label not in wanted:
                continue
            params = load_params(None, [*base, *overrides], preset=FIXED_BUDGETS)
            cfg = params.cdds
            if cfg.fragments != "online":
                bank = (cfg.n_fine, cfg.n_coarse, cfg.bank_size)
                if bank != bank_built:
                    start = time.perf_counter()
                    run_stage("fragments", params, layout)
                    bank_seconds.setdefault(bank, time.perf_counter() - start)
                    bank_built = bank
            layout.student.unlink(missing_ok=True)  # every configuration trains from scratch
            start = time.perf_counter()
            run_stage("student", params, layout)
            train_s = time.perf_counter() - start
            sampler = sampler_from_checkpoint(layout.student)
            assert isinstance(sampler, ConsistencySampler)
            row = {
                "target": name,
                "config": label,
                "n_coarse": cfg.n_coarse,
                "iterations": cfg.optim.iterations,
                "loss": cfg.loss,
                "lr": cfg.optim.lr,
                "ema_window": cfg.optim.ema_window,
                "torch_threads": torch.get_num_threads(),
                "train_s": train_s,
                "bank_s": bank_seconds[bank_built] if cfg.fragments == "bank" else 0.0,
                "teacher_train_s": teacher_train_s,
            }
            for n in sizes if large_n else sizes[:1]:
                x = sampler.sample(n, STUDENT_SAMPLES.generator())
                val = paper_sinkhorn(x, refs[n]).value
                row[f"sinkhorn_{n}"] = val
                row[f"teacher_{n}"] = teacher_val[n]
                row[f"teacher_ode_{n}"] = teacher_ode[n]
                row[f"ratio_{n}"] = val / teacher_val[n]
            for k in (k for k in (2, 4, 8) if k < cfg.n_coarse):
                xk = sampler_from_checkpoint(layout.student, k).sample(
                    6000, CDDS_MULTISTEP_SAMPLES.generator()
                )
                row[f"K{k}_6000"] = paper_sinkhorn(xk, refs[6000]).value
            weights = one_step_weights_report(
                sampler.student, target, sampler.prior, 6000, CDDS_WEIGHTS.generator()
            )
            row.update({f"w_{k}": v for k, v in weights.items()})
            per_1m = best_of(lambda s=sampler: s.sample(1_000_000), repeats=3)
            row["samples_per_s"] = 1_000_000 / per_1m
            rows.append(row)
            print(f"{name} {label}: ratio6000={row['ratio_6000']:.3f}", file=sys.stderr)
    return rows


def main(targets: list[str], configs: list[str], teacher_store: Path) -> None:
    unknown = [label for label in configs if label not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; valid: {list(CONFIGS)}")
    # the teacher stage shares finished teachers through the store, as in a sweep
    os.environ[SHARED_TEACHERS_ENV] = str(teacher_store.resolve())
    rows = []
    for name in targets or ["gmm9"]:
        # other targets: their recommended configuration unless --configs names others
        wanted = configs or (list(CONFIGS) if name == "gmm9" else [recommended_config(name)])
        rows += measure_target(name, wanted)
    payload: dict[str, Any] = {"note": NOTE, "rows": rows}
    if targets or configs:  # keep the rows this run did not redo, and the file's notes on them
        previous = previous_results(__file__)
        redone = {(r["target"], r["config"]) for r in rows}
        kept = [r for r in previous.get("rows", []) if (r["target"], r["config"]) not in redone]
        if kept:
            payload = {**previous, "rows": kept + rows}
            payload.pop("machine", None)
    write_results(__file__, payload)
    print_table(
        payload["rows"],
        [
            "target",
            "config",
            "n_coarse",
            "iterations",
            "train_s",
            "bank_s",
            "sinkhorn_6000",
            "teacher_6000",
            "teacher_ode_6000",
            "ratio_6000",
            "ratio_20000",
            "K2_6000",
            "K4_6000",
            "K8_6000",
            "w_abs_dlogZ_is",
            "w_ess",
            "w_folded_fraction",
            "samples_per_s",
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets (default gmm9)")
    parser.add_argument("--configs", nargs="+", default=[], help="labels of CONFIGS to run")
    parser.add_argument(
        "--teacher-store",
        type=Path,
        default=Path("runs/benchmarks/teachers"),
        help="finished teachers by fingerprint, reused by later runs",
    )
    args = parser.parse_args()
    main(args.targets, args.configs, args.teacher_store)
