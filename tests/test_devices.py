"""Devices: the `device` setting, and nothing created off the run's device inside a step.

This machine may have no GPU, so the check that every tensor is created where it is used runs
on the CPU with torch's default device set to `meta` (`torch.device("meta")` as a context):
a tensor created without an explicit device then lands on `meta`, and any arithmetic mixing
it with the run's CPU tensors fails. The CPU/CUDA parity test runs only where CUDA exists."""

from __future__ import annotations

import math

import pytest
import torch

from cds import seeding
from cds.cdds import ConsistencyObjective, generate_fragments, one_step_log_weights
from cds.config import ParamsError, load_params
from cds.devices import DeviceError, resolve_device
from cds.integrators import coarse_indices, sample_pf_ode, sample_sde
from cds.metrics import paper_sinkhorn
from cds.metrics.report import sample_quality
from cds.networks import ConsistencyStudent
from cds.run_config import make_control, make_schedule
from cds.samplers import ConsistencySampler, DiffusionSampler, ShortcutSampler
from cds.scds import SelfConsistencyObjective, flow_log_weights
from cds.sde import uniform_grid
from cds.targets import StandardNormalPrior, get_target, target_names
from cds.teacher import LogVarianceObjective, evaluate_sde_sampler
from tests.conftest import TINY

CUDA = torch.cuda.is_available()


def test_device_setting_resolves_and_refuses_what_is_not_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(DeviceError, match="device = 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="device = 'cuda:99'"):
        resolve_device("cuda:99")
    with pytest.raises(ParamsError, match="device = 'tpu'"):
        load_params(None, ["device=tpu"])


def _cpu_run():
    params = load_params(None, [*TINY, "device=cpu"])
    schedule = make_schedule(params.sde)
    target = get_target("gmm9")
    prior = StandardNormalPrior(2, params.sde.prior_truncation)
    control = make_control(2, schedule, params.teacher.network, 10.0)
    scds_control = make_control(2, schedule, params.scds.network, 10.0, step_conditioned=True)
    student = ConsistencyStudent(2, schedule.T, 16, 4)
    return params, schedule, target, prior, control, scds_control, student


def test_no_tensor_is_created_off_the_run_device_inside_a_step():
    params, schedule, target, prior, control, scds_control, student = _cpu_run()
    grid = uniform_grid(16, schedule.T)
    fine, coarse = uniform_grid(params.cdds.n_fine), coarse_indices(16, 5)
    bank = generate_fragments(control, target, prior, fine, coarse, 64, torch.Generator())
    reference = target.sample(200, torch.Generator().manual_seed(1))
    online = params.cdds.model_copy(update={"fragments": "online"})
    targets = [t for t in map(get_target, target_names()) if t.has_exact_samples]
    with torch.device("meta"):  # anything made without a device lands here and cannot mix
        g = torch.Generator().manual_seed(0)
        outputs = [
            LogVarianceObjective(control, target, prior, grid, 32)(0, g)[0],
            ConsistencyObjective(student, control, target, prior, fine, coarse, params.cdds, bank)(
                0, g
            )[0],
            ConsistencyObjective(student, control, target, prior, fine, coarse, online)(0, g)[0],
            SelfConsistencyObjective(scds_control, target, prior, grid, params.scds)(0, g)[0],
            sample_sde(control, target, prior, grid, 50, g).log_weights,
            sample_pf_ode(scds_control, target, prior, grid, 50, g, step_size=1 / 16),
            one_step_log_weights(student, target, prior, 20, g)[1],
            flow_log_weights(scds_control, target, prior, grid, 2, 20, g)[1],
            flow_log_weights(scds_control, target, prior, grid, 2, 20, g, "hutchinson")[1],
            prior.sample(5, g),
            *(other.sample(5, g) for other in targets),
        ]
        report = evaluate_sde_sampler(control, target, prior, grid, 200, g, reference)
        quality = sample_quality(target, reference.flip(0), reference)
    assert all(out.device.type == "cpu" for out in outputs)
    assert math.isfinite(report["sinkhorn"]) and math.isfinite(quality["mmd"])
    for loss in outputs[:4]:
        assert loss.requires_grad and torch.isfinite(loss)


def test_samplers_move_with_their_target_prior_and_grid():
    def samplers():
        _, schedule, _, prior, control, scds_control, student = _cpu_run()
        yield ConsistencySampler(student, prior, schedule.alpha, [schedule.T])
        yield ShortcutSampler(scds_control, get_target("gmm9"), StandardNormalPrior(2), 2)
        yield DiffusionSampler(control, get_target("gmm9"), StandardNormalPrior(2), 4)

    for sampler in samplers():
        x = sampler.sample(3, torch.Generator().manual_seed(0))
        assert x.device.type == "cpu" and x.shape == (3, 2)
        sampler.to("meta")
        assert sampler.device.type == "meta" and sampler.prior.device.type == "meta"
        if not isinstance(sampler, ConsistencySampler):
            assert sampler.grid.device.type == "meta"
            assert sampler.target.means.device.type == "meta"  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="generator is on cpu, the sampler on meta"):
            sampler.sample(3, torch.Generator())


