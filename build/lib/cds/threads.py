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

`CDS_THREADS` (or `OMP_NUM_THREADS`) in the environment fixes the count instead (sweep cells
get `OMP_NUM_THREADS`, so they neither adapt nor take the CDDS cap). Thread counts should
change only how fast results come: teacher training and sampling give the same bits on one
thread or two (tests/test_threads.py); a large reduction may not, so pin the count with
`CDS_THREADS` where bit-identical outputs across machines and loads matter.
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
    allowed = _allowed_cpus()
    cores = (len(allowed) if allowed is not None else os.cpu_count()) or 1
    quota = Path("/sys/fs/cgroup/cpu.max")
    try:
        limit, period = quota.read_text().split()
        if limit != "max":
            cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _allowed_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def _cpu_times() -> dict[int, tuple[float, float]] | None:
    """(busy, total) jiffies of each CPU this process may run on, from /proc/stat (the first
    eight fields: guest time is already inside user time); None without /proc."""
    allowed = _allowed_cpus()
    times = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            cpu = int(name[3:])
            if allowed is None or cpu in allowed:
                fields = [float(v) for v in values[:8]]
                idle = fields[3] + fields[4]  # idle + iowait
                times[cpu] = (sum(fields) - idle, sum(fields))
    except (OSError, ValueError, IndexError):
        return None
    return times or None


@dataclass(frozen=True)
class _Snapshot:
    """The CPU counters of the cores this process may use, and its own CPU time, at one
    moment."""

    cpus: dict[int, tuple[float, float]] | None
    own: float
    at: float

    @staticmethod
    def now() -> _Snapshot:
        return _Snapshot(_cpu_times(), time.process_time(), time.monotonic())

    def busy_elsewhere_since(self, before: _Snapshot) -> float:
        """Cores other processes kept busy between `before` and this snapshot, on the cores
        this process may use: the sum of their busy shares minus this process's own CPU time;
        0.0 without /proc."""
        if self.cpus is None or before.cpus is None or self.at <= before.at:
            return 0.0
        busy = 0.0
        for cpu, (busy_now, total_now) in self.cpus.items():
            busy_then, total_then = before.cpus.get(cpu, (busy_now, total_now))
            if total_now > total_then:
                busy += (busy_now - busy_then) / (total_now - total_then)
        return max(0.0, busy - (self.own - before.own) / (self.at - before.at))


def busy_cores(window_s: float = BUSY_WINDOW_S) -> float:
    """How many cores other processes keep busy over the next `window_s` seconds."""
    before = _Snapshot.now()
    time.sleep(window_s)
    return _Snapshot.now().busy_elsewhere_since(before)


def fixed_threads() -> int | None:
    """The thread count the environment fixes, if any: `CDS_THREADS` (a positive integer), else
    the first entry of `OMP_NUM_THREADS` (OpenMP allows a list per nesting level)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} = {value!r}: expected a positive integer")
        return int(value)
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) >= 1 else None


def _free(busy: float) -> int:
    cores = usable_cores()
    return max(1, min(cores, round(cores - busy)))


class _FreeCoreWatch:
    """The free cores over the last `ADAPT_EVERY_S` seconds, looked at again once that old."""

    def __init__(self) -> None:
        self.last: _Snapshot | None = None
        self.free = 1
        self.pid = os.getpid()

    def current(self) -> int:
        if self.pid != os.getpid():  # a forked child: its own CPU time starts afresh
            self.last, self.pid = None, os.getpid()
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
