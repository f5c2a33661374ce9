"""What a trained model was made from besides its params: the version of the cds code and the
content of the user files its target reads. Both enter every checkpoint's fingerprint, so a run
never resumes (or hands back) a checkpoint written by other code or for other data.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
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
    """sha256 (16 hex digits) of every Python source file of the cds package, by relative
    path: the same for a checkout and an install of the same code, different after any edit."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()[:16]


#: The directory of a project's own files (a user density module, data files), relative to the
#: working directory; hashed whole, as DVC sees it (without byte code and its README).
INPUTS_DIR = "inputs"
NOT_INPUTS = ("__pycache__", ".pyc", "README.md")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _module_file(name: str) -> Path | None:
    """The source file of a user target's module (`module:Class`), without importing it."""
    if ":" not in name:
        return None
    try:
        spec = importlib.util.find_spec(name.partition(":")[0])
    except Exception:  # a parent package failing to import: reported when the target loads
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(os.path.abspath(spec.origin))


def _inputs_files(directory: Path) -> list[Path]:
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and not any(part == "__pycache__" for part in path.relative_to(directory).parts)
        and path.suffix != ".pyc"
        and path.relative_to(directory).as_posix() != "README.md"
    ]


def input_digests(name: str, options: dict[str, Any]) -> dict[str, str]:
    """{file: sha256} of what the target reads besides cds: every file under `inputs/` (in a
    project: its user modules and data, as DVC hashes them), a user module elsewhere under the
    working directory, and every existing file its options name. Keys are relative to the
    working directory where the file lies inside it, so they are the same in every clone.
    Installed modules (site-packages) are code outside the project and are not included."""
    cwd = Path(os.getcwd())
    files = _inputs_files(cwd / INPUTS_DIR) if (cwd / INPUTS_DIR).is_dir() else []
    module = _module_file(name)
    if module is not None and module.is_relative_to(cwd):
        files.append(module)
    files += [Path(s) for s in _strings(options) if s.strip() and Path(s).is_file()]
    return {_display(path, cwd): _file_sha256(path) for path in files}


def _display(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))  # a symlink in inputs/ keeps its own name
    return absolute.relative_to(cwd).as_posix() if absolute.is_relative_to(cwd) else str(absolute)