def test_generators_and_user_targets_follow_the_device():
    assert seeding.generator(0, seeding.TRAIN, device="cpu").device.type == "cpu"

    class Shifted:
        dim = 2

        def __init__(self) -> None:
            self.shift = torch.ones(2)

        def log_prob(self, x):
            return -0.5 * (x - self.shift.to(x)).square().sum(1)

    from cds.targets.catalog import _UserTarget

    wrapped = _UserTarget(Shifted(), "m:Shifted").to("meta")
    assert wrapped.inner.shift.device.type == "meta" and wrapped.device.type == "meta"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cpu_and_cuda_train_the_same_distribution(tmp_path):
    """The same seeded short teacher run on each device: different streams, the same
    distribution within Monte Carlo error (log Z and the paper Sinkhorn to fresh samples)."""
    from cds.teacher import train_teacher

    target = get_target("gmm9")
    reference = target.sample(2000, torch.Generator().manual_seed(5))
    results = {}
    for device in ("cpu", "cuda"):
        overrides = [
            f"device={device}",
            "teacher.optim.iterations=300",
            "teacher.stopping.rule=fixed",
        ]
        params = load_params(None, [*TINY, *overrides])
        model = train_teacher(params, target, tmp_path / f"{device}.pt", progress=False).ema_model
        g = torch.Generator(device=device).manual_seed(1)
        prior = StandardNormalPrior(2, device=device)
        grid = uniform_grid(params.teacher.n_steps, device=device)
        weighted = sample_sde(model, target.to(device), prior, grid, 2000, g)
        results[device] = (
            float(torch.logsumexp(weighted.log_weights, 0) - math.log(2000)),
            paper_sinkhorn(weighted.samples.cpu(), reference).value,
        )
        target.to("cpu")
    (z_cpu, s_cpu), (z_gpu, s_gpu) = results["cpu"], results["cuda"]
    assert abs(z_cpu - z_gpu) < 0.15
    assert abs(s_cpu - s_gpu) < 0.25 * max(s_cpu, s_gpu)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_checkpoints_load_onto_the_requested_device_and_record_its_kind(tmp_path):
    import json

    from cds.checkpoints import load_checkpoint
    from cds.teacher import load_teacher, train_teacher
    from tests.conftest import tiny_teacher_params

    params = tiny_teacher_params(device="cpu", **{"teacher.optim.iterations": 4})
    train_teacher(params, get_target("gmm9"), tmp_path / "t.pt", progress=False)
    config = json.loads(load_checkpoint(tmp_path / "t.pt")["metadata"]["config"])
    assert config["device"] == "cpu"  # a CUDA run's checkpoint is not resumed on the CPU
    control, _ = load_teacher(tmp_path / "t.pt", device="meta")
    assert {p.device.type for p in control.parameters()} == {"meta"}
