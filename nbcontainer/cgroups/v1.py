"""cgroup v1: one directory per controller hierarchy, see cgroups(7) and the kernel's
Documentation/admin-guide/cgroup-v1/.

Differences from v2 that shape this module:

- a container is a directory in *each* hierarchy (memory, cpu, cpuacct, cpuset, pids, freezer;
  co-mounted controllers such as ``cpu,cpuacct`` share one), and a pid is written to each;
- a new cpuset cgroup starts with empty ``cpuset.cpus``/``cpuset.mems``, and attaching a task
  to it fails with ENOSPC, so both are copied from the parent into every cpuset directory we
  make (runc does the same), including the shared ``nbcontainer`` one;
- ``memory.memsw.limit_in_bytes`` (memory+swap) must never be below ``memory.limit_in_bytes``,
  so the memory limit is written first on a fresh cgroup;
- the freezer is a state machine (``THAWED``/``FREEZING``/``FROZEN``) that can stall in
  FREEZING, so freezing re-writes FROZEN until the kernel reports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from nbcontainer.cgroups.base import (
    DEFAULT_TIMEOUT,
    Cgroup,
    CgroupStats,
    distinct,
    make_child,
    parse_int,
    parse_keyed,
    read_file,
    read_optional,
    write_file,
)
from nbcontainer.cgroups.devices import DEFAULT_RULES, DeviceRule
from nbcontainer.errors import CgroupError
from nbcontainer.spec import Limits

CFS_PERIOD_US = 100000
#: v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7ffffffffffff000 with 4 KiB pages).
UNLIMITED_THRESHOLD = 1 << 62


def plan_limits(limits: Limits, swap_accounting: bool) -> list[tuple[str, str, str]]:
    """The v1 control-file writes for some limits, in the order they must happen.

    Parameters
    ----------
    limits
        The container's limits.
    swap_accounting
        Whether ``memory.memsw.limit_in_bytes`` exists; without it the memory+swap limit is
        skipped (the layout reports that as a problem).

    Returns
    -------
    list of (controller, file name, value)
        Docker's semantics: ``--memory`` without ``--memory-swap`` allows as much swap as
        memory (memsw = 2 x memory); ``--memory-swap -1`` means unlimited swap.
    """
    writes: list[tuple[str, str, str]] = []
    if limits.memory is not None:
        writes.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
        if swap_accounting:
            if limits.memory_swap is None:
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(2 * limits.memory)))
            else:
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(limits.memory_swap)))
    if limits.cpus is not None:
        writes.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
        writes.append(("cpu", "cpu.cfs_quota_us", str(cpu_quota(limits.cpus))))
    if limits.cpu_shares is not None:
        writes.append(("cpu", "cpu.shares", str(limits.cpu_shares)))
    if limits.cpuset_cpus is not None:
        writes.append(("cpuset", "cpuset.cpus", limits.cpuset_cpus))
    if limits.pids_limit is not None:
        writes.append(("pids", "pids.max", str(limits.pids_limit)))
    return writes


def cpu_quota(cpus: float) -> int:
    """CFS quota in microseconds per 100 ms period (rounded, so 0.29 CPUs is 29000, not 28999)."""
    return max(1000, int(round(cpus * CFS_PERIOD_US)))


def parse_stats(raw: dict[str, str | None]) -> CgroupStats:
    """Build the normalised record from v1 files' texts (None = file missing).

    Parameters
    ----------
    raw
        Keys ``memory_current``, ``memory_peak``, ``memory_limit``, ``oom_control``,
        ``cpu_usage``, ``pids_current``, ``pids_limit`` (any may be None).

    Returns
    -------
    CgroupStats
    """
    limit = parse_int(raw.get("memory_limit"))
    if limit is not None and limit >= UNLIMITED_THRESHOLD:
        limit = None
    oom_control = parse_keyed(raw.get("oom_control"))
    return CgroupStats(
        memory_current=parse_int(raw.get("memory_current")),
        memory_peak=parse_int(raw.get("memory_peak")),
        memory_limit=limit,
        # "oom_kill N" is in memory.oom_control since Linux 4.13.
        oom_kills=oom_control.get("oom_kill", 0),
        cpu_usage_ns=parse_int(raw.get("cpu_usage")),
        pids_current=parse_int(raw.get("pids_current")),
        pids_peak=None,
        pids_limit=parse_int(raw.get("pids_limit")),
        oom_counted="oom_kill" in oom_control or raw.get("oom_control") is None,
    )


_STAT_FILES = {
    "memory_current": ("memory", "memory.usage_in_bytes"),
    "memory_peak": ("memory", "memory.max_usage_in_bytes"),
    "memory_limit": ("memory", "memory.limit_in_bytes"),
    "oom_control": ("memory", "memory.oom_control"),
    "cpu_usage": ("cpuacct", "cpuacct.usage"),
    "pids_current": ("pids", "pids.current"),
    "pids_limit": ("pids", "pids.max"),
}


class V1Cgroup(Cgroup):
    """A container's cgroup on v1: one directory per hierarchy."""

    def thread_files(self) -> list[str]:
        return [directory + "/tasks" for directory in self.dirs]

    def _stat_files(self) -> dict[str, str]:
        return {key: f"{self.paths[c]}/{f}" for key, (c, f) in _STAT_FILES.items()
                if c in self.paths}

    @staticmethod
    def _parse_stats(raw: dict[str, str | None]) -> CgroupStats:
        return parse_stats(raw)

    def _can_freeze(self) -> bool:
        return "freezer" in self.paths

    def _state_file(self) -> str:
        """The freezer.state path, or a CgroupError saying there is no freezer."""
        if "freezer" not in self.paths:
            raise CgroupError(f"cannot freeze cgroup {self.name}: no freezer controller "
                              "is mounted")
        return self.paths["freezer"] + "/freezer.state"

    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Write FROZEN to freezer.state and wait until the kernel reports FROZEN.

        Parameters
        ----------
        timeout
            Seconds to wait; on expiry the cgroup is thawed again and CgroupError raised.
        """
        path = self._state_file()
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            # Re-writing FROZEN retries tasks that were busy (e.g. in vfork) on the first pass.
            write_file(path, "FROZEN")
            state = read_file(path).strip()
            if state == "FROZEN":
                return
            if time.monotonic() > deadline:
                self.thaw()
                raise CgroupError(f"cannot freeze {path}: still {state} after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def thaw(self) -> None:
        """Write THAWED to freezer.state (immediate: thawing cannot stall)."""
        write_file(self._state_file(), "THAWED")

    def is_frozen(self) -> bool:
        """Whether freezer.state reads FROZEN.

        Returns
        -------
        bool
        """
        if "freezer" not in self.paths:
            return False
        return (read_optional(self.paths["freezer"] + "/freezer.state") or "").strip() == "FROZEN"

    def populated(self) -> bool:
        """Whether any hierarchy's cgroup.procs lists a process (v1 has no cgroup.events)."""
        return any((read_optional(path + "/cgroup.procs") or "").strip() for path in self.dirs)


