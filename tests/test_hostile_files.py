"""Crafted model files run no code: a checkpoint whose config names `os:system` as its target
is refused by every loader unless the caller trusts it, an edited file fails its content
digest, and a crafted file dropped into a project is never resumed or evaluated with its
embedded target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cds.config import load_params
from cds.pipeline.cli import app
from cds.pipeline.layout import Layout
from cds.pipeline.stages import teacher
from cds.samplers import UntrustedTargetError, load_sampler, sampler_from_checkpoint
from cds.scds import train_scds
from cds.targets import get_target

runner = CliRunner()


def crafted(source: Path, dest: Path, marker: Path, redigest: bool = True) -> Path:
    """`source` with only its embedded target changed to `os:system` running `touch marker`.
    `redigest`: recompute the content digest, as an attacker who knows the format would."""
    payload = load_checkpoint(source)
    config = json.loads(payload["metadata"]["config"])
    config["target"] = {"name": "os:system", "options": {"command": f"touch {marker}"}}
    payload["metadata"] = {**payload["metadata"], "config": json.dumps(config)}
    if redigest:
        return save_checkpoint(dest, payload)
    import torch

    torch.save(payload, dest)  # the old digest stays: the file no longer matches it
    return dest


def scds_checkpoint(path: Path) -> Path:
    """A tiny finished SCDS checkpoint on gmm9."""
    params = load_params(
        None,
        [
            "scds.n_steps=4",
            "scds.network.width=16",
            "scds.optim.iterations=3",
            "scds.stopping.rule=fixed",
            "scds.optim.batch_size=16",
            "scds.optim.ema_window=2",
        ],
    )
    train_scds(params, get_target("gmm9"), path, progress=False)
    return path


@pytest.mark.parametrize("kind", ["teacher", "scds", "student"])
def test_no_loader_runs_code_named_in_a_checkpoint(trained_project, tmp_path, kind):
    layout = Layout(trained_project)
    source = {
        "teacher": lambda: layout.teacher,
        "scds": lambda: scds_checkpoint(tmp_path / "scds.pt"),
        "student": lambda: layout.student,
    }[kind]()
    marker = tmp_path / "pwned"
    edited = crafted(source, tmp_path / "edited.pt", marker, redigest=False)
    with pytest.raises(CheckpointError, match="modified after it was written"):
        sampler_from_checkpoint(edited)
    path = crafted(source, tmp_path / "crafted.pt", marker)
    if kind != "student":  # DIS and SCDS samplers need their target: refused without trust
        with pytest.raises(UntrustedTargetError, match="trust_target_code=True"):
            sampler_from_checkpoint(path)
        with pytest.raises(UntrustedTargetError):
            load_sampler(path)
        # the caller's own density object is used instead of anything named in the file
        assert load_sampler(path, target=get_target("gmm9")).sample(3).shape == (3, 2)
    else:  # CDDS needs no target and never builds one
        assert sampler_from_checkpoint(path).sample(3).shape == (3, 2)
    result = runner.invoke(
        app, ["sample", "--model", str(path), "-n", "5", "--out", str(tmp_path / "x.npy")]
    )
    assert not marker.exists(), "a command named in the file ran"
    if kind != "student":
        assert result.exit_code == 2 and "trust_target_code" in result.output


def test_a_crafted_teacher_dropped_into_a_project_is_not_resumed(trained_copy, tmp_path):
    """Same fingerprint, edited config: the trainer refuses to resume it and trains again on
    the target the params name; nothing named in the file runs."""
    layout = Layout(trained_copy)
    marker = tmp_path / "pwned"
    crafted(layout.teacher, layout.teacher, marker)
    teacher.run(load_params(layout.params), layout, progress=False)
    assert not marker.exists()
    config = json.loads(load_checkpoint(layout.teacher)["metadata"]["config"])
    assert config["target"]["name"] == "gmm9"


def test_a_checkpoint_without_digest_loads_with_a_warning_and_is_never_resumed(
    trained_copy, caplog
):
    """Files of an older cds have no content digest: readable for sampling, but training starts
    from scratch rather than continuing a run of other code."""
    import torch

    layout = Layout(trained_copy)
    payload = load_checkpoint(layout.teacher)
    del payload["content_sha256"]
    torch.save(payload, layout.teacher)
    with caplog.at_level("WARNING"):
        assert load_checkpoint(layout.teacher)["step"] == payload["step"]
    assert "without a content digest" in caplog.text
    teacher.run(load_params(layout.params), layout, progress=False)
    assert "content_sha256" in load_checkpoint(layout.teacher)
    assert "starting from scratch" in caplog.text


def test_params_read_exponents_as_numbers(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; params follow YAML 1.2 (as DVC does)."""
    assert load_params(None, ["cdds.optim.lr=3e-3"]).cdds.optim.lr == 0.003
    path = tmp_path / "params.yaml"
    path.write_text("teacher:\n  optim:\n    lr: 1e-3\n")
    assert load_params(path).teacher.optim.lr == 0.001
