"""Training checkpoints: bit-identical resume, fingerprints that refuse other params, code or
inputs, finished runs trained again, no wall times, damaged files, and the skip rule."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from cds.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cds.run_config import make_control, make_schedule, teacher_fingerprint
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target
from cds.teacher import LogVarianceObjective, load_teacher, train_teacher
from cds.training import Trainer
from tests.conftest import tiny_teacher_params as tiny_params


def test_kill_and_resume_reproduces_uninterrupted_run(tmp_path, caplog):
    params = tiny_params()
    target = get_target("gmm9")
    full = train_teacher(params, target, tmp_path / "full.pt", progress=False)
    part = train_teacher(params, target, tmp_path / "resumed.pt", progress=False, stop_after=13)
    assert part.iterations == 13
    with caplog.at_level(logging.WARNING, logger="cds.training"):
        resumed = train_teacher(params, target, tmp_path / "resumed.pt", progress=False)
    assert resumed.iterations == 30
    # the resume is shown at a level users see (warnings reach stderr without any set-up)
    assert any(
        r.levelno >= logging.WARNING and "resuming dis training from iteration" in r.getMessage()
        for r in caplog.records
    )
    torch.testing.assert_close(
        torch.tensor(resumed.losses), torch.tensor(full.losses), rtol=1e-5, atol=1e-7
    )
    a = load_checkpoint(tmp_path / "full.pt")
    b = load_checkpoint(tmp_path / "resumed.pt")
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=1e-5, atol=1e-6)
    assert [e["iteration"] for e in resumed.evaluations] == [15, 30]


def test_resume_updates_the_modules_evaluation_uses(tmp_path):
    params = tiny_params()
    target = get_target("gmm9")
    schedule = make_schedule(params.sde)
    control = make_control(2, schedule, params.teacher.network, 10.0)
    objective = LogVarianceObjective(control, target, StandardNormalPrior(2), uniform_grid(16), 64)
    kwargs = dict(
        seed=0, kind="dis", fingerprint="f", checkpoint_path=tmp_path / "c.pt", progress=False
    )
    Trainer(control, objective, params.teacher.optim, **kwargs).run(stop_after=10)
    control2 = make_control(2, schedule, params.teacher.network, 10.0)
    objective2 = LogVarianceObjective(
        control2, target, StandardNormalPrior(2), uniform_grid(16), 64
    )
    trainer = Trainer(control2, objective2, params.teacher.optim, **kwargs)
    assert trainer.try_resume() and trainer.step == 10
    torch.testing.assert_close(control2.state_dict(), control.state_dict())
    before = copy.deepcopy(control2.state_dict())
    trainer.run(stop_after=5)
    assert objective2.control is trainer.model
    assert any(not torch.equal(before[k], v) for k, v in control2.state_dict().items())


def test_checkpoint_written_for_other_params_is_not_reused(tmp_path):
    target = get_target("gmm9")
    train_teacher(tiny_params(), target, tmp_path / "c.pt", progress=False, stop_after=10)
    other = train_teacher(tiny_params(seed=5), target, tmp_path / "c.pt", progress=False)
    assert len(other.losses) == 30


def test_checkpoint_of_other_code_or_inputs_is_not_resumed(tmp_path, monkeypatch):
    """The fingerprint covers the cds code version and the content of the target's files: an
    unfinished checkpoint is resumed by the same code only."""
    target = get_target("gmm9")
    train_teacher(tiny_params(), target, tmp_path / "c.pt", progress=False, stop_after=10)
    monkeypatch.setattr("cds.run_config.code_version", lambda: "another-version")
    other = train_teacher(tiny_params(), target, tmp_path / "c.pt", progress=False)
    assert len(other.losses) == 30  # from scratch
    config = json.loads(load_checkpoint(tmp_path / "c.pt")["metadata"]["config"])
    assert config["code_version"] == "another-version"

    data = tmp_path / "obs.csv"
    data.write_text("1\n")
    params = tiny_params(**{"target.options.data": str(data)})
    before = teacher_fingerprint(params)
    data.write_text("2\n")  # same path, new content
    assert teacher_fingerprint(params) != before


def test_finished_checkpoint_is_trained_again_unless_reused(tmp_path, caplog):
    """What DVC re-runs (a forced `dvc repro -f`, changed outputs) trains again, to the same
    weights; a caller that asks (a sweep sharing one teacher) gets the finished run back."""
    target = get_target("gmm9")
    first = train_teacher(tiny_params(), target, tmp_path / "c.pt", progress=False)
    with caplog.at_level(logging.WARNING, logger="cds.training"):
        again = train_teacher(tiny_params(), target, tmp_path / "c.pt", progress=False)
    assert len(again.losses) == 30 and again.train_seconds > 0
    assert any("training again from scratch" in r.getMessage() for r in caplog.records)
    assert again.losses == first.losses
    reused = train_teacher(
        tiny_params(), target, tmp_path / "c.pt", progress=False, reuse_finished=True
    )
    assert reused.iterations == 30 and reused.train_seconds == 0.0


def test_checkpoint_holds_no_wall_times(tmp_path):
    """Same run, same bytes: nothing in a checkpoint depends on the moment or the machine."""
    target = get_target("gmm9")
    train_teacher(tiny_params(), target, tmp_path / "a.pt", progress=False)
    train_teacher(tiny_params(), target, tmp_path / "b.pt", progress=False)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_missing_corrupt_and_unfinished_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_teacher(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_teacher(bad)
    save_checkpoint(tmp_path / "other.pt", {"kind": "cdds"})
    with pytest.raises(CheckpointError, match="expected 'dis'"):
        load_teacher(tmp_path / "other.pt")
    train_teacher(
        tiny_params(), get_target("gmm9"), tmp_path / "part.pt", progress=False, stop_after=10
    )
    with pytest.raises(CheckpointError, match="unfinished"):
        load_teacher(tmp_path / "part.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes((tmp_path / "part.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_teacher(truncated)


def test_skip_rule_leaves_parameters_and_scheduler_untouched(tmp_path):
    """Iterations with a non-finite loss or gradient are skipped and counted."""
    params = tiny_params()
    model = torch.nn.Linear(2, 1)
    model.set_clips = lambda *_: None  # type: ignore[attr-defined]
    bad_loss, bad_grad = {3, 4}, {6}

    def objective(iteration, generator):
        out = model(torch.ones(1, 2)).sum()
        if iteration in bad_loss:
            return out * float("nan"), {}
        if iteration in bad_grad:
            # finite value, infinite gradient: d/dz √|z| at z = 0
            return out.square() + (out - out.detach()).abs().sqrt(), {}
        return out.square(), {}

    trainer = Trainer(
        model,
        objective,
        params.teacher.optim,
        seed=0,
        kind="toy",
        fingerprint="x",
        checkpoint_path=tmp_path / "c.pt",
        progress=False,
    )
    before = {}

    def snapshot(step):
        before[step] = (copy.deepcopy(model.state_dict()), trainer.scheduler.last_epoch)

    for step in range(8):
        snapshot(step)
        trainer.run(stop_after=1)
    assert trainer.skipped == 3
    for step in (3, 4, 6):
        after_state = before[step + 1][0]
        assert all(torch.equal(before[step][0][k], after_state[k]) for k in after_state)
        assert before[step + 1][1] == before[step][1]
    assert not torch.equal(before[0][0]["weight"], before[1][0]["weight"])


def test_the_digest_of_number_lists_is_the_canonical_one():
    """Lists of plain numbers (a run's losses) are hashed by a fast path; its bytes must be
    those of the canonical per-item encoding (json.dumps of each item), or every checkpoint
    written before would read as modified."""
    import hashlib

    from cds.checkpoints import content_digest

    def canonical(value):
        digest = hashlib.sha256()
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(f"V{json.dumps(key)}".encode())
            digest.update(f"L{len(value[key])}".encode())
            for item in value[key]:
                digest.update(f"V{json.dumps(item)}".encode())
        return digest.hexdigest()

    numbers = [0.1, -0.0, 1e-300, 3.0, 12345678901234567890, -7, float("nan")]
    numbers += [float("inf"), -float("inf"), 2.5e17, *torch.randn(1000).tolist()]
    payload = {"losses": numbers, "mixed": [1, 2.0, True, None, "a"], "empty": []}
    assert content_digest(payload) == canonical(payload)
