"""The cgroup meter: a thread that samples a container's cgroup many times a second.

It reads through a :class:`~nbcontainer.cgroups.Sampler` (file descriptors kept open, one
``pread`` per file). Sampling is much faster than drawing: a spike between two frames is in the
samples, and a spike between two samples is still in the kernel's own peak and OOM-kill
counters, which are read :data:`FULL_RATE` (10) times a second whatever the rate.

What a sample costs (bench/RESULTS.md, measured in the meter thread on a 2-CPU VM): the wakeup
itself, 45-65 us of thread CPU whatever the mechanism (``poll`` with a timeout, ``sleep``, a
periodic timerfd), plus the Python run after it with cold caches, which costs 10-20 times what
the same code costs in a tight loop (a full :meth:`~nbcontainer.cgroups.Sampler.read` and
append: about 120 us, against 6 us hot). So most samples take a fast path that reads one file
(the memory in use) with one ``pread`` and appends three numbers; every
``rate / 10``-th sample is a full one (limits, the kernel's peak, OOM kills, CPU time). CPU use
is a 0.25 s average anyway, so the fast samples repeat the last full sample's value.

While the memory holds still the fast samples pause: once it has stayed within
:data:`CALM_DELTA` for :data:`CALM_AFTER` seconds, only the full samples are taken (10 a
second), and the first full sample that sees it move brings the fast ones back. A
container that allocates nothing (a CPU-bound cell, a server waiting) so costs a tenth of
100 Hz's wake-ups, and a curve that moves is still drawn at the asked rate, at most one
full-sample interval (100 ms) after it starts to move; the peak in between is the kernel's. The
kernel's own notifications were measured against and not taken: cgroup v1's usage thresholds
(``cgroup.event_control``) wait for an RCU grace period at every (re)registration and are
deprecated; v2 has no notification of usage at all (``memory.events`` counts limit hits, PSI
measures stalls).

The wait between samples is a ``poll(2)`` on a pipe that :meth:`Meter.stop` writes to, so
stopping is immediate (memory_profiler's trick: the wait doubles as the stop signal).
"""

from __future__ import annotations

import os
import select
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nbcontainer.errors import ContainerError


@dataclass
class Series:
    """The samples of one container (or one run of a comparison), in plot-ready units."""

    label: str = ""
    times: array = field(default_factory=lambda: array("d"))   # s since the meter started
    memory: array = field(default_factory=lambda: array("d"))  # memory.current, MiB
    cpu: array = field(default_factory=lambda: array("d"))     # CPU use, % of one core
    limit: int | None = None                              # bytes
    peak: int | None = None                               # bytes, kernel counter (or max seen)
    oom_times: list[float] = field(default_factory=list)  # when oom_kills went up
    oom_kills: int = 0
    base_oom_kills: int | None = None                     # counter value when metering began
    samples: int = 0

    def copy(self) -> Series:
        """A consistent snapshot for drawing while the thread goes on appending."""
        n = min(len(self.times), len(self.memory), len(self.cpu))
        return Series(self.label, self.times[:n], self.memory[:n], self.cpu[:n], self.limit,
                      self.peak, list(self.oom_times), self.oom_kills, self.base_oom_kills,
                      self.samples)


MIB = 1 << 20
#: CPU use is averaged over this window: per-sample values at 50 Hz only show the quota's
#: on/off periods (a 100 ms CFS period), not the rate a user thinks of.
CPU_WINDOW = 0.25
#: Full samples per second (at most): the CPU curve's 0.25 s average needs no more, and the
#: kernel's peak and OOM-kill counters miss nothing between two reads. Each costs about twice a
#: fast sample (bench/RESULTS.md): 20 a second were 0.4 % of a core by themselves.
FULL_RATE = 10.0
#: Memory (MiB) that moved less than this since the last move counts as holding still: a
#: quarter of a MiB is under a pixel of the plot's scale up to a few hundred MiB.
CALM_DELTA = 0.25
#: After this many seconds of still memory the fast samples pause (see the module docstring).
CALM_AFTER = 0.25
#: What the meter reads from the cgroup (no pids files: nothing here draws them).
METER_FIELDS = ("memory_current", "memory_peak", "memory_limit", "oom_kills", "cpu_usage_ns")


