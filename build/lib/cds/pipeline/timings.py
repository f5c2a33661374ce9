"""Wall times of the stages, kept out of every DVC output (so that dvc.lock is the same on any
machine that computes the same results) and logged to MLflow instead.

Each stage writes `.cds/timings/<stage>.json` when it finishes: `stage_seconds`, its wall time
from loading the params to its outputs written (`cds stage`), and what it measured inside (e.g.
`train_seconds`). A stage DVC did not re-run keeps the file of the run that produced its
outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds.pipeline.io import write_json_atomic
from cds.training import RUN_SPECIFIC_SUFFIX


def timings_path(root: Path, stage: str) -> Path:
    return root / ".cds" / "timings" / f"{stage}.json"


def record_timings(root: Path, stage: str, seconds: dict[str, float]) -> None:
    write_json_atomic(timings_path(root, stage), seconds)


def add_timings(root: Path, stage: str, seconds: dict[str, float]) -> None:
    """Merge `seconds` into the stage's timings file (kept keys the stage recorded itself)."""
    record_timings(root, stage, {**read_timings(root, stage), **seconds})


def read_timings(root: Path, stage: str) -> dict[str, Any]:
    """The stage's last recorded wall times (empty when it never ran here)."""
    path = timings_path(root, stage)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def split_timings(tree: Any, timings: dict[str, float], prefix: str = "") -> Any:
    """`tree` (nested dicts) without its wall times, the keys ending in RUN_SPECIFIC_SUFFIX,
    which are moved to `timings` under their dotted path."""
    if not isinstance(tree, dict):
        return tree
    kept = {}
    for key, value in tree.items():
        if str(key).endswith(RUN_SPECIFIC_SUFFIX):
            timings[prefix + str(key)] = value
        else:
            kept[key] = split_timings(value, timings, f"{prefix}{key}.")
    return kept
