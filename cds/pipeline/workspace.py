"""Creating a pipeline working copy: a git + DVC repository holding the project's dvc.yaml, its
`inputs/` and a given params.yaml, optionally sharing a DVC cache (sweep cells, tests, new
projects).

dvc.yaml names the code each stage runs by paths relative to the project (`cds/teacher.py`, …). A
working copy links `cds` to the package this interpreter imports, so the same
dvc.yaml tracks the code there: editing it makes the copy's stages stale, as in the checkout.
"""

from __future__ import annotations

import re
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
    _link_code(dest)
    write_complete_params(dest / "params.yaml", params)
    _init_repositories(dest, git=True, shared_cache=shared_cache)
    return dest


#: The pipeline definition shipped with cds, for `cds init`: template file → its name in a
#: project. In the checkout the templates are links to its own files; a wheel holds copies.
TEMPLATE_DIR = Path(__file__).resolve().parent / "project"
TEMPLATE_FILES = {
    "dvc.yaml.template": "dvc.yaml",
    "gitignore.template": ".gitignore",
    "data-gitignore.template": "data/.gitignore",
    "dvcignore.template": ".dvcignore",
}
#: `cds init --target module:Class`: a top-level module (a file module.py) and a class name.
USER_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*$")


def init_project(dest: Path, params: Params, git: bool = True, module: Path | None = None) -> Path:
    """A new pipeline project at `dest` (new or empty) for the cds this interpreter imports: the
    shipped dvc.yaml and ignore files, `params` in full, `inputs/` holding `module` (the user's
    density, if given), a link `cds` to the installed package (the code dvc.yaml's stages depend
    on, so upgrading cds makes them stale), a DVC repository, and unless `git` is False a git
    repository with all of it committed."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    for template, name in TEMPLATE_FILES.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATE_DIR / template, dest / name)
    with (dest / ".gitignore").open("a") as ignore:
        ignore.write("# a link to the installed cds package, not project content\n/cds\n")
    sync_inputs(TEMPLATE_DIR, dest)  # the template has no inputs: an empty, explained directory
    if module is not None:
        shutil.copyfile(module, dest / "inputs" / module.name)
    _link_code(dest)
    write_complete_params(dest / "params.yaml", params)
    _init_repositories(dest, git=git, shared_cache=None)
    return dest


def _link_code(dest: Path) -> None:
    for package in CODE_PACKAGES:
        (dest / package.__name__).symlink_to(Path(package.__file__).resolve().parent)


def _init_repositories(dest: Path, git: bool, shared_cache: Path | None) -> None:
    """git (if asked) and DVC repositories at `dest`, everything committed to git."""
    if git:
        _git(dest, "init", "-q")
    init = ("init", "-q") if git else ("init", "-q", "--no-scm")
    for args in (init, ("config", "core.analytics", "false")):
        returncode, output = dvc(dest, *args, echo=False)
        if returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {dest}: {output}")
    if shared_cache is not None:
        returncode, output = dvc(dest, "cache", "dir", str(shared_cache.resolve()), echo=False)
        if returncode:
            raise RuntimeError(f"dvc cache dir failed in {dest}: {output}")
    if git:
        _git(dest, "add", "-A")
        _git(dest, "commit", "-q", "-m", "cds project")
