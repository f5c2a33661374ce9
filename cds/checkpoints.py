"""Atomic checkpoint files, loaded with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors, state_dicts and plain Python values (never pickled modules,
docs/methods.md §12, pitfall 9). Writes go to a temporary file in the same directory, are fsynced,
then renamed over the destination, so a reader sees either the old file or the new one, never a
partial one. Each file carries the sha256 of its content (`content_digest`), checked on every load:
an integrity check that refuses a file changed after it was written (a partial copy, an edit that
did not recompute the digest). It is not a signature; what keeps a crafted file from running
code is `weights_only` loading and the rule that no loader imports what a file names
(`cds.samplers`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cds-checkpoint-v1"
#: Key of the content digest inside a checkpoint.
DIGEST = "content_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or of the wrong kind."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, fsync it, make it world-readable and
    rename it over `path`: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are shared artifacts
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """A UTF-8 text file, written atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _number_text(value: int | float) -> str:
    """json.dumps(value) for a plain int or float, without its per-call cost (a training
    checkpoint holds one loss per iteration: 10⁵ of them took 0.35 s through json.dumps)."""
    if type(value) is int or math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _feed(digest: Any, value: Any) -> None:
    """Hash `value` canonically: dicts by sorted key, tensors by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        if all(type(item) is float or type(item) is int for item in value):
            digest.update("".join(f"V{_number_text(item)}" for item in value).encode())
            return
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{json.dumps(value, default=repr)}".encode())


def content_digest(payload: dict[str, Any]) -> str:
    """sha256 of everything in a checkpoint payload except the digest itself."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in payload.items() if key != DIGEST})
    return digest.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write `payload` (plus a format marker and its content digest) to `path`."""
    full = {key: value for key, value in payload.items() if key != DIGEST}
    full["format"] = CHECKPOINT_FORMAT
    full[DIGEST] = content_digest(full)
    return atomic_write(path, lambda fh: torch.save(full, fh))


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; `kind` (e.g. "dis") must match the stored kind when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's own message suggests weights_only=False, which must not be followed for
        # files of unknown origin; report the failure kind and what to do instead.
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({type(err).__name__}); "
            "delete it to train from scratch"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a cds checkpoint")
    if DIGEST not in payload:
        log.warning(
            "checkpoint %s was written by an older cds, without a content digest: its integrity "
            "cannot be checked (training never resumes such a file)",
            path,
        )
    elif payload[DIGEST] != content_digest(payload):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was modified after it was written (its content does not "
            "match its sha256); refusing to use it"
        )
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {payload.get('kind')!r} model, expected {kind!r}"
        )
    return payload


def load_finished_checkpoint(path: str | Path, kind: str) -> dict[str, Any]:
    """Load a training checkpoint of `kind` and refuse one whose run did not finish."""
    payload = load_checkpoint(path, kind=kind)
    if payload.get("step") != payload.get("iterations"):
        raise CheckpointError(
            f"{kind} checkpoint {str(path)!r} is unfinished "
            f"({payload.get('step')}/{payload.get('iterations')} iterations)"
        )
    return payload


def frozen_with_ema(
    model: torch.nn.Module, payload: dict[str, Any], device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """Load the checkpoint's EMA weights (the weights it was evaluated with) onto `device`
    and freeze. (Checkpoints are read on the CPU, where their generator states must be.)"""
    model.to(device)
    model.load_state_dict(payload["ema"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
