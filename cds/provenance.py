"""What a trained model was made from besides its params: the version of the cds code and the
content of the user files its target reads. Both enter every checkpoint's fingerprint, so a run
never resumes (or hands back) a checkpoint written by other code or for other data.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cds

#: The directory of the cds package (a checkout or site-packages).
PACKAGE_DIR = Path(cds.__file__).resolve().parent


def _file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@functools.cache
def code_version() -> str:
    """sha256 (16 hex digits) of every Python source file of the cds library (the package
    without its orchestration, `cds.pipeline`, as before that moved inside it), by relative
    path: the same for a checkout and an install of the same code, different after any edit."""
    digest = hashlib.sha256()
    orchestration = PACKAGE_DIR / "pipeline"
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.is_relative_to(orchestration):
            continue
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()[:16]


#: The directory of a project's own files (user density modules, data files), relative to the
#: working directory.
INPUTS_DIR = "inputs"


def named_strings(value: Any, field: str = "") -> Iterator[tuple[str, str]]:
    """(dotted field, string) for every string in an options tree: the candidates for files
    a target reads."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from named_strings(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from named_strings(item, f"{field}[{index}]")


def installed(path: Path) -> bool:
    """Whether `path` lies in this interpreter's installation (site-packages, the venv): code
    outside any project, tracked by its installed version."""
    paths = sysconfig.get_paths()
    roots = {sys.prefix, sys.base_prefix, paths["purelib"], paths["platlib"]}
    absolute = os.path.abspath(path)
    return any(Path(absolute).is_relative_to(os.path.abspath(root)) for root in roots)


def module_file(name: str) -> Path | None:
    """The source file of a user target's module (`module:Class`), found without importing
    the module itself (its parent packages are imported); None for built-in targets, modules
    that cannot be found and installed ones."""
    if ":" not in name:
        return None
    try:
        spec = importlib.util.find_spec(name.partition(":")[0])
    except Exception:  # a parent package failing to import: reported when the target loads
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    path = Path(os.path.abspath(spec.origin))
    return None if installed(path) else path


def _inputs_files(directory: Path) -> list[Path]:
    """The files DVC hashes in `directory` (byte code and the directory's README left out,
    as `.dvcignore` says)."""
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.relative_to(directory).parts
        and path.suffix != ".pyc"
        and path.relative_to(directory).as_posix() != "README.md"
    ]


def input_digests(name: str, options: dict[str, Any]) -> dict[str, str]:
    """{file: sha256} of what the target reads besides cds: for a user module in the project's
    `inputs/`, every file there (its code and data, as DVC hashes them); for another user
    module under the working directory, its file; and every existing file its options name.
    Built-in targets without file options give {}. Keys are relative to the working directory
    (the project, for stages) where the file lies inside it, so they are the same in every
    clone. Installed modules are not included."""
    cwd = Path(os.getcwd())
    inputs = cwd / INPUTS_DIR
    files: list[Path] = []
    module = module_file(name)
    if module is not None and module.is_relative_to(inputs):
        files += _inputs_files(inputs)
    elif module is not None and module.is_relative_to(cwd):
        files.append(module)
    files += [Path(s) for _, s in named_strings(options) if s.strip() and Path(s).is_file()]
    digests = {_display(path, cwd): _file_sha256(path) for path in files}
    return dict(sorted(digests.items()))


def _display(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))  # a symlink in inputs/ keeps its own name
    return absolute.relative_to(cwd).as_posix() if absolute.is_relative_to(cwd) else str(absolute)
