"""Creating a pipeline working copy: a git + DVC repository holding the project's dvc.yaml, its
`inputs/` and a given params.yaml, optionally sharing a DVC cache (sweep cells, tests, new
projects).

dvc.yaml names the code each stage runs by paths relative to the project (`cds/teacher.py`, …). A
working copy links `cds` to the package this interpreter imports, so the same
dvc.yaml tracks the code there: editing it makes the copy's stages stale, as in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cds
from cds.config import Params
from cds.pipeline.dvc import dvc
from cds.pipeline.params_file import write_complete_params

#: Files copied from the source project into every working copy.
PROJECT_FILES = ("dvc.yaml", ".gitignore", "data/.gitignore", ".dvcignore")
#: The source packages a working copy links to (the code its stages depend on).
CODE_PACKAGES = (cds,)


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=cds", "-c", "user.email=cds@localhost", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def sync_inputs(source: Path, dest: Path) -> None:
    """Make `dest/inputs` a copy of `source/inputs` as it is now, its symlinks kept but made
    absolute (so they still point at the shared files), or an empty inputs directory where
    the source has none."""
    shutil.rmtree(dest / "inputs", ignore_errors=True)
    if not (source / "inputs").is_dir():
        (dest / "inputs").mkdir(parents=True)
        (dest / "inputs" / "README.md").write_text("Files the target reads (see dvc.yaml).\n")
        return
    shutil.copytree(
        source / "inputs",
        dest / "inputs",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for link in [p for p in (dest / "inputs").rglob("*") if p.is_symlink()]:
        original = source / link.relative_to(dest)
        link.unlink()
        link.symlink_to(original.resolve())


def sync_project_files(source: Path, dest: Path) -> None:
    """Copy the pipeline definition (`PROJECT_FILES`) from `source` into `dest`."""
    for name in PROJECT_FILES:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, dest / name)


def create_workspace(
    source: Path, dest: Path, params: Params, shared_cache: Path | None = None
) -> Path:
    """A new git + DVC repository at `dest` with `source`'s pipeline definition and `params`,
    committed, so that `dvc repro`, `dvc exp run` and `dvc metrics diff` work in it."""
    if (dest / ".dvc").exists():
        raise FileExistsError(f"{dest} already holds a DVC repository")
    dest.mkdir(parents=True, exist_ok=True)
    sync_project_files(source, dest)
    sync_inputs(source, dest)
    for package in CODE_PACKAGES:
        (dest / package.__name__).symlink_to(Path(package.__file__).resolve().parent)
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
