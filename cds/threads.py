"""CPU threads for torch: the cores that are free for this process, not all the machine's cores.

torch's intra-op pool defaults to one thread per core. On a machine shared with other jobs that
is the wrong count: each parallel region waits for its slowest thread, and a thread that shares
its core with another process runs at a fraction of the speed, so the whole op slows to that
fraction, and spinning threads take time from the other jobs as well. cds therefore

- counts the cores it may use (`usable_cores`: CPU affinity, capped by a cgroup CPU quota);
- while it trains or integrates, sets torch's threads to the cores other processes leave free,
  rechecked every `ADAPT_EVERY_S` seconds from /proc/stat (`adapt`), at no cost in between,
  capped where more threads were measured to be slower (CDDS steps, `cds.cdds`): a busy
  process beside it then costs a loop its second thread, not the wait at every barrier for a
  thread that shares its core (benchmarks/shared_cores.py);
- samples with one single-threaded worker per usable core, each taking the next chunk of rows
  from a shared queue (`cds.integrators.sample_consistency`): a worker slowed by another process
  simply takes fewer chunks, with no barrier to wait at.

`CDS_THREADS` (or `OMP_NUM_THREADS`) in the environment fixes the count instead. Thread counts
change only how fast results come, not their values: the networks' ops give the same bits on
one thread or two (tests/test_threads.py).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

#: The environment variable that fixes the number of threads (and sampling workers).
THREADS_ENV = "CDS_THREADS"
#: How often `adapt` looks at the machine again.
ADAPT_EVERY_S = 2.0
#: How long `busy_cores` watches the machine.
BUSY_WINDOW_S = 0.05


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (`cpu.max`, a container's limit) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    quota = Path("/sys/fs/cgroup/cpu.max")
    try:
        limit, period = quota.read_text().split()
        if limit != "max":
            cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None without /proc."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class _Snapshot:
    """The machine's CPU counters and this process's CPU time at one moment."""

    machine: tuple[float, float] | None
    own: float
    at: float

    @staticmethod
    def now() -> _Snapshot:
        return _Snapshot(_cpu_times(), time.process_time(), time.monotonic())

    def busy_elsewhere_since(self, before: _Snapshot) -> float:
        """Cores other processes kept busy between `before` and this snapshot: the machine's
        busy share of all cores minus this process's own CPU time; 0.0 without /proc."""
        if self.machine is None or before.machine is None or self.at <= before.at:
            return 0.0
        total = self.machine[1] - before.machine[1]
        if total <= 0:
            return 0.0
        machine = (os.cpu_count() or 1) * (self.machine[0] - before.machine[0]) / total
        return max(0.0, machine - (self.own - before.own) / (self.at - before.at))


def busy_cores(window_s: float = BUSY_WINDOW_S) -> float:
    """How many cores other processes keep busy over the next `window_s` seconds."""
    before = _Snapshot.now()
    time.sleep(window_s)
    return _Snapshot.now().busy_elsewhere_since(before)


def fixed_threads() -> int | None:
    """The thread count the environment fixes (`CDS_THREADS`, else `OMP_NUM_THREADS`), if any."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                count = int(value)
            except ValueError:
                raise ValueError(f"{name} = {value!r}: expected a positive integer") from None
            if count < 1:
                raise ValueError(f"{name} = {value!r}: expected a positive integer")
            return count
    return None


def _free(busy: float) -> int:
    return max(1, min(usable_cores(), round(usable_cores() - busy)))


def free_cores() -> int:
    """The cores free for this process now (at least 1), or the count the environment fixes."""
    fixed = fixed_threads()
    return fixed if fixed is not None else _free(busy_cores())


class _FreeCoreWatch:
    """The free cores over the last `ADAPT_EVERY_S` seconds, looked at again once that old."""

    def __init__(self) -> None:
        self.last: _Snapshot | None = None
        self.free = 1

    def current(self) -> int:
        if self.last is None or time.monotonic() - self.last.at >= ADAPT_EVERY_S:
            now = _Snapshot.now()
            busy = now.busy_elsewhere_since(self.last) if self.last is not None else busy_cores()
            self.last, self.free = now, _free(busy)
        return self.free


_WATCH = _FreeCoreWatch()


def adapt(limit: int | None = None) -> int:
    """Set torch's intra-op threads to the cores free over the last `ADAPT_EVERY_S` seconds, at
    most `limit` (or to the count the environment fixes), and return it; between looks, a clock
    read. Long loops (training, fragment banks, the Sinkhorn metric) call it once per step."""
    fixed = fixed_threads()
    if fixed is not None:
        count = fixed
    else:
        free = _WATCH.current()
        count = free if limit is None else min(free, limit)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def sampling_workers() -> int:
    """Workers for chunked sampling: one per usable core (module docstring), or the count the
    environment fixes."""
    fixed = fixed_threads()
    return fixed if fixed is not None else usable_cores()
