"""CDDS: consistency distillation of the DIS teacher into a one-step sampler (docs/methods.md §4).

Each iteration draws a coarse pair j, integrates the frozen teacher's PF ODE from prior samples
on the fine grid only up to n_{j+1} (incomplete trajectories; or draws stored pairs from a
fragment bank), and minimizes the distance between f_θ(x_{n_j}, T − t_{n_j}) and the
stop-gradient (or EMA) target f_θ⁻(x_{n_{j+1}}, T − t_{n_{j+1}}); the target of the last pair is
the teacher endpoint itself.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cds import seeding, threads
from cds.checkpoints import (
    frozen_with_ema,
    load_checkpoint,
    load_finished_checkpoint,
    save_checkpoint,
)
from cds.config import CDDSParams, Params
from cds.integrators import coarse_indices, pf_ode_states
from cds.jacobians import batch_jacobian, log_abs_det_jacobian
from cds.losses import consistency_loss
from cds.metrics import log_z_report, paper_sinkhorn
from cds.networks import ConsistencyStudent, Control, consistency_scalings
from cds.preconditioning import AffineMap
from cds.run_config import (
    cdds_config,
    run_setting,
    teacher_space,
    training_reference,
)
from cds.sde import uniform_grid
from cds.targets.base import Target
from cds.targets.prior import StandardNormalPrior
from cds.training import RunOptions, TrainingResult, train
from cds.validation import distillation_validation

STUDENT_KIND = "cdds"
#: A CDDS step (two passes of a width-64 network over 512 rows) is call overhead more than
#: arithmetic: on one thread it ran 345 it/s, on two 294 (2-core machine, idle).
CDDS_MAX_THREADS = 1


@dataclass
class FragmentBank:
    """Consecutive coarse pairs (x_lo, x_hi, j) from the teacher's PF ODE."""

    x_lo: Tensor
    x_hi: Tensor
    pair: Tensor

    def __post_init__(self) -> None:
        # The rows of each pair, grouped once (a bank is built pair by pair, so for it
        # `by_pair` is the identity): a draw then costs one index, not a scan of the bank.
        self.by_pair = torch.argsort(self.pair, stable=True)
        counts = torch.bincount(self.pair).tolist()
        self.pair_rows = list(zip(accumulate(counts, initial=0), counts, strict=False))

    def __len__(self) -> int:
        return len(self.pair)

    def to(self, device: torch.device | str) -> FragmentBank:
        """The bank on `device`."""
        return FragmentBank(self.x_lo.to(device), self.x_hi.to(device), self.pair.to(device))

    def draw(self, j: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n rows of pair j, drawn uniformly with replacement."""
        start, count = self.pair_rows[j]
        offsets = torch.randint(count, (n,), generator=generator, device=self.pair.device)
        pick = self.by_pair[start + offsets]
        return self.x_lo[pick], self.x_hi[pick]


def generate_fragments(
    teacher: Control,
    target: Target,
    prior: StandardNormalPrior,
    fine_grid: Tensor,
    coarse: list[int],
    size: int,
    generator: torch.Generator,
    chunk: int = 4096,
    progress: bool = False,
) -> FragmentBank:
    """A bank of `size` pairs spread evenly over the coarse pairs, in pair order. Each path is
    integrated once to the end of the grid and serves every pair (its states at n_j and
    n_{j+1}); pair j takes the first of them. Paths go in chunks of `chunk` (bounded memory).

    One full path per J − 1 pairs costs N fine steps where incomplete trajectories, one per
    pair, would cost Σ_j n_{j+1} (docs/methods.md §4): 2.5× fewer steps for 4 pairs. Rows of
    one pair stay independent; only rows of different pairs share a path (a "shared" batch
    holds one pair; an "all" batch may hold two rows of one path)."""
    n_pairs = len(coarse) - 1
    per_pair = [size // n_pairs + (1 if j < size % n_pairs else 0) for j in range(n_pairs)]
    lo: list[list[Tensor]] = [[] for _ in range(n_pairs)]
    hi: list[list[Tensor]] = [[] for _ in range(n_pairs)]
    bar = tqdm(total=size, desc="fragments", disable=not progress, dynamic_ncols=True)
    for start in range(0, per_pair[0], chunk):
        threads.adapt()
        m = min(chunk, per_pair[0] - start)
        states = pf_ode_states(teacher, target, prior.sample(m, generator), fine_grid, coarse)
        for j in range(n_pairs):
            keep = max(0, min(m, per_pair[j] - start))
            lo[j].append(states[coarse[j]][:keep])
            hi[j].append(states[coarse[j + 1]][:keep])
            bar.update(keep)
    bar.close()
    pair = [torch.full((count,), j, dtype=torch.int64) for j, count in enumerate(per_pair)]
    return FragmentBank(
        torch.cat([torch.cat(rows) for rows in lo]),
        torch.cat([torch.cat(rows) for rows in hi]),
        torch.cat(pair).to(fine_grid.device),
    )


def build_fragment_bank(
    params: Params,
    teacher: Control,
    target: Target,
    progress: bool = False,
    prior_map: AffineMap | None = None,
) -> FragmentBank | None:
    """The fragment bank `params` ask for (`cdds.fragments: bank | refresh`; None for
    "online" or SCDS): `cdds.bank_size` pairs from the teacher's PF ODE on the run's device,
    drawn from the stream `fragments` of `params.seed` (what the fragments stage stores), in
    the teacher's coordinates (`prior_map`: what its checkpoint records, `recorded_prior_map`)."""
    cfg = params.cdds
    if params.method != "cdds" or cfg.fragments == "online":
        return None
    device, _ = run_setting(params, target)
    target = teacher_space(params, target, prior_map)
    return generate_fragments(
        teacher.to(device),
        target,
        StandardNormalPrior(target.dim, params.sde.prior_truncation, device),
        uniform_grid(cfg.n_fine, params.sde.T, device=device),
        coarse_indices(cfg.n_fine, cfg.n_coarse),
        cfg.bank_size,
        seeding.generator(params.seed, seeding.FRAGMENTS, device=device),
        progress=progress,
    )


@dataclass
class ConsistencyObjective:
    """One CDDS iteration (docs/methods.md §4, steps 1–4)."""

    student: ConsistencyStudent
    teacher: Control
    target: Target
    prior: StandardNormalPrior
    fine_grid: Tensor
    coarse: list[int]
    params: CDDSParams
    bank: FragmentBank | None = None
    ema_target: ConsistencyStudent | None = None
    #: Root seed of the bank's rebuilds (stream `fragment_refresh`, one per rebuild).
    refresh_seed: int = 0

    def _pairs(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(x_lo, x_hi, j) for one iteration, following `pair_sampling`:

        - "shared": one j for the whole batch (j of shape (1,), so that the networks embed the
          pair's times once, not once per row), paths integrated only up to n_{j+1}
          (docs/methods.md §4);
        - "all": every path integrated to T and all consecutive pairs used (B·(J − 1) rows,
          j per row).
        A bank gives one j per batch ("shared") or a random row per sample ("all").
        """
        n = self.params.optim.batch_size
        n_pairs = len(self.coarse) - 1
        mode = self.params.pair_sampling
        device = generator.device
        if self.bank is not None:
            if mode == "shared":
                j = int(torch.randint(n_pairs, (1,), generator=generator, device=device))
                lo, hi = self.bank.draw(j, n, generator)
                return lo, hi, torch.full((1,), j, dtype=torch.int64, device=device)
            rows = torch.randint(len(self.bank), (n,), generator=generator, device=device)
            return self.bank.x_lo[rows], self.bank.x_hi[rows], self.bank.pair[rows]
        x0 = self.prior.sample(n, generator)
        if mode == "shared":
            j = int(torch.randint(n_pairs, (1,), generator=generator, device=device))
            keep = [self.coarse[j], self.coarse[j + 1]]
            states = pf_ode_states(self.teacher, self.target, x0, self.fine_grid, keep)
            return (
                states[keep[0]],
                states[keep[1]],
                torch.full((1,), j, dtype=torch.int64, device=device),
            )
        states = pf_ode_states(self.teacher, self.target, x0, self.fine_grid, self.coarse)
        lo = torch.cat([states[self.coarse[j]] for j in range(n_pairs)])
        hi = torch.cat([states[self.coarse[j + 1]] for j in range(n_pairs)])
        return lo, hi, torch.arange(n_pairs, device=device).repeat_interleave(n)

    def _maybe_refresh(self, iteration: int) -> None:
        p = self.params
        if p.fragments == "refresh" and iteration > 0 and iteration % p.refresh_every == 0:
            gen = seeding.generator(
                self.refresh_seed, seeding.FRAGMENT_REFRESH, iteration, device=self.fine_grid.device
            )
            self.bank = generate_fragments(
                self.teacher, self.target, self.prior, self.fine_grid, self.coarse, p.bank_size, gen
            )

    def __call__(self, iteration: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        self._maybe_refresh(iteration)
        x_lo, x_hi, j = self._pairs(generator)
        T = self.student.T
        times = self.fine_grid[self.coarse]
        tau_lo, tau_hi = T - times[j], T - times[j + 1]
        last = (j + 1 == len(self.coarse) - 1)[:, None]
        reference = self.ema_target if self.ema_target is not None else self.student
        with torch.no_grad():
            # A batch of the last pair alone (a "shared" draw, one in J − 1) needs no
            # reference pass: its target is the teacher's endpoint.
            goal = x_hi if bool(last.all()) else torch.where(last, x_hi, reference(x_hi, tau_hi))
        loss = consistency_loss(self.student(x_lo, tau_lo), goal, self.params.loss)
        if self.ema_target is not None:
            with torch.no_grad():
                mu = self.params.target_ema_decay
                for shadow, p in zip(
                    self.ema_target.parameters(), self.student.parameters(), strict=True
                ):
                    shadow.mul_(mu).add_(p.detach(), alpha=1 - mu)
        return loss, {}


def save_bank(path: str | Path, bank: FragmentBank, manifest: dict[str, Any]) -> None:
    """The bank as a compact .pt of float32 CPU tensors; its manifest as JSON beside it."""
    bank = bank.to("cpu")
    save_checkpoint(
        path,
        {
            "kind": "fragments",
            "x_lo": bank.x_lo,
            "x_hi": bank.x_hi,
            "pair": bank.pair,
            "manifest": json.dumps(manifest),
        },
    )


def load_bank(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[FragmentBank, dict[str, Any]]:
    """A saved bank on `device`, and its manifest."""
    payload = load_checkpoint(path, kind="fragments")
    return (
        FragmentBank(payload["x_lo"], payload["x_hi"], payload["pair"]).to(device),
        json.loads(payload["manifest"]),
    )


def train_student(
    params: Params,
    target: Target,
    teacher: Control,
    teacher_hash: str,
    checkpoint_path: str | Path,
    bank: FragmentBank | None = None,
    prior_map: AffineMap | None = None,
    **options: Unpack[RunOptions],
) -> TrainingResult:
    """Distil `teacher` into a consistency student, in the teacher's coordinates (`prior_map`:
    what its checkpoint records, `recorded_prior_map`; `Trainer.try_resume` says which
    checkpoints resume; `options` say how the run is watched, `RunOptions`)."""
    cfg = params.cdds
    device, schedule = run_setting(params, target)
    target = teacher_space(params, target, prior_map)
    teacher.to(device)
    with seeding.initialisation(params.seed):
        student = ConsistencyStudent(
            target.dim, schedule.T, cfg.network.width, cfg.network.depth, cfg.network.activation
        )
    student.to(device)
    if cfg.network == params.teacher.network:
        student.warm_start_from(teacher)
    prior = StandardNormalPrior(target.dim, params.sde.prior_truncation, device)
    fine_grid = uniform_grid(cfg.n_fine, schedule.T, device=device)
    coarse = coarse_indices(cfg.n_fine, cfg.n_coarse)
    if cfg.fragments in ("bank", "refresh") and bank is None:
        raise ValueError(f"cdds.fragments = {cfg.fragments!r} needs a fragment bank")
    objective = ConsistencyObjective(
        student,
        teacher,
        target,
        prior,
        fine_grid,
        coarse,
        cfg,
        bank=bank.to(device) if bank is not None and cfg.fragments != "online" else None,
        ema_target=copy.deepcopy(student) if cfg.target_network == "ema" else None,
        refresh_seed=params.seed,
    )
    reference = training_reference(params, target, cfg.eval_samples)

    def evaluation(model: torch.nn.Module, iteration: int) -> dict[str, Any]:
        report = one_step_weights_report(
            model,
            target,
            prior,
            cfg.eval_samples,  # type: ignore[arg-type]
            seeding.generator(params.seed, seeding.TRAIN_EVAL, iteration, 0, device=device),
        )
        if reference is not None:
            generator = seeding.generator(
                params.seed, seeding.TRAIN_EVAL, iteration, 1, device=device
            )
            x0 = prior.sample(cfg.eval_samples, generator)
            with torch.no_grad():
                report["sinkhorn"] = paper_sinkhorn(model(x0, schedule.T), reference).value
        return report

    return train(
        student,
        objective,
        cfg.optim,
        kind=STUDENT_KIND,
        config=cdds_config(params, teacher_hash),
        dim=target.dim,
        seed=seeding.stream_seed(params.seed, seeding.TRAIN),
        checkpoint_path=checkpoint_path,
        evaluation=evaluation,
        eval_every=cfg.eval_every,
        stopping=cfg.stopping,
        validation=distillation_validation(
            teacher,
            target,
            prior,
            fine_grid,
            coarse,
            cfg.stopping.validation_samples,
            params.seed,
            cfg.loss,
        )
        if cfg.stopping.rule == "plateau"
        else None,
        max_threads=CDDS_MAX_THREADS,
        prior_map=prior_map,
        **options,
    )


def one_step_log_weights(
    student: ConsistencyStudent,
    target: Target,
    prior: StandardNormalPrior,
    n: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples, DF log weights log ρ(f(x₀)) − log p(x₀) + log|det ∂f/∂x₀| (exact Jacobian,
    docs/methods.md §6) and the Jacobian determinant signs of the one-step map."""
    x0 = prior.sample(n, generator)
    with torch.no_grad():
        x = student(x0, student.T)
    logdet, sign = one_step_log_abs_det(student, x0)
    log_w = target.log_prob(x).double() - prior.log_prob(x0).double() + logdet
    return x, log_w, sign


def one_step_log_abs_det(
    student: ConsistencyStudent, x0: Tensor, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Exact log|det ∂f/∂x₀| and det sign of the one-step map f(x₀) = c_s·x₀ + c_o·G(W·x₀ + e),
    for any dimension D (docs/methods.md §6).

    G is the network after its input layer W (width w × D), so ∂f/∂x₀ = c_s·I_D + c_o·J_G·W with
    J_G = ∂G/∂h (D × w). Sylvester's identity det(I_D + A·B) = det(I_w + B·A) gives
    det ∂f/∂x₀ = c_s^D · det(I_w + (c_o/c_s)·W·J_G): a w × w determinant of the Jacobian of
    h ↦ W·G(h), w backward passes per sample instead of D. Used when D > w (c_s > 0 for τ > 0);
    below that the full D × D Jacobian is as cheap.
    """
    tau = torch.tensor([student.T], dtype=x0.dtype, device=x0.device)
    net = student.net
    width = net.input.out_features
    if x0.shape[1] <= width:
        return log_abs_det_jacobian(lambda v: student(v, student.T), x0, chunk)
    c_skip, c_out = (float(c) for c in consistency_scalings(tau))
    with torch.no_grad():
        h = net.input(x0) + net.embed(tau)
    weight = net.input.weight.detach()
    signs, logdets = [], []
    eye = torch.eye(width, dtype=torch.float64, device=x0.device)
    for start in range(0, len(h), chunk):
        jac = batch_jacobian(lambda v: net.head(v) @ weight.T, h[start : start + chunk])
        sign, logdet = torch.linalg.slogdet(eye + (c_out / c_skip) * jac.detach().double())
        signs.append(sign)
        logdets.append(logdet + x0.shape[1] * math.log(c_skip))
    return torch.cat(logdets), torch.cat(signs)


def one_step_weights_report(
    student: ConsistencyStudent,
    target: Target,
    prior: StandardNormalPrior,
    n: int,
    generator: torch.Generator,
) -> dict[str, Any]:
    """ELBO, IS log Z and ESS of the one-step map with their standard errors, the share of
    negative Jacobian determinants, and whether the map folds (`log_z_report`)."""
    start = time.perf_counter()
    _, log_w, sign = one_step_log_weights(student, target, prior, n, generator)
    report: dict[str, Any] = log_z_report(log_w, target.log_Z, det_signs=sign)
    report["weights_seconds"] = time.perf_counter() - start
    return report


def load_student(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[ConsistencyStudent, dict[str, Any]]:
    """The distilled student with its EMA weights on `device`, frozen."""
    payload = load_finished_checkpoint(path, STUDENT_KIND)
    config = json.loads(payload["metadata"]["config"])
    cfg = CDDSParams.model_validate(config["cdds"])
    student = ConsistencyStudent(
        int(payload["metadata"]["dim"]),
        float(config["sde"]["T"]),
        cfg.network.width,
        cfg.network.depth,
        cfg.network.activation,
    )
    frozen_with_ema(student, payload, device)
    return student, config
