"""Params loading: files and overrides that name part of a section keep the embedded defaults of
the rest of it, and bad input is still refused by key and value."""

from __future__ import annotations

import pytest
import yaml

from cds.config import Params, ParamsError, load_params


def test_a_partial_override_keeps_the_sections_own_defaults():
    defaults = Params()
    params = load_params(None, ["cdds.optim.iterations=50", "cdds.stopping.rule=fixed"])
    # CDDS's optimizer defaults differ from a bare optimizer section's (window 300, checkpoints
    # every 2500 iterations, against 1500 and 250)
    assert params.cdds.optim.iterations == 50
    assert params.cdds.optim.lr == defaults.cdds.optim.lr
    assert params.cdds.optim.ema_window == defaults.cdds.optim.ema_window == 300
    assert params.cdds.optim.checkpoint_every == defaults.cdds.optim.checkpoint_every == 2500
    changed = load_params(None, ["teacher.optim.lr=0.001"])
    assert changed.teacher.optim.iterations == defaults.teacher.optim.iterations == 10_000


def test_a_partial_params_file_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"scds": {"optim": {"batch_size": 64}}, "seed": 3}))
    params = load_params(path)
    assert params.seed == 3
    assert params.scds.optim.batch_size == 64
    assert params.scds.optim.iterations == Params().scds.optim.iterations == 10_000
    assert params.teacher == Params().teacher


def test_bad_keys_and_values_are_still_named(tmp_path):
    with pytest.raises(ParamsError, match=r"cdds\.optim\.bogus = 1: unknown key"):
        load_params(None, ["cdds.optim.bogus=1"])
    with pytest.raises(ParamsError, match=r"cdds\.optim\.lr = -1"):
        load_params(None, ["cdds.optim.lr=-1"])
    path = tmp_path / "params.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping at the top level, got list"):
        load_params(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.n_steps=-4", "teacher.n_steps = -4"),
        ("teacher.optim.batch_size=0", "teacher.optim.batch_size = 0"),
        ("teacher.network.activation=swishy", "unknown activation 'swishy'"),
        ("teacher.optim.lr=abc", "teacher.optim.lr = 'abc'"),
        ("teacher.optimizer.lr=0.1", "teacher.optimizer = "),
        ("target.name=gmm10", "unknown target 'gmm10'"),
    ],
)
def test_bad_params_fail_before_training(override, message):
    with pytest.raises(ParamsError) as err:
        load_params(None, [override])
    assert message in str(err.value)


def test_params_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("teacher: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match=r"key\.path=value"):
        load_params(None, ["teacher.n_steps"])
