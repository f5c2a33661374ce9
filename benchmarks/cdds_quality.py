"""CDDS one-step quality against our own 128-step DIS teacher, measured in the same run.

Trains the teacher (default budget) on gmm9 (and other targets given on the command line),
builds the fragment bank as the pipeline does (default size and seed), then distils the teacher
with each configuration in CONFIGS and reports for each: the paper Sinkhorn of the one-step
sampler and of the teacher against the same fresh exact samples at n = 6000 (and 20,000 where
CONFIGS asks, gmm9 only), the ratio student/teacher, the K = 2, 4, 8 values, one-step DF-weight
log Z (IS and ELBO) with ESS and the share of samples where the Jacobian sign flips, training
time and steps, and one-step sampling throughput. The online-fragment run (the paper's mode,
the teacher's PF ODE integrated every step) against the bank at the same iterations gives the
quality per CPU-second of the two.

Run:  .venv/bin/python benchmarks/cdds_quality.py [target ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import best_of, print_table, write_results

from cds.cdds import generate_fragments, load_student, one_step_weights_report, train_student
from cds.config import load_params
from cds.dis import load_teacher, train_teacher
from cds.metrics import paper_sinkhorn
from cds.samplers import coarse_indices, sample_sde
from cds.sde import uniform_grid
from cds.serving import sampler_from_checkpoint
from cds.targets import StandardNormalPrior, get_target

#: name → (overrides of the cdds params, also evaluate at n = 20,000 on gmm9)
CONFIGS = {
    "online, 2000 it": (["cdds.fragments=online", "cdds.optim.iterations=2000"], False),
    "bank, 2000 it": (["cdds.optim.iterations=2000"], False),
    "bank, 8000 it": (["cdds.optim.iterations=8000"], False),
    "bank, pseudo-Huber, 8000 it": (
        ["cdds.loss=pseudo_huber", "cdds.optim.iterations=8000"],
        False,
    ),
    "bank, 30000 it (default)": ([], True),
    "bank, 90000 it": (["cdds.optim.iterations=90000"], True),
}
TEACHER = {"gmm9": 1000, "mw54": 1000, "funnel": 2000, "mw52": 2000}


def main(targets: list[str]) -> None:
    rows = []
    for name in targets or ["gmm9"]:
        target = get_target(name)
        prior = StandardNormalPrior(target.dim)
        sizes = [6000, 20_000] if name == "gmm9" else [6000]
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
            cfg = load_params(None, [f"target.name={name}"]).cdds
            coarse = coarse_indices(cfg.n_fine, cfg.n_coarse)
            start = time.perf_counter()
            bank = generate_fragments(
                teacher,
                target,
                prior,
                uniform_grid(cfg.n_fine),
                coarse,
                cfg.bank_size,
                torch.Generator().manual_seed(7),
            )
            bank_s = time.perf_counter() - start
            for label, (overrides, large_n) in CONFIGS.items():
                params = load_params(
                    None, [f"target.name={name}", "cdds.eval_every=1000000", *overrides]
                )
                path = Path(tmp) / f"{label}.pt"
                start = time.perf_counter()
                train_student(params, target, teacher, "t", path, bank=bank, progress=False)
                train_s = time.perf_counter() - start
                student, _ = load_student(path)
                row = {
                    "target": name,
                    "config": label,
                    "iterations": params.cdds.optim.iterations,
                    "train_s": train_s,
                    "bank_s": bank_s if params.cdds.fragments == "bank" else 0.0,
                    "teacher_train_s": teacher_s,
                }
                for n in sizes if large_n else sizes[:1]:
                    x = sampler_from_checkpoint(path).sample(n, torch.Generator().manual_seed(8))
                    val = paper_sinkhorn(x, refs[n]).value
                    row[f"sinkhorn_{n}"] = val
                    row[f"teacher_{n}"] = teacher_val[n]
                    row[f"ratio_{n}"] = val / teacher_val[n]
                for k in (2, 4, 8):
                    xk = sampler_from_checkpoint(path, k).sample(
                        6000, torch.Generator().manual_seed(9)
                    )
                    row[f"K{k}_6000"] = paper_sinkhorn(xk, refs[6000]).value
                weights = one_step_weights_report(student, target, prior, 6000, 10)
                row.update({f"w_{k}": v for k, v in weights.items()})
                sampler = sampler_from_checkpoint(path)
                per_1m = best_of(lambda s=sampler: s.sample(1_000_000), repeats=3)
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
            "bank_s",
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