class Meter:
    """Samples one cgroup on a background thread until :meth:`stop`.

    Parameters
    ----------
    cgroup
        An :class:`nbcontainer.cgroups.Cgroup` (anything with ``open_sampler()``).
    rate
        Samples per second while the memory moves (the thread sleeps ``1/rate`` between
        reads); at most :data:`FULL_RATE` of them are full reads, the rest read the memory in use
        only. While it holds still, only the full reads (see the module docstring).
    label
        The series label (a comparison run's value).
    base_oom_kills
        The OOM-kill counter's value before the code of interest ran: 0 for a new container
        (so a kill before the first sample still counts); None takes the first sample's value
        (an exec into a long-lived container).
    """

    def __init__(self, cgroup: Any, rate: float = 50.0, label: str = "",
                 base_oom_kills: int | None = 0) -> None:
        self.rate = max(1.0, float(rate))
        self._full_every = max(1, round(self.rate / FULL_RATE))
        self.series = Series(label=label, base_oom_kills=base_oom_kills)
        self._sampler = cgroup.open_sampler(METER_FIELDS)
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._cpu_hist: deque[tuple[float, int]] = deque()
        self._cpu = 0.0  # CPU use at the last full sample, % of one core
        self._thread = threading.Thread(target=self._run, name="nbcontainer-meter", daemon=True)

    def start(self) -> Meter:
        """Take a first sample now (so even a short cell has one) and start the thread."""
        self._t0 = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self.rate
        full_every = self._full_every
        poll = select.poll()
        poll.register(self._wake_r, select.POLLIN)
        # The fast path, inlined with its methods bound once: each bytecode after a wakeup runs
        # with cold caches, so fewer of them is most of what makes a sample cheaper.
        wait_for_stop, monotonic = poll.poll, time.monotonic
        read_memory = self._sampler.memory_current
        s = self.series
        times, memory, cpu = s.times.append, s.memory.append, s.cpu.append
        t0 = self._t0
        due = monotonic()
        n = 0
        # Holding still: where the memory last moved to (MiB) and when; calm pauses the fast
        # samples until a full one sees it move.
        anchor = s.memory[-1] if s.memory else 0.0
        moved_at = due
        calm = False
        while True:
            # Slots of the schedule to the next sample: the next one, or while calm the next
            # full one. A schedule, not a sleep: the rate does not drift with the work.
            step = full_every - n % full_every if calm else 1
            due += interval * step
            n += step
            wait = due - monotonic()
            if wait < 0:
                due = monotonic()
                wait = 0
            if wait_for_stop(wait * 1000) or self._stopped:
                break
            if n % full_every == 0:
                if not self.sample():
                    break
                mib = s.memory[-1]
                now = monotonic()
                if abs(mib - anchor) >= CALM_DELTA:
                    anchor, moved_at, calm = mib, now, False
                elif now - moved_at >= CALM_AFTER:
                    calm = True
                continue
            # Memory only (one pread) and the CPU value of the last full sample. No lock:
            # the arrays only grow and Series.copy cuts them to a common length.
            try:
                current = read_memory() or 0
            except (ContainerError, OSError, ValueError):
                break
            now = monotonic()
            mib = current / MIB
            times(now - t0)
            memory(mib)
            cpu(self._cpu)
            if s.peak is None or current > s.peak:  # a kernel without a peak counter
                s.peak = current
            s.samples += 1
            if abs(mib - anchor) >= CALM_DELTA:
                anchor, moved_at = mib, now
            elif now - moved_at >= CALM_AFTER:
                calm = True

    def sample(self) -> bool:
        """Read the cgroup fully once (usage, limit, peak, OOM kills, CPU) and append; False
        when the cgroup is gone."""
        try:
            stats = self._sampler.read()
        except (ContainerError, OSError, ValueError):
            return False
        now = time.monotonic()
        t = now - self._t0
        cpu = 0.0
        if stats.cpu_usage_ns is not None:
            hist = self._cpu_hist
            hist.append((now, stats.cpu_usage_ns))
            while len(hist) > 2 and now - hist[1][0] >= CPU_WINDOW:
                hist.popleft()
            then, used = hist[0]
            if now > then:
                cpu = max(0.0, 100.0 * (stats.cpu_usage_ns - used) / 1e9 / (now - then))
        self._cpu = cpu
        s = self.series
        with self._lock:
            current = stats.memory_current or 0
            s.times.append(t)
            s.memory.append(current / MIB)
            s.cpu.append(cpu)
            s.limit = stats.memory_limit
            peak = stats.memory_peak if stats.memory_peak is not None else current
            s.peak = max(s.peak or 0, peak)
            if s.base_oom_kills is None:
                s.base_oom_kills = stats.oom_kills
            kills = stats.oom_kills - s.base_oom_kills
            if kills > s.oom_kills:
                s.oom_times.append(t)
                s.oom_kills = kills
            s.samples += 1
        return True

    def snapshot(self) -> Series:
        """A copy of the samples so far, safe to draw from another thread."""
        with self._lock:
            return self.series.copy()

    def stop(self) -> Series:
        """Stop the thread, take a last sample, close the kept fds; return the samples."""
        if not self._stopped:
            self._stopped = True
            os.write(self._wake_w, b"x")
            if self._thread.is_alive():
                self._thread.join()
            self.sample()
            self._sampler.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.snapshot()

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
