"""The training loop shared by the DIS teacher, CDDS and SCDS (docs/methods.md §10).

One iteration: set the clip values for this iteration → loss → backward → skip rule (non-finite
loss or gradient: no optimizer, scheduler or EMA update, counted) → global-norm gradient clip →
one Adam step → one LR-scheduler step → EMA update. An objective may hand back a follow-up loss
(SCDS's alternating update), which gets a second Adam step after the first. The LR schedule, clip
schedule and EMA all advance once per iteration (docs/methods.md §12, pitfall 2), whatever the
objective.

EMA (the weights used for evaluation and saved as "the model"): during the last `ema_window`
iterations, every `ema_every`-th iteration, shadow ← γ_e·shadow + (1 − γ_e)·θ with
γ_e = min(1 − (1 + e)^(−0.9), 0.9999), e = iterations since the EMA start; before it, shadow = θ.

Budgets (`StoppingParams`): a "fixed" run takes `optim.iterations` iterations, the LR decaying
stepwise over all of them. A "plateau" run treats `optim.iterations` as a cap: the LR stays at
`optim.lr` (times `backoff` per back-off) while a `Validation` of the live model runs every
`check_every` iterations; once `patience` checks in a row bring no gain beyond its tolerance on
any of its `Criterion`s (or cap − cooldown is reached), the weights and optimizer state of the
last check with a gain come back and a cool-down of `cooldown` iterations decays the LR
stepwise by `lr_final_factor`, with the EMA over its last `ema_window`. A check that finds the
run diverged brings that state back too and multiplies the LR by `backoff` (docs/methods.md
§10). The run records when and why it stopped (`TrainingResult.stop`).

Checkpoints are atomic and hold the model, the EMA shadow, optimizer, scheduler, the simulation
generator's state, the loss history and counters, and for a plateau run its state and the kept
weights and optimizer state of its last gain: everything a resume needs and nothing that
depends on the machine or the moment, so the same run writes the same bytes (DVC hashes them).
Wall times go to the `TrainingResult` and to a `TrainingMonitor`, e.g. live MLflow logging.
A run resumes only an unfinished checkpoint written for the same fingerprint (params, code
version and input files, `cds.run_config`); a finished one is trained again unless the
caller asks to reuse it, so a forced re-run (`dvc repro -f`) really retrains.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cds import threads
from cds.checkpoints import DIGEST, load_checkpoint, save_checkpoint, write_text_atomic
from cds.config import ClipParams, OptimParams, StoppingParams
from cds.preconditioning import PRIOR_MAP_KEY, AffineMap, recorded_prior_map
from cds.run_config import fingerprint

log = logging.getLogger(__name__)

#: An objective maps (iteration, generator) to a scalar loss and a dict of diagnostics: float
#: counters, and optionally "follow_ups", callables each giving a further loss to take one more
#: optimizer step on, in order, after the first (computed with the updated parameters).
Objective = Callable[[int, torch.Generator], tuple[Tensor, dict[str, Any]]]
#: An evaluation maps (EMA model, iteration) to a dict of metrics; keys ending in
#: RUN_SPECIFIC_SUFFIX (wall times) reach the monitor but are kept out of checkpoints and logs.
Evaluation = Callable[[nn.Module, int], dict[str, Any]]
RUN_SPECIFIC_SUFFIX = "_seconds"


@dataclass(frozen=True)
class Criterion:
    """One figure of a validation: its value, the least change that counts as a gain (e.g. its
    standard error), and whether higher is better (a lower-is-better figure is an error, ≥ 0)."""

    value: float
    tolerance: float
    higher_is_better: bool = True

    def gains_over(self, best: float | None) -> bool:
        """Whether this value beats `best` by more than the tolerance (any finite value beats
        no best; a non-finite one never gains)."""
        if not math.isfinite(self.value):
            return False
        if best is None:
            return True
        change = self.value - best if self.higher_is_better else best - self.value
        return change > self.tolerance

    def diverged_from(self, best: float | None, factor: float) -> bool:
        """Whether the run has diverged by this figure: it is non-finite, or (an error, with a
        positive best to compare with) it has grown past `factor` times its best."""
        if not math.isfinite(self.value):
            return True
        if self.higher_is_better or best is None or best <= 0:
            return False
        return self.value > factor * best


#: A validation maps the live model to its named criteria (the plateau rule's evidence).
Validation = Callable[[nn.Module], dict[str, Criterion]]


@dataclass
class Plateau:
    """The plateau rule's state: the best value of each criterion so far, the checks since the
    last gain, where the cool-down began (None before) and why, the last check with a gain (whose
    weights a cool-down or back-off restores), the LR back-offs taken and the skip count at the
    last check, and every check made."""

    best: dict[str, float] = field(default_factory=dict)
    since_gain: int = 0
    cooldown_from: int | None = None
    reason: str | None = None
    best_step: int | None = None
    backoffs: int = 0
    skipped_at_check: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)


class TrainingMonitor(Protocol):
    """Watches a run as it goes (e.g. `cds.pipeline.live_tracking`): called on the training
    process's thread, so implementations must be cheap or buffer."""

    def iteration(self, step: int, loss: float, lr: float, skipped: int) -> None:
        """After iteration `step` (1-based count of iterations done)."""

    def evaluation(self, record: dict[str, Any]) -> None:
        """A periodic evaluation of the EMA model (`record["iteration"]` is its step)."""

    def finished(self, result: TrainingResult) -> None:
        """The run reached its last iteration (or `stop_after`)."""


