"""SCDS quality on gmm9 against our own 128-step DIS teacher, measured in the same run. With
the paper's self-consistency target (two half steps of the stop-gradient network): the joint
update (one Adam step on λ_S·L_S + λ_SC·L_SC), the authors' alternating update (two Adam steps
per iteration; schedules still advance once), the joint update with 8 extra
self-consistency-only steps per iteration (`scds.sc_extra_steps`), with step sizes drawn ∝
their size^0.5 (`scds.level_bias`), and with three times the iterations. With the target
taken from the sampler's own base-step PF ODE (`scds.sc_target: fine_ode`): alone, with 8 and
with 32 extra steps, and with the 32 ramped in over a quarter (the default), half or all of
the run (`scds.sc_extra_ramp`).

For each: the paper Sinkhorn of the K-step ODE sampler for K = 1, 2, 4, …, N at n = 6000 and of
K = 1 at n = 20,000, each beside the teacher's value on the same reference; log Z and ESS from
valid weights (deterministic-flow weights with the exact log-det for K < N, the SDE weights of
the N-step diffusion sampler); training wall time and time per iteration.

Run:  .venv/bin/python benchmarks/scds_quality.py [--configs LABEL ...]
(naming configurations reruns only those and keeps the other rows of the results file; a rerun
trains the same seeded teacher, so its rows stay comparable)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    EXACT_REFERENCE,
    FIXED_BUDGETS,
    SCDS_WEIGHTS,
    STUDENT_SAMPLES,
    TEACHER_SAMPLES,
    previous_results,
    previous_rows,
    print_table,
    write_results,
)

from cds.config import load_params
from cds.metrics import log_z_report, paper_sinkhorn
from cds.samplers import sampler_from_checkpoint
from cds.scds import train_scds
from cds.scoring import log_weights
from cds.targets import get_target
from cds.teacher import train_teacher

#: name → overrides of the scds params. Every configuration pins its target and extra steps, so
#: a rerun reproduces its row whatever the current defaults (`PAPER`: the paper's two-half-step
#: target, no extra steps; the default is the ramp 0.25 row).
PAPER = ["scds.sc_target=half_steps", "scds.sc_extra_steps=0"]
FINE_ODE = ["scds.update=joint", "scds.sc_target=fine_ode", "scds.sc_extra_ramp=0"]
CONFIGS = {
    "joint": ["scds.update=joint", *PAPER],
    "alternating": ["scds.update=alternating", *PAPER],
    "joint + 8 SC steps": ["scds.update=joint", *PAPER, "scds.sc_extra_steps=8"],
    "joint, level bias 0.5": ["scds.update=joint", *PAPER, "scds.level_bias=0.5"],
    "joint, 4500 it": ["scds.update=joint", *PAPER, "scds.optim.iterations=4500"],
    "joint, fine-ODE target": [*FINE_ODE, "scds.sc_extra_steps=0"],
    "joint, fine-ODE target + 8 SC steps": [*FINE_ODE, "scds.sc_extra_steps=8"],
    "joint, fine-ODE target + 32 SC steps": [*FINE_ODE, "scds.sc_extra_steps=32"],
    **{
        f"joint, fine-ODE target + 32 SC steps, ramp {ramp}": [
            *FINE_ODE,
            "scds.sc_extra_steps=32",
            f"scds.sc_extra_ramp={ramp}",
        ]
        for ramp in (0.25, 0.5, 1)
    },
}
SIZES = (6000, 20_000)


def main(configs: list[str]) -> None:
    unknown = [label for label in configs if label not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; valid: {list(CONFIGS)}")
    target = get_target("gmm9")
    refs = {n: target.sample(n, EXACT_REFERENCE.generator(n)) for n in SIZES}
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(None, ["teacher.eval_every=100000"], preset=FIXED_BUDGETS)
        start = time.perf_counter()
        train_teacher(params, target, Path(tmp) / "teacher.pt", progress=False)
        teacher_s = time.perf_counter() - start
        teacher = sampler_from_checkpoint(Path(tmp) / "teacher.pt")
        teacher_val = {
            n: paper_sinkhorn(teacher.sample(n, TEACHER_SAMPLES.generator()), refs[n]).value
            for n in SIZES
        }
        for label, overrides in CONFIGS.items():
            if configs and label not in configs:
                continue
            params = load_params(None, overrides, preset=FIXED_BUDGETS)
            path = Path(tmp) / f"{label.replace(' ', '_')}.pt"
            start = time.perf_counter()
            train_scds(params, target, path, progress=False)
            train_s = time.perf_counter() - start
            n_steps = params.scds.n_steps

            def score(sampler, kind: str) -> dict:
                x = sampler.sample(SIZES[0], STUDENT_SAMPLES.generator())
                value = paper_sinkhorn(x, refs[SIZES[0]]).value
                log_w, signs = log_weights(sampler, target, SIZES[0], SCDS_WEIGHTS.generator())
                return {
                    "nfe": sampler.nfe,
                    "sampler": kind,
                    "sinkhorn_6000": value,
                    "ratio_6000": value / teacher_val[SIZES[0]],
                    **log_z_report(log_w, target.log_Z, det_signs=signs),
                }

            curve = [
                score(sampler_from_checkpoint(path, 2**i), "ode")
                for i in range(n_steps.bit_length())
            ]
            sde_point = score(sampler_from_checkpoint(path, sde=True), "sde")
            one = sampler_from_checkpoint(path, 1).sample(SIZES[1], STUDENT_SAMPLES.generator())
            one_20k = paper_sinkhorn(one, refs[SIZES[1]]).value
            curves[label] = [*curve, sde_point]
            rows.append(
                {
                    "update": label,
                    "iterations": params.scds.optim.iterations,
                    "train_s": train_s,
                    "s_per_iteration": train_s / params.scds.optim.iterations,
                    "teacher_6000": teacher_val[SIZES[0]],
                    "K1_6000": curve[0]["sinkhorn_6000"],
                    "K1_ratio_6000": curve[0]["ratio_6000"],
                    "K1_ratio_20000": one_20k / teacher_val[SIZES[1]],
                    "best_K": min(curve, key=lambda p: p["sinkhorn_6000"])["nfe"],
                    "best_ratio_6000": min(p["ratio_6000"] for p in curve),
                    "KN_ratio_6000": curve[-1]["ratio_6000"],
                    "K1_abs_dlogZ_is": curve[0]["abs_dlogZ_is"],
                    "K1_ess": curve[0]["ess"],
                    "sde_abs_dlogZ_is": sde_point["abs_dlogZ_is"],
                    "sde_ratio_6000": sde_point["ratio_6000"],
                }
            )
            print(f"{label}: K=1 ratio {rows[-1]['K1_ratio_6000']:.3f}", file=sys.stderr)
    if configs:  # keep the rows and curves this run did not redo
        kept = [r for r in previous_rows(__file__) if r["update"] not in configs]
        rows = kept + rows
        previous = previous_results(__file__).get("curves", {})
        curves = {**{k: v for k, v in previous.items() if k not in configs}, **curves}
    write_results(
        __file__,
        {"teacher_train_s": teacher_s, "teacher": teacher_val, "rows": rows, "curves": curves},
    )
    print_table(rows, list(rows[0]))
    for label, curve in curves.items():
        print(f"\n{label}: budget curve")
        print_table(curve, ["nfe", "sampler", "sinkhorn_6000", "ratio_6000", "abs_dlogZ_is", "ess"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=[], help="labels of CONFIGS to run")
    main(parser.parse_args().configs)
