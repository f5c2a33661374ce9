"""CPU threads (`cds.threads`) and the chunked sampling workers built on them."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cds import threads
from cds.config import load_params
from cds.integrators import sample_consistency
from cds.networks import ConsistencyStudent
from cds.targets import get_target
from cds.teacher import train_teacher


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_usable_cores_is_at_least_one_and_at_most_the_machine():
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


def test_the_environment_fixes_the_count_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.fixed_threads() == 3 and threads.sampling_workers() == 3
    monkeypatch.delenv(threads.THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.fixed_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's list per nesting level
    assert threads.fixed_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")  # not ours to refuse: ignored
    assert threads.fixed_threads() is None
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(threads.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=f"CDS_THREADS = '{bad}'"):
            threads.adapt()


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat")
def test_busy_cores_sees_another_process_spinning():
    """A process spinning through the whole window keeps at least half a core busy (it runs
    whenever scheduled; other jobs on the machine can only add to the count)."""
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, args=(5.0,))
    spinner.start()
    try:
        time.sleep(1.0)  # past the interpreter's start
        assert threads.busy_cores(0.5) >= 0.5
    finally:
        spinner.terminate()
        spinner.join()


def test_busy_elsewhere_is_the_usable_cores_less_this_process(monkeypatch):
    """Two usable cores, fully busy for one second, this process using one core's worth of CPU
    time: one core busy elsewhere; half busy, none; without /proc, none. Only the cores this
    process may run on are read."""
    before = threads._Snapshot(cpus={0: (0.0, 0.0), 1: (0.0, 0.0)}, own=10.0, at=100.0)
    busy = threads._Snapshot(cpus={0: (100.0, 100.0), 1: (100.0, 100.0)}, own=11.0, at=101.0)
    half = threads._Snapshot(cpus={0: (50.0, 100.0), 1: (50.0, 100.0)}, own=11.0, at=101.0)
    blind = threads._Snapshot(cpus=None, own=11.0, at=101.0)
    assert busy.busy_elsewhere_since(before) == pytest.approx(1.0)
    assert half.busy_elsewhere_since(before) == pytest.approx(0.0)
    assert blind.busy_elsewhere_since(before) == 0.0
    if Path("/proc/stat").is_file():
        monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0})
        assert set(threads._cpu_times() or {}) == {0}


def test_adapt_sets_torch_threads_within_the_limit_and_the_environment(monkeypatch):
    previous = torch.get_num_threads()
    try:
        assert threads.adapt(limit=1) == 1 == torch.get_num_threads()
        count = threads.adapt()
        assert 1 <= count <= threads.usable_cores() and torch.get_num_threads() == count
        monkeypatch.setenv(threads.THREADS_ENV, "3")
        assert threads.adapt(limit=1) == 3 == torch.get_num_threads()  # a fixed count wins
    finally:
        torch.set_num_threads(previous)


def test_teacher_training_gives_the_same_bits_on_one_thread_or_two(tmp_path, monkeypatch):
    """What lets `adapt` change the thread count under load without changing a DVC output: six
    teacher iterations on gmm9 (a 128-step SDE through the control, the log-variance loss, Adam)
    end with identical weights and losses on one thread and on two."""
    params = load_params(
        None,
        ["target.name=gmm9", "teacher.optim.iterations=6", "teacher.eval_every=1000"],
        preset="gmm9",
    )
    runs = []
    for count in ("1", "2"):
        monkeypatch.setenv(threads.THREADS_ENV, count)
        result = train_teacher(
            params, get_target("gmm9"), tmp_path / f"teacher{count}.pt", progress=False
        )
        runs.append(
            (torch.cat([p.flatten() for p in result.ema_model.parameters()]), result.losses)
        )
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def _student() -> ConsistencyStudent:
    torch.manual_seed(0)
    return ConsistencyStudent(2, 1.0, 16, 2, "gelu")


def _draw(student: ConsistencyStudent) -> torch.Tensor:
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    return sample_consistency(student, lambda t: 1.0 - 0.5 * t, [1.0, 0.5], x0, generator, 7)


def test_workers_give_the_same_samples_as_one_thread(monkeypatch):
    """Chunks go to whichever worker is free, into their own rows: the samples do not depend
    on the number of workers, and no autograd graph is built in the workers."""
    student = _student()  # trainable: its parameters require grad
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    serial = _draw(student)
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    pooled = _draw(student)
    assert torch.equal(serial, pooled) and not pooled.requires_grad
    with torch.no_grad():  # and they are the network's own values, τ terms computed once
        x = torch.randn(9, 2)
        assert torch.equal(student.at(0.5)(x), student(x, 0.5))


FORK_CHECK = """
import multiprocessing, os, sys
sys.path.insert(0, {tests!r})
from test_threads import _draw, _student
import torch
from cds.config import load_params
from cds.integrators import sample_consistency
class Doubling:  # starts the parent's pool through the real path, without a GELU
    def at(self, tau):
        return lambda x: 2 * x
x0 = torch.ones(20, 2)
assert torch.equal(sample_consistency(Doubling(), None, [1.0], x0, chunk=3), 2 * x0)
def child(queue):
    queue.put(_draw(_student()).tolist())
context = multiprocessing.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(queue,))
process.start()
process.join(timeout=60)
assert process.exitcode == 0, "sampling in a forked child hung or failed"
assert queue.get(timeout=5) == _draw(_student()).tolist()
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_a_forked_child_samples_with_its_own_workers():
    """The parent's pool has no threads in a forked child: the child must build its own rather
    than wait for ever. Run in a fresh interpreter whose parent only starts its pool: in this
    torch a GELU run before a fork hangs the next GELU in the child, pool or not."""
    code = FORK_CHECK.format(tests=str(Path(__file__).parent))
    env = {**os.environ, threads.THREADS_ENV: "2"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
