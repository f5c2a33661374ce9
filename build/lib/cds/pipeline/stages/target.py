"""The target stage: check the density, write its manifest and, where an exact sampler exists,
the validation and test reference sets (`evaluation.n_samples` each, from their own streams)."""

from __future__ import annotations

import shutil
from typing import Any

from cds import seeding
from cds.config import Params
from cds.pipeline.io import save_npy_atomic, write_json_atomic
from cds.pipeline.layout import Layout
from cds.pipeline.stages.common import probed_target
from cds.provenance import input_digests


def run(params: Params, layout: Layout, progress: bool = True) -> dict[str, Any]:
    """Validate the target (density finite on prior samples), write its manifest and the
    exact reference samples."""
    target = probed_target(params, layout.root)
    shutil.rmtree(layout.target_dir, ignore_errors=True)
    manifest: dict[str, Any] = {
        **target.describe(),
        "n_modes": target.n_modes,
        "params": params.target.model_dump(),
        "inputs_sha256": input_digests(params.target.name, params.target.options),
        "reference": None,
    }
    if target.has_exact_samples:
        n, seed = params.evaluation.n_samples, params.evaluation.seed
        files = {}
        for role, path in (
            ("validation", layout.reference_validation),
            ("test", layout.reference_test),
        ):
            stream = f"reference_{role}"
            save_npy_atomic(path, target.sample(n, seeding.generator(seed, stream)).numpy())
            files[role] = {"file": path.name, "stream": stream}
        manifest["reference"] = {"n": n, "seed": seed, **files}
    write_json_atomic(layout.manifest, manifest)
    return manifest
