"""What tracking code and inputs costs: DVC's own time for a no-op `dvc repro`, a `dvc status`
when nothing changed and when an input changed (every dependency is hashed again), and a
one-stage re-run (`dvc repro -f --single-item target`) beside the same stage run directly.

On a project that has run (default: a new tiny working copy of this checkout, run once here;
`--project PATH` for an existing one, e.g. a clone after `make run`). The input change is a
file added to `inputs/` and removed again, so nothing in the project is left changed.
Median of `--repeats` runs each.

Run:  .venv/bin/python benchmarks/dvc_overhead.py [--project PATH --label TEXT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import FIXED_BUDGETS, print_table, write_results

from cds.config import load_params
from cds.pipeline.dvc import dvc, dvc_env
from cds.pipeline.workspace import create_workspace

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "teacher.optim.iterations=40",
    "teacher.optim.ema_window=10",
    "cdds.optim.iterations=40",
    "cdds.optim.ema_window=10",
    "cdds.bank_size=4096",
    "evaluation.n_samples=500",
    "evaluation.floor_repeats=1",
]


def timed(*command: str, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=dvc_env(cwd), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout[-2000:]}{done.stderr}")
    return seconds


def stale_stages(project: Path) -> list[str]:
    code, out = dvc(project, "status", "--json", echo=False)
    assert code == 0, out
    return sorted(json.loads(out.strip().splitlines()[-1]))


def measure(project: Path, repeats: int) -> list[dict[str, object]]:
    dvc_cmd = (sys.executable, "-m", "dvc")
    cds_cmd = (str(Path(sys.executable).parent / "cds"),)
    assert stale_stages(project) == [], "the project must be up to date"
    rows = []

    def row(what: str, seconds: list[float], note: str = "") -> None:
        rows.append({"what": what, "median_s": statistics.median(seconds), "note": note})

    row("no-op dvc repro", [timed(*dvc_cmd, "repro", cwd=project) for _ in range(repeats)])
    row("dvc status, up to date", [timed(*dvc_cmd, "status", cwd=project) for _ in range(repeats)])
    probe = project / "inputs" / "_probe.txt"
    stale, seconds = [], []
    for i in range(repeats):
        probe.write_text(f"{i}\n")
        seconds.append(timed(*dvc_cmd, "status", cwd=project))
        stale = stale_stages(project)
        probe.unlink()
    row("dvc status, an input changed", seconds, f"stale: {', '.join(stale)}")
    forced = [
        timed(*dvc_cmd, "repro", "-f", "--single-item", "target", cwd=project)
        for _ in range(repeats)
    ]
    direct = [
        timed(*cds_cmd, "stage", "target", "--no-progress", cwd=project) for _ in range(repeats)
    ]
    row("one-stage re-run: dvc repro -f target", forced)
    row("the same stage without DVC: cds stage target", direct)
    assert stale_stages(project) == [], "re-running the target stage changed its outputs"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", help="what the project is, for the results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project
        if project is None:
            project = create_workspace(
                ROOT, Path(tmp) / "project", load_params(None, TINY, preset=FIXED_BUDGETS)
            )
            code, out = dvc(project, "repro", echo=False)
            assert code == 0, out
        rows = measure(project.resolve(), args.repeats)
    write_results(
        __file__,
        {"project": args.label or ("tiny working copy" if args.project is None else "given"),
         "repeats": args.repeats, "rows": rows},
    )  # fmt: skip
    print_table(rows, ["what", "median_s", "note"])


if __name__ == "__main__":
    main()
