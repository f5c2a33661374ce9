"""DIS teacher: LV gradient, Gaussian sanity checks, training, checkpoints and resume, params."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math

import pytest
import torch

from cds.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cds.config import ParamsError, load_params
from cds.dis import (
    LogVarianceObjective,
    evaluate_sde_sampler,
    load_teacher,
    make_control,
    make_schedule,
    teacher_fingerprint,
    train_teacher,
)
from cds.losses import log_variance_loss
from cds.networks import Control
from cds.samplers import path_rnd, sample_pf_ode, sample_sde, simulate_sde
from cds.sde import VPSchedule, uniform_grid
from cds.targets import StandardNormalPrior, Target, get_target
from cds.training import Trainer, ema_decay


class ScaledGaussian(Target):
    """ρ = Z₀·N(0, I): the interpolated score of the untrained control is exactly optimal."""

    name = "scaled_gaussian"
    box = (-4.0, 4.0)

    def __init__(self, dim: int, log_z0: float):
        self.dim = dim
        self.log_z0 = log_z0
        self.log_Z = log_z0

    def _log_prob(self, x):
        return self.log_z0 - 0.5 * x.square().sum(1) - 0.5 * self.dim * math.log(2 * math.pi)

    def _score(self, x):
        return -x


def tiny_params(**overrides):
    base = [
        "teacher.n_steps=16",
        "teacher.optim.iterations=30",
        "teacher.optim.batch_size=64",
        "teacher.optim.checkpoint_every=10",
        "teacher.optim.ema_window=12",
        "teacher.network.width=16",
        "teacher.eval_every=15",
        "teacher.eval_samples=200",
    ]
    return load_params(None, base + [f"{k}={v}" for k, v in overrides.items()])


def test_lv_gradient_matches_finite_differences():
    """∇L_LV from the batched recomputation equals central differences of the LV objective
    with the path (states, noises) and ū held fixed, evaluated step by step."""
    torch.manual_seed(0)
    schedule = VPSchedule()
    control = Control(2, schedule, width=8, depth=3)
    with torch.no_grad():  # move off the zero-initialized output so every parameter matters
        for p in control.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = get_target("gmm9")
    prior = StandardNormalPrior(2)
    grid = uniform_grid(6)
    paths = simulate_sde(control, target, prior, grid, 32, torch.Generator().manual_seed(1))
    control.double()
    grid = grid.double()
    for field in ("states", "noises", "guidance", "log_prior", "log_target"):
        setattr(paths, field, getattr(paths, field).double())
    u_bar = [
        control(paths.states[k], float(grid[k]), target.score(paths.states[k])).detach()
        for k in range(6)
    ]

    def stepwise_loss(model: Control) -> torch.Tensor:
        rnd = paths.log_prior - paths.log_target
        for k in range(6):
            x, t, dt = paths.states[k], float(grid[k]), float(grid[k + 1] - grid[k])
            u = model(x, t, None if t == 0 else target.score(x))
            rnd = rnd + (u * (u_bar[k] - 0.5 * u)).sum(1) * dt
            rnd = rnd + math.sqrt(dt) * (u * paths.noises[k]).sum(1)
        return rnd.var() / 2

    loss, _ = log_variance_loss(path_rnd(control, paths, grid), 2)
    grads = torch.autograd.grad(loss, list(control.parameters()))
    # The stored guidance is float32, so the two agree to float32 precision.
    with torch.no_grad():
        stepwise = float(stepwise_loss(control))
    assert float(loss.detach()) == pytest.approx(stepwise, rel=1e-6)
    h = 1e-6
    checked = 0
    for (name, param), grad in zip(control.named_parameters(), grads, strict=True):
        for idx in [0, param.numel() // 2]:
            with torch.no_grad():
                flat = param.view(-1)
                flat[idx] += h
                up = float(stepwise_loss(control))
                flat[idx] -= 2 * h
                down = float(stepwise_loss(control))
                flat[idx] += h
            fd = (up - down) / (2 * h)
            assert grad.view(-1)[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), name
            checked += 1
    assert checked >= 20


def test_untrained_control_is_exact_for_a_gaussian_target():
    """u = −σx: Var(R) → 0 and mean(−R) → log Z₀ (Δdiv included), both O(1/N) for
    Euler–Maruyama (measured: Var 0.87, 0.21, 0.05 at N = 64, 256, 1024); PF ODE = identity."""
    target = ScaledGaussian(3, log_z0=1.7)
    prior = StandardNormalPrior(3)
    control = Control(3, VPSchedule())
    variances, gaps = [], []
    for n_steps in (64, 256, 1024):
        w = sample_sde(
            control, target, prior, uniform_grid(n_steps), 4000, torch.Generator().manual_seed(0)
        )
        variances.append(float(w.log_weights.var()))
        gaps.append(abs(float(w.log_weights.mean()) - 1.7))
    for coarse, fine in itertools.pairwise(variances):
        assert 2.5 < coarse / fine < 6.0  # ≈ 4 for a 4× finer grid
    assert gaps[0] > gaps[1] > gaps[2]
    assert variances[2] < 0.1 and gaps[2] < 0.03
    x0 = prior.sample(500, torch.Generator().manual_seed(1))
    x1 = sample_pf_ode(control, target, prior, uniform_grid(32), 500, x0=x0)
    torch.testing.assert_close(x1, x0, rtol=0, atol=1e-5)


def test_one_step_ode_sampler_makes_exactly_one_network_call():
    control = Control(2, VPSchedule())
    calls = []
    original = control.net.body
    control.net.body = lambda x, e: calls.append(len(x)) or original(x, e)  # type: ignore[method-assign]
    out = sample_pf_ode(control, None, StandardNormalPrior(2), uniform_grid(1), 100)
    assert out.shape == (100, 2) and calls == [100]


def test_ema_decay_matches_spec():
    assert ema_decay(1500) == pytest.approx(1 - 1501**-0.9)
    assert 0.9985 < ema_decay(1500) < 0.9987
    assert ema_decay(10**9) == 0.9999


@pytest.mark.slow
def test_short_training_on_gmm9_improves_sinkhorn(tmp_path):
    """200 iterations at batch 256: the Sinkhorn at n = 1000 drops below 0.25 (floor ≈ 0.155,
    untrained ≈ 0.5) and the LV loss falls (measured: mean of the last 20 iterations 0.70× the
    first 20)."""
    params = load_params(
        None,
        [
            "teacher.optim.iterations=200",
            "teacher.optim.batch_size=256",
            "teacher.optim.ema_window=50",
            "teacher.eval_every=1000",
        ],
    )
    target = get_target("gmm9")
    ref = target.sample(1000, torch.Generator().manual_seed(9))
    prior = StandardNormalPrior(2)
    grid = uniform_grid(128)
    torch.manual_seed(0)
    untrained = make_control(2, make_schedule(params), params.teacher.network, 10.0)
    gen = torch.Generator().manual_seed(3)
    before = evaluate_sde_sampler(untrained, target, prior, grid, 1000, gen, ref)["sinkhorn"]
    result = train_teacher(params, target, tmp_path / "t.pt", progress=False)
    control, _ = load_teacher(tmp_path / "t.pt")
    gen = torch.Generator().manual_seed(3)
    after = evaluate_sde_sampler(control, target, prior, grid, 1000, gen, ref)["sinkhorn"]
    assert after < 0.25 < before
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    assert last < 0.85 * first


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
    schedule = make_schedule(params)
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
    monkeypatch.setattr("cds.dis.code_version", lambda: "another-version")
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


def test_log_variance_loss_drops_nonfinite_and_huge_paths():
    rnd = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf"), 1e8, 5.0])
    loss, dropped = log_variance_loss(rnd, dim=2)
    assert dropped == 3
    assert float(loss) == pytest.approx(float(torch.tensor([1.0, 2.0, 3.0, 5.0]).var()) / 2)
    loss, dropped = log_variance_loss(torch.tensor([1.0, float("nan")]), dim=1)
    assert dropped == 1 and math.isnan(float(loss))


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
