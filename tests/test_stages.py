"""The stage functions in-process (what `cds stage NAME` runs): SCDS end to end with its budget
curve, the samplers rebuilt from checkpoints, and refusal of stale upstream outputs."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from cds.config import load_params
from cds.pipeline.layout import Layout
from cds.pipeline.stages import evaluate, fragments, student, target, teacher
from cds.pipeline.stages.common import StageInputError
from cds.pipeline.timings import read_timings
from cds.samplers import ConsistencySampler, ShortcutSampler, sampler_from_checkpoint
from cds.scoring import log_weights, weight_estimator
from cds.targets import get_target
from tests.conftest import TINY, make_project


@pytest.mark.slow
def test_scds_pipeline_needs_no_fragments_and_traces_its_budget_curve(tmp_path):
    root = make_project(tmp_path / "p", "method=scds")
    layout, params = Layout(root), load_params(root / "params.yaml")
    for stage in (target, teacher, fragments, student, evaluate):
        stage.run(params, layout, progress=False)
    assert json.loads(layout.fragments_manifest.read_text())["bank"] is None
    assert not layout.bank.exists()
    metrics = json.loads(layout.metrics.read_text())
    assert metrics["method"] == "scds" and metrics["nfe"] == 1
    curve = json.loads(layout.budget_curve.read_text())["budget_curve"]
    report = json.loads(layout.report.read_text())
    assert [(p["method"], p["nfe"]) for p in curve] == [("scds", 1), ("scds", 2), ("scds", 4)]
    sde = report["student_sde"]
    assert (sde["method"], sde["nfe"]) == ("scds-sde", 4)
    for point in [*curve, sde]:  # every budget: a Sinkhorn value, valid-weight log Z and ESS
        assert point["sinkhorn"] > 0 and point["abs_dlogZ_is"] >= 0 and 0 < point["ess"] <= 1
        assert point["log_Z_is_se"] > 0
    # best K: chosen on the validation reference, reported on the test reference
    validation = np.load(layout.reference_validation)
    assert not np.array_equal(validation, np.load(layout.reference_test))
    best = min(curve, key=lambda p: p["sinkhorn_validation"])
    assert metrics["best_nfe"] == best["nfe"] and metrics["best_sinkhorn"] == best["sinkhorn"]
    assert all(p["sinkhorn_validation"] != p["sinkhorn"] for p in curve)
    assert report["protocol"]["reference_seed"] == params.evaluation.seed
    assert report["protocol"]["n"] == params.evaluation.n_samples
    assert [p["weights"] for p in curve] == ["exact_logdet"] * 3 and sde["weights"] == "sde"
    assert report["training"]["student"]["iterations"] == params.scds.optim.iterations
    # wall times stay out of the DVC outputs (dvc.lock is the same on every machine)
    assert not any(key.endswith("_seconds") for key in (*metrics, *report["student"]))
    assert read_timings(root, "student")["train_seconds"] > 0
    assert read_timings(root, "evaluate")["student_K1.sample_seconds"] > 0
    assert report["teacher_one_step"]["nfe"] == 1 and report["teacher"]["nfe"] == 16
    for name in ("student_samples.png", "teacher_samples.png", "budget_curve.png"):
        assert (layout.plots_dir / name).read_bytes()[:4] == b"\x89PNG"

    sampler = sampler_from_checkpoint(layout.student, 4)
    assert isinstance(sampler, ShortcutSampler) and sampler.nfe == 4
    gmm9 = get_target("gmm9")  # 4 steps × D = 2 passes exceed a limit of 4: Hutchinson instead
    assert weight_estimator(sampler, gmm9, max_jacobian_passes=4) == "hutchinson"
    hutchinson = log_weights(sampler, gmm9, 20, torch.Generator(), max_jacobian_passes=4)
    assert torch.isfinite(hutchinson[0]).all() and hutchinson[1] is None
    x = sampler.sample(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="trained for at most 4"):
        sampler_from_checkpoint(layout.student, 8)


def test_cdds_sampler_takes_k_steps_and_is_seeded(trained_project):
    checkpoint = Layout(trained_project).student
    one, two = sampler_from_checkpoint(checkpoint), sampler_from_checkpoint(checkpoint, 2)
    assert isinstance(one, ConsistencySampler) and (one.nfe, two.nfe) == (1, 2)
    a = one.sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(a, one.sample(5, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, two.sample(5, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        one.sample(0)
    gmm9 = get_target("gmm9")
    log_w, signs = log_weights(one, gmm9, 50, torch.Generator())
    assert log_w.shape == signs.shape == (50,)
    assert log_weights(two, gmm9, 50, torch.Generator()) is None  # re-noising: no flow weight
    with pytest.raises(ValueError, match="sde=True needs an SCDS checkpoint"):
        sampler_from_checkpoint(checkpoint, sde=True)


def test_stages_refuse_outputs_made_for_other_params(trained_copy):
    layout = Layout(trained_copy)
    params = load_params(layout.params, ["target.name=mw54"])
    with pytest.raises(StageInputError, match="run `cds stage target` again"):
        teacher.run(params, layout, progress=False)


@pytest.mark.slow  # three small pipelines
@pytest.mark.parametrize("name", ["banana", "rotmix4", "student5"])
def test_densities_unlike_gmm9_run_on_smoke_and_report_modes_and_marginals(tmp_path, name):
    """Each stage in turn on the smoke preset: the evaluation reports the largest relative
    marginal-std error of student and teacher (and the mode-mass error where the target knows
    its modes), and each training run records how its plateau-rule budget ended."""
    layout = Layout(tmp_path)
    params = load_params(None, [*TINY, f"target.name={name}"])
    with contextlib.chdir(tmp_path):
        for stage in (target, teacher, fragments, student, evaluate):
            stage.run(params, layout, progress=False)
    metrics = json.loads(layout.metrics.read_text())
    report = json.loads(layout.report.read_text())
    for key in ("std_rel_err_max", "teacher_std_rel_err_max"):
        assert 0.0 <= metrics[key] < 10.0
    has_modes = name == "rotmix4"
    assert ("mode_mass_err_max" in metrics) is has_modes
    if has_modes:
        assert 0.0 <= metrics["mode_mass_err_max"] <= 1.0
        assert report["floor"]["mode_mass_err_max"] < 0.1  # exact draws, n = 300
    for run in ("teacher", "student"):
        budget = report["training"][run]["budget"]
        assert budget["cooldown_from"] <= 30 and budget["reason"].split(":")[0] in (
            "plateau",
            "cap",
        )
        assert report["training"][run]["iterations"] == 40
