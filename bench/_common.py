"""Helpers every benchmark shares: the run order, the statistics, the machine's facts.

Order: each round runs every side once, in an order shuffled per round (seeded, so a run can be
repeated), each timed run after an idle gap. A side's background work (a teardown finishing, a
spare helper being refilled, dirty pages written back) then lands in the gap, not in whichever
side happens to come next; a fixed order would charge it to the same neighbour every time.

Statistics: median and min of each side (min is the floor the code can reach on this machine;
the median what a user sees on a busy one); ratios are of medians.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence


def cli_command() -> list[str]:
    """The ``nbcontainer`` command as a user types it: the console script installed beside
    this interpreter, when its first line names this interpreter; otherwise
    ``python -m nbcontainer`` (which also imports runpy, 2-4 ms more)."""
    script = os.path.join(os.path.dirname(sys.executable), "nbcontainer")
    try:
        with open(script) as f:
            first = f.readline().strip()
    except OSError:
        first = ""
    if first == f"#!{sys.executable}":
        return [script]
    return [sys.executable, "-m", "nbcontainer"]


def interleave(sides: dict[str, Callable[[], object]], rounds: int, *, gap: float,
               reset: Callable[[], None] | None = None, seed: int = 0,
               on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per side over ``rounds`` rounds: shuffled order, ``gap`` idle seconds before each.

    ``reset`` runs before the gap (untimed), e.g. to remove the last run's output.
    """
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            if reset is not None:
                reset()
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t0)
        if on_round is not None:
            on_round(r)
    return times


def median_min(values: Sequence[float]) -> tuple[float, float]:
    """(median, min) of ``values``."""
    return statistics.median(values), min(values)


def order_note(rounds: int, gap: float) -> str:
    """The sentence every table prints about how its sides were run."""
    return (f"{rounds} rounds, sides in a shuffled order each round (seeded), "
            f"{gap * 1000:.0f} ms idle before each timed run; median and min")


def interpreter() -> str:
    """Which Python runs this (and every Python side of the comparison)."""
    return f"{sys.executable} (Python {platform.python_version()})"


def cgroup_layout(root: str = "/sys/fs/cgroup") -> str:
    """One line describing the cgroup layout as mounted here: v1, v2 or hybrid, and where."""
    v1: list[str] = []
    v2: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, mnt, opts = fields[sep + 1], fields[4], fields[sep + 3]
            if not mnt.startswith(root):
                continue
            if fstype == "cgroup2":
                v2.append(mnt)
            elif fstype == "cgroup":
                known = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime"}
                v1.extend(o for o in opts.split(",") if o not in known)
    parts = []
    if v1:
        parts.append("v1 hierarchies (" + ",".join(sorted(v1)) + ")")
    for mnt in v2:
        try:
            with open(os.path.join(mnt, "cgroup.controllers")) as f:
                ctrl = f.read().split()
        except OSError:
            ctrl = []
        parts.append(f"cgroup2 at {mnt} (controllers: {','.join(ctrl) or 'none'})")
    kind = "hybrid" if v1 and v2 else "v2" if v2 else "v1" if v1 else "none"
    return f"{kind} ({'; '.join(parts) or 'no cgroup mounts'})"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")), "unknown CPU")


def load() -> str:
    """The 1-minute load average, as a note on how busy the machine was."""
    return f"{os.getloadavg()[0]:.2f}"
