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


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def input_digests(name: str, options: dict[str, Any]) -> dict[str, str]:
    """{file: sha256} of the module defining a user target (`module:Class`) and of every
    existing file named in its options (paths relative to the working directory, as keys
    too)."""
    files: list[Path] = []
    if ":" in name:
        try:
            spec = importlib.util.find_spec(name.partition(":")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            files.append(Path(spec.origin))
    files += [Path(s) for s in _strings(options) if s.strip() and Path(s).is_file()]
    return {_display(path): _file_sha256(path) for path in files}


def _display(path: Path) -> str:
    """`path` relative to the working directory (the project, for stages) where it lies
    inside it, so that records are the same in every clone; else absolute."""
    absolute = Path(os.path.abspath(path))
    cwd = Path.cwd()
    return absolute.relative_to(cwd).as_posix() if absolute.is_relative_to(cwd) else str(absolute)
