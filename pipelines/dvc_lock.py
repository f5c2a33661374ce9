"""Reading what dvc.lock records: the output hashes of the stages DVC ran."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml


def lock_hashes(root: Path) -> dict[str, dict[str, str]]:
    """{stage: {output path: md5}} from dvc.lock (empty when there is none yet)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages: dict[str, Any] = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {
        name: {out["path"]: out.get("md5", "") for out in stage.get("outs", [])}
        for name, stage in stages.items()
    }


def recorded_by_dvc(root: Path, stage: str, output: Path) -> bool:
    """Whether `output` is, byte for byte, what dvc.lock records for `stage`: a result DVC
    accepted. A training stage trains such a finished checkpoint again when DVC re-runs it
    (something changed, or `dvc repro -f`); a finished one DVC never recorded (the stage
    failed after training, or a sweep cell handed it over) is handed on as it is."""
    if not output.is_file():
        return False
    recorded = lock_hashes(root).get(stage, {})
    with output.open("rb") as fh:
        md5 = hashlib.file_digest(fh, "md5").hexdigest()
    return recorded.get(output.relative_to(root).as_posix()) == md5
