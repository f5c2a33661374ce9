"""The project's `inputs/` directory: the files a target reads that are not cds code.

A user density module (`target.name: mydens:MyTarget`, found as `inputs/mydens.py`) and every
data file named in `target.options` (e.g. `target.options.data: inputs/points.csv`) live there.
dvc.yaml lists `inputs` as a dependency of every stage that builds the target, so editing the
module or replacing a data file's contents makes those stages, and everything downstream, stale:
DVC's own directory hashing, no extra bookkeeping. A file named in params outside `inputs/`
would be invisible to DVC, so it is refused before anything runs. Paths in params are relative
to the project directory; a symlink inside `inputs/` to a shared file is followed (its content
is what DVC hashes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cds.config import Params
from cds.provenance import INPUTS_DIR, module_file, named_strings


class UntrackedInputError(ValueError):
    """A file named in params lies outside `inputs/`, or a user module inside the project
    but outside `inputs/`."""


def inputs_dir(root: Path) -> Path:
    return root / INPUTS_DIR


def use_project_inputs(root: Path) -> None:
    """Make user target modules in `root/inputs` importable (first on sys.path, once)."""
    directory = str(inputs_dir(root).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _inside(path: Path, directory: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(directory))


def check_tracked(params: Params, root: Path) -> None:
    """Refuse (naming the field and value) a data file named in `target.options` outside
    `inputs/`, and a user module in the project but outside `inputs/`: DVC would not notice
    them change. Modules installed elsewhere (site-packages) are code outside the project,
    not tracked by it."""
    root = root.resolve()
    inputs = inputs_dir(root)
    name = params.target.name
    if ":" in name:
        use_project_inputs(root)
        origin = module_file(name)  # None for installed modules (e.g. in the project's venv)
        if origin is not None and _inside(origin, root) and not _inside(origin, inputs):
            raise UntrackedInputError(
                f"target.name = {name!r}: module {name.partition(':')[0]!r} is {origin}, "
                f"outside {INPUTS_DIR}/; move it to {inputs}/ so that DVC retrains when it "
                "changes"
            )
    for field, value in named_strings(params.target.options, "target.options"):
        if not value.strip():
            continue
        path = Path(value) if Path(value).is_absolute() else root / value
        # a file, or a directory named like a path (a bare word such as "data" may be a mode)
        named = path.is_file() or (path.is_dir() and ("/" in value or Path(value).is_absolute()))
        if named and not _inside(path, inputs):
            raise UntrackedInputError(
                f"{field} = {value!r}: files the target reads must be under {INPUTS_DIR}/ "
                f"(DVC tracks that directory); move or symlink it into {inputs}/"
            )