EMA_GAMMA_CAP = 0.9999


def ema_decay(iterations_since_start: int) -> float:
    """γ_e = min(1 − (1 + e)^(−0.9), 0.9999)."""
    return min(1.0 - (1.0 + iterations_since_start) ** -0.9, EMA_GAMMA_CAP)


@dataclass
class TrainingResult:
    """What a finished run hands on: the EMA model and the run's record."""

    ema_model: nn.Module
    losses: list[float]
    skipped: int
    dropped_paths: int
    iterations: int
    #: Wall time of this process's iterations (not of earlier, resumed-from runs).
    train_seconds: float = 0.0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    #: How the run ended (`Trainer.stop_record`): the rule, its iterations, and for "plateau"
    #: where the cool-down began, why, the state it started from and the LR back-offs.
    stop: dict[str, Any] = field(default_factory=dict)


def _same_map(recorded: AffineMap | None, prior_map: AffineMap | None) -> bool:
    """Whether a checkpoint's map is this run's (both None under the standard prior)."""
    if recorded is None or prior_map is None:
        return recorded is prior_map
    return recorded.equals(prior_map)


def _decoded(metadata: Any) -> Any:
    """Checkpoint metadata with its embedded JSON config parsed (so key order is irrelevant)."""
    if isinstance(metadata, dict) and isinstance(metadata.get("config"), str):
        return {**metadata, "config": json.loads(metadata["config"])}
    return metadata


