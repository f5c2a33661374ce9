"""The sweep's shared teacher: one finished checkpoint per teacher fingerprint, handed to every
cell that needs it; unfinished, foreign or corrupt files are never handed on."""

from __future__ import annotations

import shutil

from cds.checkpoints import load_checkpoint
from cds.config import load_params
from cds.pipeline.shared_teacher import shared_teacher
from cds.run_config import teacher_fingerprint
from cds.targets import get_target
from cds.teacher import train_teacher
from tests.conftest import TINY

PARAMS = load_params(None, TINY)
KEY = teacher_fingerprint(PARAMS)


def _train(path, stop_after=None):
    train_teacher(PARAMS, get_target("gmm9"), path, progress=False, stop_after=stop_after)


def test_first_cell_deposits_and_later_cells_start_from_a_copy(tmp_path):
    store, first, second = tmp_path / "store", tmp_path / "a" / "t.pt", tmp_path / "b" / "t.pt"
    with shared_teacher(first, store, KEY):
        assert not first.exists()  # nothing to hand over yet: the cell trains
        _train(first)
    assert load_checkpoint(first)["fingerprint"] == KEY
    assert (store / f"{KEY}.pt").read_bytes() == first.read_bytes()
    with shared_teacher(second, store, KEY):
        assert second.read_bytes() == first.read_bytes()  # handed over before the stage runs
    assert teacher_fingerprint(load_params(None, [*TINY, "seed=1"])) != KEY  # seeds differ


def test_unfinished_and_corrupt_checkpoints_are_not_handed_on(tmp_path):
    store, cell = tmp_path / "store", tmp_path / "cell" / "t.pt"
    with shared_teacher(cell, store, KEY):
        _train(cell, stop_after=5)  # a killed stage: its checkpoint is unfinished
    assert not (store / f"{KEY}.pt").exists()

    (store / f"{KEY}.pt").write_bytes(b"not a checkpoint")
    other = tmp_path / "other" / "t.pt"
    with shared_teacher(other, store, KEY):
        assert not other.exists()  # the corrupt deposit is ignored: this cell trains
        _train(other)
    assert load_checkpoint(store / f"{KEY}.pt")["fingerprint"] == KEY  # and replaces it

    foreign = tmp_path / "foreign.pt"
    shutil.copy(store / f"{KEY}.pt", foreign)
    with shared_teacher(foreign, tmp_path / "store2", "0123456789abcdef"):
        pass  # a checkpoint of another fingerprint is not deposited under this one
    assert not (tmp_path / "store2" / "0123456789abcdef.pt").exists()
