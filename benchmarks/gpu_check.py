"""GPU check, in one command of at most 8 minutes on one GPU: the device tests on CUDA, then
the work that decides training and evaluation time, timed on CUDA beside the CPU where the CPU
is affordable.

Rows (one run, CUDA and CPU side by side, each the best of a few repeats after a warm-up, CUDA
timed with synchronisation):
- teacher step, gmm9 and lgcp (B = 512, N = 128): one log-variance iteration through the
  trainer (`cds.training.Trainer`), simulation, batched RND, backward, Adam and EMA;
- CDDS step (gmm9, the default bank of fragments from the teacher's PF ODE, B = 512);
- SCDS iteration (gmm9, the defaults: LV loss plus 32 extra self-consistency steps);
- one-step sampling throughput of a CDDS sampler (`ConsistencySampler.sample`);
- the paper Sinkhorn between two exact gmm9 sets of n = 10⁵ (CUDA only: the CPU did not finish
  in 54 minutes).
Goals (one H200-class GPU): lgcp teacher step ≤ 0.1 s, Sinkhorn at 10⁵ ≤ 60 s, one-step
sampling ≥ 10⁸ samples/s.

It needs only torch and the cds library (no Prefect, DVC or MLflow). On the lent GPU machine,
which lacks pydantic, carry its wheels (`pydantic`, `pydantic-core`, `annotated-types`,
`typing-inspection`; see the device tool's notes) and run, from the repository root:

    PYTHONPATH=.:benchmarks python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

then copy the file to benchmarks/results/gpu_check.json. Without a GPU it refuses to run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import FIXED_BUDGETS, RESULTS, TIMING, machine, print_table

from cds.cdds import ConsistencyObjective, generate_fragments
from cds.config import Params, load_params
from cds.integrators import coarse_indices
from cds.metrics import paper_sinkhorn
from cds.networks import ConsistencyStudent
from cds.run_config import make_control, make_schedule
from cds.samplers import ConsistencySampler
from cds.scds import SelfConsistencyObjective
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target
from cds.teacher import LogVarianceObjective
from cds.training import Objective, Trainer

ROOT = Path(__file__).resolve().parents[1]
SINKHORN_N = 100_000
GOALS = {"teacher_step_lgcp_s": 0.1, "sinkhorn_1e5_s": 60.0, "samples_per_s": 1e8}


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of `repeats` calls after `warmup`, synchronising a CUDA device."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def trainer_step(model: torch.nn.Module, objective: Objective, params: Any, tmp: Path) -> Callable:
    """One training iteration of the product's trainer (checkpoints out of the way)."""
    optim = params.optim.model_copy(update={"checkpoint_every": 10**9, "iterations": 10**6})
    trainer = Trainer(model, objective, optim, 0, "timing", "timing", tmp / "c.pt", progress=False)
    return lambda: trainer.run(stop_after=1)


def teacher_step(name: str, params: Params, device: torch.device, tmp: Path) -> Callable:
    target = get_target(name).to(device)
    with torch.random.fork_rng(devices=[]):
        TIMING.seed_global()
        control = make_control(target.dim, make_schedule(params.sde), params.teacher.network, 10.0)
    control.to(device)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation, device)
    grid = uniform_grid(128, params.sde.T, device=device)
    objective = LogVarianceObjective(control, target, prior, grid, 512)
    return trainer_step(control, objective, params.teacher, tmp)


def cdds_step(params: Params, device: torch.device, tmp: Path) -> Callable:
    cfg = params.cdds
    target = get_target("gmm9").to(device)
    schedule = make_schedule(params.sde)
    teacher = make_control(2, schedule, params.teacher.network, 10.0).to(device)
    student = ConsistencyStudent(2, schedule.T, cfg.network.width, cfg.network.depth).to(device)
    prior = StandardNormalPrior(2, params.sde.prior_truncation, device)
    fine, coarse = uniform_grid(cfg.n_fine, device=device), coarse_indices(cfg.n_fine, cfg.n_coarse)
    gen = torch.Generator(device=device).manual_seed(0)
    bank = generate_fragments(teacher, target, prior, fine, coarse, 8192, gen)
    objective = ConsistencyObjective(student, teacher, target, prior, fine, coarse, cfg, bank)
    return trainer_step(student, objective, cfg, tmp)


