"""The fragments stage: the bank of teacher PF-ODE fragments CDDS distils from
(docs/methods.md §4), when `method: cdds` reads one (`cdds.fragments: bank | refresh`)."""

from __future__ import annotations

import shutil
from typing import Any

from cds.cdds import build_fragment_bank, save_bank
from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.pipeline.io import write_json_atomic
from cds.pipeline.layout import Layout
from cds.pipeline.stages.common import checked_target, require
from cds.preconditioning import recorded_prior_map
from cds.run_config import run_device
from cds.teacher import load_teacher


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Build the bank from the teacher's PF ODE, or record why there is none."""
    target = checked_target(params, layout)
    shutil.rmtree(layout.fragments_dir, ignore_errors=True)
    cfg = params.cdds
    manifest: dict[str, Any] = {"method": params.method, "fragments": cfg.fragments, "bank": None}
    if params.method == "cdds" and cfg.fragments != "online":
        teacher, _ = load_teacher(require(layout.teacher, "teacher"), run_device(params))
        payload = load_checkpoint(layout.teacher)
        prior_map = recorded_prior_map(payload)
        bank = build_fragment_bank(params, teacher, target, progress, prior_map)
        assert bank is not None
        manifest["bank"] = {"file": layout.bank.name, "pairs": len(bank)}
        manifest["teacher_fingerprint"] = payload["fingerprint"]
        save_bank(layout.bank, bank, manifest)
    write_json_atomic(layout.fragments_manifest, manifest)
    return manifest