def _cpu_copy(value: Any) -> Any:
    """A copy of a tree of dicts, lists and tensors with every tensor on the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(item) for item in value)
    return copy.deepcopy(value)


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class Trainer:
    """Runs an objective for its budget (`StoppingParams`) with checkpoints and resume."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optim: OptimParams,
        seed: int,
        kind: str,
        fingerprint: str,
        checkpoint_path: str | Path,
        clip: ClipParams | None = None,
        metadata: dict[str, Any] | None = None,
        prior_map: AffineMap | None = None,
        evaluation: Evaluation | None = None,
        eval_every: int | None = None,
        log_path: str | Path | None = None,
        progress: bool = True,
        monitor: TrainingMonitor | None = None,
        stopping: StoppingParams | None = None,
        validation: Validation | None = None,
        max_threads: int | None = None,
    ):
        #: The plateau rule's settings (None under the fixed rule), and its state.
        self.rule = stopping if stopping is not None and stopping.rule == "plateau" else None
        if self.rule is not None and validation is None:
            raise ValueError(f"{kind}: the plateau rule needs a validation")
        self.validation = validation
        self.max_threads = max_threads
        self.plateau = Plateau()
        #: Weights and optimizer state at `plateau.best_step` (what a cool-down starts from).
        self.best_state: dict[str, Any] | None = None
        self.model = model
        self.objective = objective
        self.optim = optim
        self.clip = clip
        self.kind = kind
        self.fingerprint = fingerprint
        self.checkpoint_path = Path(checkpoint_path)
        self.metadata = metadata or {}
        #: The Laplace prior's map of a model trained in whitened coordinates, else None.
        self.prior_map = prior_map
        self.evaluation = evaluation
        self.eval_every = eval_every
        self.log_path = Path(log_path) if log_path is not None else None
        self.progress = progress
        self.monitor = monitor
        #: The batches' random stream, on the model's device.
        self.generator = torch.Generator(device=_device_of(model)).manual_seed(seed)
        # foreach: one call per step for all tensors, not a dozen per tensor (the networks are
        # small, so a step is dominated by call overhead)
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, foreach=True
        )
        gamma = optim.lr_final_factor ** (optim.lr_decay_every / optim.iterations)
        #: The fixed rule's LR decay (the plateau rule sets the LR itself, `_plateau_lr`).
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=optim.lr_decay_every, gamma=gamma
        )
        self.ema_model = copy.deepcopy(model)
        self.ema_started = False
        self.step = 0
        self.losses: list[float] = []
        self.skipped = 0
        self.dropped_paths = 0
        self.train_seconds = 0.0
        self.evaluations: list[dict[str, Any]] = []

    # --------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as a weights_only-loadable payload."""
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "metadata": self.metadata,
            "step": self.step,
            "iterations": self.end,
            "model": self.model.state_dict(),
            "ema": self._ema_state(),
            "ema_started": self.ema_started,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "losses": list(self.losses),
            "skipped": self.skipped,
            "dropped_paths": self.dropped_paths,
            "evaluations": json.dumps(self.evaluations),
            **({"plateau": json.dumps(vars(self.plateau))} if self.rule is not None else {}),
            **({"best": self.best_state} if self.best_state is not None else {}),
            **({PRIOR_MAP_KEY: self.prior_map.state()} if self.prior_map is not None else {}),
        }

    def _ema_state(self) -> dict[str, Tensor]:
        if not self.ema_started:
            self.ema_model.load_state_dict(self.model.state_dict())
        return self.ema_model.state_dict()

    def load_state(self, payload: dict[str, Any]) -> None:
        """Restore a checkpoint into the live objects (the same modules evaluation uses)."""
        self.model.load_state_dict(payload["model"])
        self.ema_model.load_state_dict(payload["ema"])
        self.ema_started = bool(payload["ema_started"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.generator.set_state(payload["generator"])
        self.step = int(payload["step"])
        self.losses = list(payload["losses"])
        self.skipped = int(payload["skipped"])
        self.dropped_paths = int(payload["dropped_paths"])
        self.evaluations = json.loads(payload["evaluations"])
        if self.rule is not None:
            self.plateau = Plateau(**json.loads(payload["plateau"]))
        self.best_state = payload.get("best")

    def try_resume(self, reuse_finished: bool = False) -> bool:
        """Resume from the checkpoint file if it exists, matches this configuration and is
        unfinished (or finished, with `reuse_finished`: the run then only rewrites its log)."""
        if not self.checkpoint_path.exists():
            return False
        payload = load_checkpoint(self.checkpoint_path)
        if (
            DIGEST not in payload  # written by an older cds
            or payload.get("kind") != self.kind
            or payload.get("fingerprint") != self.fingerprint
            or _decoded(payload.get("metadata")) != _decoded(self.metadata)
        ):
            log.warning(
                "checkpoint %s was written for another model, other parameters or an older "
                "cds; starting from scratch",
                self.checkpoint_path,
            )
            return False
        if not _same_map(recorded_prior_map(payload), self.prior_map):
            log.warning(
                "checkpoint %s was trained in the coordinates of another Laplace prior map (the "
                "mode search ended elsewhere); starting from scratch",
                self.checkpoint_path,
            )
            return False
        if payload.get("step") == payload.get("iterations") and not reuse_finished:
            log.warning(
                "checkpoint %s holds a finished run; training again from scratch",
                self.checkpoint_path,
            )
            return False
        self.load_state(payload)
        log.warning("resuming %s training from iteration %d", self.kind, self.step)
        return True

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, self.state())

    # --------------------------------------------------------------------- budget
    @property
    def end(self) -> int:
        """The run's last iteration count: `optim.iterations` (fixed rule, or a plateau run
        still exploring: its cap), else the end of the cool-down."""
        start = self.plateau.cooldown_from
        if self.rule is None or start is None:
            return self.optim.iterations
        return start + self.rule.cooldown

    @property
    def ema_start(self) -> int:
        """The first iteration of the EMA window (never, while a plateau run explores)."""
        if self.rule is not None and self.plateau.cooldown_from is None:
            return self.optim.iterations
        return max(0, self.end - self.optim.ema_window)

    def _plateau_lr(self, iteration: int) -> float:
        """The plateau rule's LR: `optim.lr · backoff^backoffs` until the cool-down, then decayed
        every min(`lr_decay_every`, cooldown) iterations to `lr_final_factor` of that at its
        end."""
        if self.rule is None:
            return self.optim.lr
        lr = self.optim.lr * self.rule.backoff**self.plateau.backoffs
        start = self.plateau.cooldown_from
        if start is None or iteration < start:
            return lr
        every = min(self.optim.lr_decay_every, self.rule.cooldown)
        done = (iteration - start) // every * every
        return lr * self.optim.lr_final_factor ** (done / self.rule.cooldown)

    def _keep_best(self) -> None:
        """Remember the weights and optimizer state of this moment (a check with a gain, or the
        start), on the CPU whatever the device, so checkpoints are the same bytes either way."""
        self.plateau.best_step = self.step
        self.best_state = _cpu_copy(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        )

    def _restore_best(self) -> None:
        """Go back to the weights and optimizer state of the last check with a gain."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state["model"])
            # Adam keeps the tensors it is given and updates them in place: give it copies, so
            # the kept state stays as it was for a later restore
            self.optimizer.load_state_dict(copy.deepcopy(self.best_state["optimizer"]))

    def _start_cooldown(self, reason: str) -> None:
        self.plateau.cooldown_from = self.step
        self.plateau.reason = reason
        self._restore_best()

    def _check_plateau(self) -> None:
        """At a check (every `check_every` iterations, and at cap − cooldown): validate the
        live model and keep its state if a figure gains; if the run diverged, go back to the
        kept state with the LR multiplied by `backoff` (after `max_backoffs` of these, cool down
        instead); start the cool-down after `patience` checks without a gain, or at the cap.
        An error's growth counts as divergence only after `min_iterations` (early figures
        move for good reasons too); non-finite figures and skipped iterations always do."""
        rule, state = self.rule, self.plateau
        if rule is None or state.cooldown_from is not None:
            return
        at_cap = self.step >= self.optim.iterations - rule.cooldown
        if self.step % rule.check_every and not at_cap:
            return
        self.model.eval()
        criteria = self.validation(self.model)  # type: ignore[misc]
        self.model.train()
        skipped, state.skipped_at_check = self.skipped - state.skipped_at_check, self.skipped
        settled = self.step >= rule.min_iterations
        diverged = [
            name
            for name, criterion in criteria.items()
            if criterion.diverged_from(
                state.best.get(name) if settled else None, rule.divergence_factor
            )
        ] + (["skipped iterations"] if 2 * skipped > rule.check_every else [])
        gains = (
            []
            if diverged
            else [
                name
                for name, criterion in criteria.items()
                if criterion.gains_over(state.best.get(name))
            ]
        )
        for name in gains:
            state.best[name] = criteria[name].value
        state.since_gain = 0 if gains else state.since_gain + 1
        record = {
            "iteration": self.step,
            **{f"validation_{name}": c.value for name, c in criteria.items()},
            "gains": gains,
            "diverged": diverged,
        }
        state.checks.append(record)
        if self.monitor is not None:
            self.monitor.evaluation(
                {k: v for k, v in record.items() if k not in ("gains", "diverged")}
            )
        log.info("%s check at %d: %s", self.kind, self.step, record)
        if gains:
            self._keep_best()
        if at_cap:
            self._start_cooldown(f"cap: {self.optim.iterations} iterations")
        elif diverged:
            state.backoffs += 1
            state.since_gain = 0
            log.warning(
                "%s diverged at %d (%s): back to iteration %s, LR × %g",
                self.kind,
                self.step,
                ", ".join(diverged),
                state.best_step,
                rule.backoff,
            )
            if state.backoffs > rule.max_backoffs:
                self._start_cooldown(
                    f"diverged: {', '.join(diverged)} after {rule.max_backoffs} LR back-offs"
                )
            else:
                self._restore_best()
        elif state.since_gain >= rule.patience and settled:
            self._start_cooldown(
                f"plateau: no gain in {rule.patience} checks of {rule.check_every} iterations "
                f"on {', '.join(criteria)}"
            )

    def stop_record(self) -> dict[str, Any]:
        """When and why the run ended (so far): for the plateau rule, where the cool-down
        began, why, the iteration whose state it started from, and the LR back-offs."""
        if self.rule is None:
            return {"rule": "fixed", "iterations": self.step}
        cooled = self.plateau.cooldown_from is not None
        return {
            "rule": "plateau",
            "iterations": self.step,
            "cooldown_from": self.plateau.cooldown_from,
            "reason": self.plateau.reason,
            "restored_from": self.plateau.best_step if cooled else None,
            "backoffs": self.plateau.backoffs,
            "checks": len(self.plateau.checks),
        }

    # --------------------------------------------------------------------- loop
    def _update_ema(self, iteration: int) -> None:
        if iteration < self.ema_start:
            return
        since = iteration - self.ema_start
        if not self.ema_started:
            self.ema_model.load_state_dict(self.model.state_dict())
            self.ema_started = True
            return
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                self.ema_model.get_buffer(name).copy_(buf)
            if since % self.optim.ema_every == 0:
                gamma = ema_decay(since)
                for shadow, param in zip(
                    self.ema_model.parameters(), self.model.parameters(), strict=True
                ):
                    shadow.mul_(gamma).add_(param.detach(), alpha=1.0 - gamma)

    def _set_clips(self, iteration: int) -> None:
        if self.clip is not None:
            value = self.clip.value_at(iteration)
            self.model.set_clips(value, value)  # type: ignore[operator]

    def _optimizer_step(self, loss: Tensor) -> bool:
        """Backward, global-norm gradient clip and one Adam step; False (and no step) when the
        loss or the gradient's global norm is non-finite (a non-finite entry anywhere makes the
        norm non-finite: one check instead of one per tensor)."""
        if not math.isfinite(float(loss.detach())):
            return False
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
        if not math.isfinite(float(norm)):
            return False
        self.optimizer.step()
        return True

    def _iteration(self, iteration: int) -> tuple[float, bool]:
        """One iteration: one optimizer step, then one more per follow-up loss the objective
        hands back (each computed after the step before it, e.g. SCDS's alternating update).
        The LR scheduler and the EMA advance once per iteration, and only when every step was
        applied."""
        self._set_clips(iteration)
        if self.rule is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self._plateau_lr(iteration)
        loss, info = self.objective(iteration, self.generator)
        self.dropped_paths += int(info.get("dropped_paths", 0))
        value = float(loss.detach())
        applied = self._optimizer_step(loss)
        for follow_up in info.get("follow_ups", ()):
            further = follow_up()
            value += float(further.detach())
            applied = self._optimizer_step(further) and applied
        if applied:
            if self.rule is None:
                self.scheduler.step()
            self._update_ema(iteration)
        return value, applied

    def _evaluate(self, iteration: int) -> None:
        if self.evaluation is None:
            return
        self._ema_state()  # make sure the EMA model holds the current shadow
        self.ema_model.eval()
        record = {"iteration": iteration, **self.evaluation(self.ema_model, iteration)}
        if self.monitor is not None:
            self.monitor.evaluation(record)
        self.evaluations.append(
            {k: v for k, v in record.items() if not k.endswith(RUN_SPECIFIC_SUFFIX)}
        )
        self._write_log()

    def _write_log(self) -> None:
        """The evaluations so far as JSON lines, rewritten whole (they live in the checkpoint
        too), so a resumed run never repeats or loses a line."""
        if self.log_path is not None:
            write_text_atomic(
                self.log_path, "".join(json.dumps(r) + "\n" for r in self.evaluations)
            )

    def run(self, stop_after: int | None = None) -> TrainingResult:
        """Train to the end (or stop after `stop_after` iterations, for tests of resume)."""
        bar = tqdm(
            total=self.end,
            initial=self.step,
            desc=f"train {self.kind}",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        running = None
        if self.rule is not None and self.best_state is None:
            self._keep_best()  # a divergence before any gain goes back to the start
        stop = self.optim.iterations if stop_after is None else self.step + stop_after
        while self.step < min(stop, self.end):
            threads.adapt(self.max_threads)
            iteration = self.step
            started = time.perf_counter()
            value, applied = self._iteration(iteration)
            self.train_seconds += time.perf_counter() - started
            self.losses.append(value)
            if not applied:
                self.skipped += 1
            elif math.isfinite(value):
                running = value if running is None else 0.95 * running + 0.05 * value
            self.step += 1
            self._check_plateau()
            bar.total = self.end
            bar.set_postfix(  # drawn by the next update, at tqdm's own rate
                loss=f"{running:.4g}" if running is not None else "nan",
                skipped=self.skipped,
                refresh=False,
            )
            bar.update(1)
            if self.monitor is not None:
                lr = self.optimizer.param_groups[0]["lr"]
                self.monitor.iteration(self.step, value, lr, self.skipped)
            done = self.step == self.end
            if self.eval_every and (self.step % self.eval_every == 0 or done):
                self._evaluate(self.step)
            if self.step % self.optim.checkpoint_every == 0 or done or self.step == stop:
                self.save()
        bar.close()
        self._write_log()
        self._ema_state()
        result = TrainingResult(
            ema_model=self.ema_model,
            losses=self.losses,
            skipped=self.skipped,
            dropped_paths=self.dropped_paths,
            iterations=self.step,
            train_seconds=self.train_seconds,
            evaluations=self.evaluations,
            stop=self.stop_record(),
        )
        if self.monitor is not None:
            self.monitor.finished(result)
        return result


class RunOptions(TypedDict, total=False):
    """How a training run is watched and resumed; none of it changes what it computes."""

    log_path: str | Path | None  # the evaluations as JSON lines
    progress: bool  # a progress bar
    stop_after: int | None  # stop after this many iterations (tests of resume)
    monitor: TrainingMonitor | None  # e.g. live MLflow logging
    reuse_finished: bool  # hand back a finished checkpoint instead of training again


def train(
    model: nn.Module,
    objective: Objective,
    optim: OptimParams,
    *,
    kind: str,
    config: dict[str, Any],
    dim: int,
    seed: int,
    checkpoint_path: str | Path,
    clip: ClipParams | None = None,
    evaluation: Evaluation | None = None,
    eval_every: int | None = None,
    stopping: StoppingParams | None = None,
    validation: Validation | None = None,
    max_threads: int | None = None,
    prior_map: AffineMap | None = None,
    **options: Unpack[RunOptions],
) -> TrainingResult:
    """The one training entry point of the teacher, CDDS and SCDS: train `model` on
    `objective` (or resume it, `Trainer.try_resume`), its batches drawn from a generator seeded
    with `seed`, for the budget `stopping` sets (`validation` judges the plateau rule), on the
    CPU threads free at each moment, at most `max_threads` (`cds.threads.adapt`). The
    checkpoint records `config` (`cds.run_config`), its fingerprint and `dim`, from which the
    model is rebuilt, and the Laplace prior's `prior_map` when the model works in whitened
    coordinates (`cds.run_config.sampler_space`)."""
    trainer = Trainer(
        model,
        objective,
        optim,
        seed=seed,
        kind=kind,
        fingerprint=fingerprint(config),
        checkpoint_path=checkpoint_path,
        clip=clip,
        metadata={"config": json.dumps(config), "dim": dim},
        prior_map=prior_map,
        evaluation=evaluation,
        eval_every=eval_every,
        log_path=options.get("log_path"),
        progress=options.get("progress", True),
        monitor=options.get("monitor"),
        stopping=stopping,
        validation=validation,
        max_threads=max_threads,
    )
    trainer.try_resume(options.get("reuse_finished", False))
    return trainer.run(stop_after=options.get("stop_after"))