def scds_iteration(params: Params, device: torch.device, tmp: Path) -> Callable:
    cfg = params.scds
    target = get_target("gmm9").to(device)
    control = make_control(2, make_schedule(params.sde), cfg.network, 10.0, True).to(device)
    prior = StandardNormalPrior(2, params.sde.prior_truncation, device)
    grid = uniform_grid(cfg.n_steps, device=device)
    objective = SelfConsistencyObjective(control, target, prior, grid, cfg)
    return trainer_step(control, objective, cfg, tmp)


def sampling_rate(params: Params, device: torch.device, n: int) -> float:
    schedule = make_schedule(params.sde)
    student = ConsistencyStudent(2, schedule.T).to(device).eval()
    sampler = ConsistencySampler(student, StandardNormalPrior(2), schedule.alpha, [schedule.T])
    sampler.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    return n / timed(lambda: sampler.sample(n, gen), device, repeats=3)


def sinkhorn_seconds(device: torch.device) -> float:
    target = get_target("gmm9")
    gen = torch.Generator().manual_seed(0)
    x = target.sample(SINKHORN_N, gen).to(device)
    y = target.sample(SINKHORN_N, gen).to(device)
    return timed(lambda: paper_sinkhorn(x, y), device, repeats=1, warmup=0)


def device_tests() -> dict[str, Any]:
    """tests/test_devices.py on this machine (its CUDA parity test runs here)."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return {"returncode": run.returncode, "summary": run.stdout.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device; torch sees none here")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    params = load_params(None, preset=FIXED_BUDGETS)
    tests = device_tests()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases: list[tuple[str, Callable[[torch.device], Callable], int, bool]] = [
            ("teacher step gmm9", lambda d: teacher_step("gmm9", params, d, work), 5, True),
            ("teacher step lgcp", lambda d: teacher_step("lgcp", params, d, work), 3, True),
            ("CDDS step", lambda d: cdds_step(params, d, work), 20, True),
            ("SCDS iteration", lambda d: scds_iteration(params, d, work), 3, True),
        ]
        for name, build, repeats, on_cpu in cases:
            row: dict[str, Any] = {"work": name, "cuda_s": timed(build(cuda), cuda, repeats)}
            if on_cpu:
                row["cpu_s"] = timed(build(cpu), cpu, 1 if "lgcp" in name else repeats)
                row["speedup"] = row["cpu_s"] / row["cuda_s"]
            rows.append(row)
    rate_cuda = sampling_rate(params, cuda, 1 << 24)
    rate_cpu = sampling_rate(params, cpu, 1 << 20)
    rows.append(
        {
            "work": "one-step samples/s",
            "cuda_s": 1.0 / rate_cuda,
            "cpu_s": 1.0 / rate_cpu,
            "speedup": rate_cuda / rate_cpu,
        }
    )
    rows.append({"work": f"paper Sinkhorn n={SINKHORN_N}", "cuda_s": sinkhorn_seconds(cuda)})
    measured = {
        "teacher_step_lgcp_s": rows[1]["cuda_s"],
        "sinkhorn_1e5_s": rows[-1]["cuda_s"],
        "samples_per_s": rate_cuda,
    }
    goals = {
        key: {
            "goal": goal,
            "measured": measured[key],
            "met": (measured[key] >= goal if key == "samples_per_s" else measured[key] <= goal),
        }
        for key, goal in GOALS.items()
    }
    print_table(rows, ["work", "cuda_s", "cpu_s", "speedup"])
    print(json.dumps({"device_tests": tests, "goals": goals}, indent=2))
    payload = {
        "machine": {**machine(), "gpu": torch.cuda.get_device_name(cuda)},
        "device_tests": tests,
        "rows": rows,
        "goals": goals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
