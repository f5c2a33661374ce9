"""The stage graph as dvc.yaml defines it: stage names in execution order and the params each
stage depends on. dvc.yaml is its one definition; everything else (the CLI's stage names, the
Prefect flow's order, the params each MLflow stage run logs) reads it from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The pipeline definition shipped with cds (`cds init` writes a project's copy from it): in the
#: checkout a link to its dvc.yaml, in an installed wheel a copy.
DVC_YAML = Path(__file__).resolve().parent / "project" / "dvc.yaml.template"


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml: its name and the params keys (dotted paths) it lists."""

    name: str
    params: tuple[str, ...]


def read_stages(path: Path = DVC_YAML) -> tuple[Stage, ...]:
    """The stages of the dvc.yaml at `path`, in the order written there (execution order: every
    stage comes after the stages whose outputs it reads; tests/test_code_deps.py checks it)."""
    stages = yaml.safe_load(path.read_text())["stages"]
    return tuple(Stage(name, tuple(spec.get("params", ()))) for name, spec in stages.items())


#: Pipeline stages in execution order (the names dvc.yaml and `cds stage NAME` use).
STAGES: tuple[str, ...] = tuple(stage.name for stage in read_stages())


def stage_params(raw: dict[str, Any], stage: str, path: Path = DVC_YAML) -> dict[str, Any]:
    """The values of the params `stage` lists in dvc.yaml, from the raw params mapping, keyed
    by their dotted paths (a listed section is one entry holding the whole section)."""
    listed = next(s.params for s in read_stages(path) if s.name == stage)
    values: dict[str, Any] = {}
    for key in listed:
        value: Any = raw
        for part in key.split("."):
            value = value[part]
        values[key] = value
    return values
