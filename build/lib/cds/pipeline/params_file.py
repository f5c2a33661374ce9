"""Keeping params.yaml complete: DVC reads each stage's params from the file itself, so every
key a stage lists must be present even where the default applies."""

from __future__ import annotations

from pathlib import Path

import yaml

from cds.config import Params, read_yaml
from cds.pipeline.io import write_text_atomic

HEADER = (
    "# cds parameters, validated as a whole before any stage runs (unknown keys are errors).\n"
    "# Every key is present because DVC tracks each stage's params in this file; see README.\n"
)


def write_complete_params(path: Path, params: Params) -> bool:
    """Write `params` in full to `path` unless the file already holds exactly these values;
    returns whether it wrote."""
    full = params.model_dump(mode="json")
    if path.is_file() and read_yaml(path.read_text()) == full:
        return False
    write_text_atomic(path, HEADER + yaml.safe_dump(full, sort_keys=False))
    return True
