"""CDDS one-step quality against our own 128-step DIS teacher, measured in the same run.

Trains the teacher (default budget) on gmm9 (and other targets given on the command line), then
distils it with each configuration in CONFIGS, and reports for each: the paper Sinkhorn of the
one-step sampler and of the teacher against the same fresh exact samples at n = 6000 (and
20,000 for gmm9), the ratio student/teacher, the K = 1, 2, 4, 8 values, one-step DF-weight
log Z (IS and ELBO) with ESS and the share of samples where the Jacobian sign flips, training
time and steps, and one-step sampling throughput.

Run:  .venv/bin/python benchmarks/cdds_quality.py [target ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import best_of, print_table, write_results

from cds.cdds import load_student, one_step_weights_report, train_student
from cds.config import load_params
from cds.dis import load_teacher, make_schedule, train_teacher
from cds.metrics import paper_sinkhorn
from cds.samplers import coarse_indices, consistency_times_to_go, sample_consistency, sample_sde
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target

#: name → overrides of the cdds params
CONFIGS = {
    "paper (shared j, mse, 2000 it)": ["cdds.optim.iterations=2000"],
    "all pairs, mse, 1000 it": ["cdds.pair_sampling=all", "cdds.optim.iterations=1000"],
    "all pairs, pseudo-huber, 1000 it": [
        "cdds.pair_sampling=all",
        "cdds.loss=pseudo_huber",
        "cdds.optim.iterations=1000",
    ],
}
TEACHER = {"gmm9": 1000, "mw54": 1000, "funnel": 2000, "mw52": 2000}


def main(targets: list[str]) -> None:
    rows = []
    for name in targets or ["gmm9"]:
        target = get_target(name)
        prior = StandardNormalPrior(target.dim)
        sizes = [6000, 20000] if name == "gmm9" else [6000]
        with tempfile.TemporaryDirectory() as tmp:
            tp = load_params(
                None,
                [
                    f"target.name={name}",
                    f"teacher.optim.iterations={TEACHER[name]}",
                    "teacher.eval_every=100000",
                ],
            )
            start = time.perf_counter()
            train_teacher(tp, target, Path(tmp) / "t.pt", progress=False)
            teacher_s = time.perf_counter() - start
            teacher, _ = load_teacher(Path(tmp) / "t.pt")
            refs = {n: target.sample(n, torch.Generator().manual_seed(100 + n)) for n in sizes}
            teacher_val = {}
            for n in sizes:
                x = sample_sde(
                    teacher, target, prior, uniform_grid(128), n, torch.Generator().manual_seed(7)
                ).samples
                teacher_val[n] = paper_sinkhorn(x, refs[n]).value
            for label, overrides in CONFIGS.items():
                params = load_params(
                    None, [f"target.name={name}", "cdds.eval_every=100000", *overrides]
                )
                start = time.perf_counter()
                train_student(
                    params, target, teacher, "t", Path(tmp) / f"{label}.pt", progress=False
                )
                train_s = time.perf_counter() - start
                student, _ = load_student(Path(tmp) / f"{label}.pt")
                row = {
                    "target": name,
                    "config": label,
                    "iterations": params.cdds.optim.iterations,
                    "train_s": train_s,
                    "teacher_train_s": teacher_s,
                }
                for n in sizes:
                    x = student.sample(n, torch.Generator().manual_seed(8))
                    val = paper_sinkhorn(x, refs[n]).value
                    row[f"sinkhorn_{n}"] = val
                    row[f"teacher_{n}"] = teacher_val[n]
                    row[f"ratio_{n}"] = val / teacher_val[n]
                coarse = coarse_indices(params.cdds.n_fine, params.cdds.n_coarse)
                alpha = make_schedule(params).alpha
                for k in (2, 4, 8):
                    taus = consistency_times_to_go(k, coarse, params.cdds.n_fine, 1.0)
                    gen = torch.Generator().manual_seed(9)
                    xk = sample_consistency(student, alpha, taus, prior.sample(6000, gen), gen)
                    row[f"K{k}_6000"] = paper_sinkhorn(xk, refs[6000]).value
                weights = one_step_weights_report(student, target, prior, 6000, 10)
                row.update({f"w_{k}": v for k, v in weights.items()})
                per_1m = best_of(lambda s=student: s.sample(1_000_000), repeats=3)
                row["samples_per_s"] = 1_000_000 / per_1m
                rows.append(row)
                print(f"{name} {label}: ratio6000={row['ratio_6000']:.3f}", file=sys.stderr)
    write_results(__file__, {"rows": rows})
    print_table(
        rows,
        [
            "target",
            "config",
            "iterations",
            "train_s",
            "sinkhorn_6000",
            "teacher_6000",
            "ratio_6000",
            "ratio_20000",
            "K2_6000",
            "K4_6000",
            "K8_6000",
            "w_abs_dlogZ_is",
            "w_ess",
            "w_jacobian_negative_fraction",
            "samples_per_s",
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
