"""Reading what dvc.lock records: the output hashes of the stages DVC ran."""

from __future__ import annotations

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
