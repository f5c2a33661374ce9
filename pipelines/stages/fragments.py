"""The fragments stage: the bank of teacher PF-ODE fragments CDDS distils from
(docs/methods.md §4), when `method: cdds` reads one (`cdds.fragments: bank | refresh`)."""

from __future__ import annotations

import shutil
from typing import Any

from cds import seeding
from cds.cdds import generate_fragments, save_bank
from cds.checkpoints import load_checkpoint
from cds.config import Params
from cds.integrators import coarse_indices
from cds.run_config import run_device
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior
from cds.teacher import load_teacher
from pipelines.io import write_json_atomic
from pipelines.layout import Layout
from pipelines.stages.common import checked_target, require


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Build the bank from the teacher's PF ODE, or record why there is none."""
    target = checked_target(params, layout)
    shutil.rmtree(layout.fragments_dir, ignore_errors=True)
    cfg = params.cdds
    manifest: dict[str, Any] = {"method": params.method, "fragments": cfg.fragments, "bank": None}
    if params.method == "cdds" and cfg.fragments != "online":
        device = run_device(params)
        teacher, _ = load_teacher(require(layout.teacher, "teacher"), device)
        prior = StandardNormalPrior(target.dim, params.sde.prior_truncation, device)
        bank = generate_fragments(
            teacher,
            target.to(device),
            prior,
            uniform_grid(cfg.n_fine, params.sde.T, device=device),
            coarse_indices(cfg.n_fine, cfg.n_coarse),
            cfg.bank_size,
            seeding.generator(params.seed, seeding.FRAGMENTS, device=device),
            progress=progress,
        )
        manifest["bank"] = {"file": layout.bank.name, "pairs": len(bank)}
        manifest["teacher_fingerprint"] = load_checkpoint(layout.teacher)["fingerprint"]
        save_bank(layout.bank, bank, manifest)
    write_json_atomic(layout.fragments_manifest, manifest)
    return manifest