def _copy_cpuset(parent: str, child: str, cpus: str | None = None) -> None:
    """Give a new v1 cpuset cgroup its parent's cpus and mems (empty ones refuse tasks)."""
    parent_cpus = read_file(parent + "/cpuset.cpus").strip()
    parent_mems = read_file(parent + "/cpuset.mems").strip()
    if not parent_cpus or not parent_mems:
        # The shared nbcontainer dir was just made by a concurrent start that has not copied
        # yet (or crashed before it did): initialise it from its own parent, idempotently.
        _copy_cpuset(os.path.dirname(parent), parent)
        parent_cpus = read_file(parent + "/cpuset.cpus").strip()
        parent_mems = read_file(parent + "/cpuset.mems").strip()
    write_file(child + "/cpuset.cpus", cpus or parent_cpus)
    write_file(child + "/cpuset.mems", parent_mems)


def _init_cpuset_parent(parent: str) -> None:
    """Copy cpus and mems into a freshly made shared parent from its own parent."""
    _copy_cpuset(os.path.dirname(parent), parent)


def write_devices(directory: str, rules: Sequence[DeviceRule]) -> None:
    """The devices controller's allowlist: deny everything, then allow each rule."""
    write_file(f"{directory}/devices.deny", "a")
    for rule in rules:
        write_file(f"{directory}/devices.allow", rule.v1_line())


def create(name: str, limits: Limits, parents: dict[str, str],
           swap_accounting: bool, devices: Sequence[DeviceRule] = DEFAULT_RULES) -> V1Cgroup:
    """Create the container's directory in every hierarchy and apply the limits.

    Parameters
    ----------
    name
        The container id.
    limits
        What to apply; the caller has checked that the controllers exist.
    parents
        Controller -> absolute parent directory (from :meth:`Layout.parent_dirs`).
    swap_accounting
        Whether memory+swap can be limited.

    Returns
    -------
    V1Cgroup

    Raises
    ------
    CgroupError
        Naming the path and the errno text; everything created is removed first.
    """
    plan = plan_limits(limits, swap_accounting)
    paths: dict[str, str] = {}
    created: list[str] = []
    try:
        for parent in distinct(parents.values()):
            controllers = [c for c, p in parents.items() if p == parent]
            child = make_child(parent, name,
                               _init_cpuset_parent if "cpuset" in controllers else None)
            created.append(child)
            for controller in controllers:
                paths[controller] = child
            if "cpuset" in controllers:
                _copy_cpuset(parent, child, limits.cpuset_cpus)
        for controller, filename, value in plan:
            if controller == "cpuset" and filename == "cpuset.cpus":
                continue  # written by _copy_cpuset, before mems, as the kernel wants
            write_file(f"{paths[controller]}/{filename}", value)
        if "devices" in paths:
            write_devices(paths["devices"], devices)
    except BaseException:
        V1Cgroup(name, {str(i): p for i, p in enumerate(created)}).remove(timeout=1.0)
        raise
    return V1Cgroup(name, paths)
