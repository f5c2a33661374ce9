"""Creating a pipeline working copy: a git + DVC repository holding the project's dvc.yaml and a
given params.yaml, optionally sharing a DVC cache (sweep cells, tests, new projects)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cds.config import Params
from pipelines.dvc import dvc
from pipelines.params_file import write_complete_params

#: Files copied from the source project into every working copy.
PROJECT_FILES = ("dvc.yaml", ".gitignore", "data/.gitignore", ".dvcignore")


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=cds", "-c", "user.email=cds@localhost", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def create_workspace(
    source: Path, dest: Path, params: Params, shared_cache: Path | None = None
) -> Path:
    """A new git + DVC repository at `dest` with `source`'s pipeline definition and `params`,
    committed, so that `dvc repro`, `dvc exp run` and `dvc metrics diff` work in it."""
    if (dest / ".dvc").exists():
        raise FileExistsError(f"{dest} already holds a DVC repository")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, dest / name)
    write_complete_params(dest / "params.yaml", params)
    _git(dest, "init", "-q")
    for args in (("init", "-q"), ("config", "core.analytics", "false")):
        returncode, output = dvc(dest, *args, echo=False)
        if returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {dest}: {output}")
    if shared_cache is not None:
        returncode, output = dvc(dest, "cache", "dir", str(shared_cache.resolve()), echo=False)
        if returncode:
            raise RuntimeError(f"dvc cache dir failed in {dest}: {output}")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "cds workspace")
    return dest
