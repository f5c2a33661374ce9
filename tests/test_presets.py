"""Presets: each one is valid params, `cds run --preset` and a built-in target's own preset lay
them under --set, and an unknown preset is refused by name."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cds.config import Params, ParamsError, load_params
from cds.pipeline.cli import app
from cds.presets import preset_names, read_preset, target_preset
from cds.targets import target_names

runner = CliRunner()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid_params(name):
    params = load_params(None, preset=name)
    assert params != Params() or name == "default"  # the embedded defaults themselves
    assert read_preset(name) or name == "default"  # says something, or is the defaults


def test_presets_lie_under_overrides_and_targets_pick_their_own():
    params = load_params(None, ["cdds.optim.lr=1e-3"], preset="mw54")
    assert params.teacher.optim.iterations == 10_000 and params.cdds.optim.lr == 1e-3
    assert params.scds.optim.lr == 3e-3 and params.cdds.optim.iterations == 100_000
    assert target_preset("mw54") == "mw54" and target_preset("lgcp") is None
    assert {"gmm9", "mw54", "logreg_cancer", "smoke"} <= set(preset_names())
    general = {"default", "smoke", "posterior"}  # for a kind of density, not one target
    assert set(preset_names()) - general <= set(target_names())
    assert load_params(None, preset="posterior").sde.prior == "laplace"
    assert load_params(None, preset="logreg_cancer").sde.prior == "laplace"
    with pytest.raises(ParamsError, match="preset = 'mw55': unknown; valid:"):
        load_params(None, preset="mw55")
    with pytest.raises(ParamsError, match="unknown"):
        load_params(None, preset="../params")


def test_run_names_the_preset_it_applies(project):
    result = runner.invoke(
        app, ["run", "--project", str(project), "--set", "target.name=mw54", "--set", "seed=-1"]
    )
    assert result.exit_code == 2  # refused before anything runs
    assert "preset:    mw54 (the own preset of target 'mw54'" in result.stderr
    assert "overrides: target.name=mw54 seed=-1" in result.stderr
    result = runner.invoke(app, ["run", "--project", str(project), "--preset", "nosuch"])
    assert result.exit_code == 2 and "preset = 'nosuch': unknown" in result.stderr


def test_switching_target_leaves_nothing_of_the_last_targets_preset(tmp_path):
    import yaml

    mw54 = load_params(None, ["target.name=mw54"], preset="mw54")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(mw54.model_dump(mode="json")))
    back = load_params(path, ["target.name=gmm9"], preset="gmm9")
    gmm9 = load_params(None, preset="gmm9")
    assert back.scds.optim == gmm9.scds.optim and back.cdds.optim == gmm9.cdds.optim
    assert back.teacher.optim.iterations == 1500
    untuned = load_params(path, ["target.name=banana"], preset="default")
    assert untuned.teacher == Params().teacher and untuned.scds.optim.lr == 5e-3


def test_a_sweep_names_only_known_presets():
    from pydantic import ValidationError

    from cds.pipeline.sweep import SweepGrid, cells

    with pytest.raises(ValidationError, match="preset = 'fast': unknown"):
        SweepGrid(preset="fast")
    assert [c.preset for c in cells(SweepGrid(targets=["mw54"], preset="smoke"))] == ["smoke"]
