"""cgroup v2: one unified hierarchy, see the kernel's Documentation/admin-guide/cgroup-v2.rst.

What shapes this module:

- a child only has a controller's files if its parent lists the controller in
  ``cgroup.subtree_control``; we enable them in our own ``nbcontainer`` directory, which never
  holds processes (the "no internal processes" rule would refuse it otherwise);
- ``cgroup.freeze`` is a boolean, and the kernel reports completion as ``frozen 1`` in
  ``cgroup.events``;
- ``cgroup.kill`` (Linux >= 5.14) kills the whole subtree atomically, forks included;
- limits are the same numbers as v1 in other files (``memory.max``, ``cpu.max``), except swap,
  which v2 limits on its own (``memory.swap.max``) rather than as memory+swap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from nbcontainer import _libc
from nbcontainer.cgroups.base import (
    DEFAULT_TIMEOUT,
    Cgroup,
    CgroupStats,
    make_child,
    parse_int,
    parse_keyed,
    read_file,
    read_optional,
    write_file,
)
from nbcontainer.cgroups.devices import DEFAULT_RULES, DeviceRule, device_program
from nbcontainer.cgroups.layout import V2_CONTROLLERS
from nbcontainer.errors import CgroupError
from nbcontainer.spec import Limits

CPU_PERIOD_US = 100000


def cpu_weight(shares: int) -> int:
    """Map v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc does.

    Parameters
    ----------
    shares
        The ``--cpu-shares`` value.

    Returns
    -------
    int
        ``1 + ((shares - 2) * 9999) // 262142``; the default 1024 shares gives 39, not 100,
        which is runc's (and therefore Docker's) documented behaviour.
    """
    return 1 + ((shares - 2) * 9999) // 262142


def plan_limits(limits: Limits, swap_accounting: bool) -> list[tuple[str, str]]:
    """The v2 control-file writes for some limits.

    Parameters
    ----------
    limits
        The container's limits.
    swap_accounting
        Whether ``memory.swap.max`` exists; without it swap is not limited.

    Returns
    -------
    list of (file name, value)
        ``memory.swap.max`` is swap alone, so it is ``memory_swap - memory``; ``-1`` is
        ``max``, and no ``--memory-swap`` means as much swap as memory (Docker's default).
    """
    writes: list[tuple[str, str]] = []
    if limits.memory is not None:
        writes.append(("memory.max", str(limits.memory)))
        if swap_accounting:
            if limits.memory_swap is None:
                swap = str(limits.memory)
            elif limits.memory_swap == -1:
                swap = "max"
            else:
                swap = str(max(0, limits.memory_swap - limits.memory))
            writes.append(("memory.swap.max", swap))
    if limits.cpus is not None:
        quota = max(1000, int(round(limits.cpus * CPU_PERIOD_US)))
        writes.append(("cpu.max", f"{quota} {CPU_PERIOD_US}"))
    if limits.cpu_shares is not None:
        writes.append(("cpu.weight", str(cpu_weight(limits.cpu_shares))))
    if limits.cpuset_cpus is not None:
        writes.append(("cpuset.cpus", limits.cpuset_cpus))
    if limits.pids_limit is not None:
        writes.append(("pids.max", str(limits.pids_limit)))
    return writes


def parse_stats(raw: dict[str, str | None]) -> CgroupStats:
    """Build the normalised record from v2 files' texts (None = file missing).

    Parameters
    ----------
    raw
        Keys ``memory_current``, ``memory_peak``, ``memory_limit``, ``memory_events``,
        ``cpu_stat``, ``pids_current``, ``pids_peak``, ``pids_limit``.

    Returns
    -------
    CgroupStats
    """
    cpu = parse_keyed(raw.get("cpu_stat")).get("usage_usec")
    events = parse_keyed(raw.get("memory_events"))
    return CgroupStats(
        memory_current=parse_int(raw.get("memory_current")),
        memory_peak=parse_int(raw.get("memory_peak")),
        memory_limit=parse_int(raw.get("memory_limit")),
        oom_kills=events.get("oom_kill", 0),
        cpu_usage_ns=None if cpu is None else cpu * 1000,
        pids_current=parse_int(raw.get("pids_current")),
        pids_peak=parse_int(raw.get("pids_peak")),
        pids_limit=parse_int(raw.get("pids_limit")),
        limit_hits=events.get("oom"),
    )


_STAT_FILES = {
    "memory_current": "memory.current",
    "memory_peak": "memory.peak",
    "memory_limit": "memory.max",
    "memory_events": "memory.events",
    "cpu_stat": "cpu.stat",
    "pids_current": "pids.current",
    "pids_peak": "pids.peak",
    "pids_limit": "pids.max",
}


def _events(path: str) -> dict[str, int]:
    """cgroup.events as a dict (``populated``, ``frozen``); empty if the cgroup is gone."""
    return parse_keyed(read_optional(path + "/cgroup.events"))


class V2Cgroup(Cgroup):
    """A container's cgroup on v2: one directory."""

    @property
    def path(self) -> str:
        """The single directory."""
        return self.paths["unified"]

    def _stat_files(self) -> dict[str, str]:
        return {key: f"{self.path}/{name}" for key, name in _STAT_FILES.items()}

    @staticmethod
    def _parse_stats(raw: dict[str, str | None]) -> CgroupStats:
        return parse_stats(raw)

    def _can_freeze(self) -> bool:
        return os.path.exists(self.path + "/cgroup.freeze")

    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Write 1 to cgroup.freeze and wait for ``frozen 1`` in cgroup.events.

        Parameters
        ----------
        timeout
            Seconds to wait; on expiry the cgroup is thawed again and CgroupError raised.
        """
        write_file(self.path + "/cgroup.freeze", "1")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while _events(self.path).get("frozen") != 1:
            if time.monotonic() > deadline:
                self.thaw()
                raise CgroupError(f"cannot freeze {self.path}/cgroup.freeze: not frozen after "
                                  f"{timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def thaw(self) -> None:
        """Write 0 to cgroup.freeze."""
        write_file(self.path + "/cgroup.freeze", "0")

    def is_frozen(self) -> bool:
        """Whether cgroup.events reports ``frozen 1``.

        Returns
        -------
        bool
        """
        return _events(self.path).get("frozen") == 1

    def populated(self) -> bool:
        """Whether cgroup.events reports ``populated 1`` (this cgroup or any below it)."""
        return _events(self.path).get("populated") == 1

    def kill_all(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """SIGKILL everything in the cgroup subtree, forks included.

        Uses ``cgroup.kill`` where the kernel has it (one write, no race with fork), else the
        freeze + kill + thaw loop of the base class.

        Parameters
        ----------
        timeout
            Seconds to wait for the cgroup to empty.

        Raises
        ------
        CgroupError
            If processes remain after ``timeout``.
        """
        kill = self.path + "/cgroup.kill"
        if not os.path.exists(kill):
            super().kill_all(timeout)
            return
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.populated():
            write_file(kill, "1")
            if time.monotonic() > deadline:
                raise CgroupError(f"cannot kill every process in cgroup {self.path}: "
                                  f"still populated after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def _enable_controllers(parent: str, wanted: frozenset[str] | None) -> None:
    """Enable our controllers in the parent's subtree_control.

    Written every time rather than read-then-write: reading cgroup.subtree_control does not
    take cgroup_mutex, so a concurrent start's half-done enable can already be listed there
    while our child's files do not exist yet (seen as ENOENT on memory.max). A write takes the
    mutex, so once it returns the other enable has finished; enabling twice is a no-op.
    """
    if wanted is None:
        wanted = frozenset(read_file(parent + "/cgroup.controllers").split())
    wanted = wanted & frozenset(V2_CONTROLLERS)
    if wanted:
        write_file(parent + "/cgroup.subtree_control",
                   " ".join("+" + c for c in sorted(wanted)))


_programs: dict[tuple[DeviceRule, ...], int] = {}
_programs_lock = threading.Lock()


def attach_device_program(directory: str, rules: Sequence[DeviceRule]) -> None:
    """Attach the device allowlist to a cgroup as an eBPF program (cgroup v2 has no devices
    controller). A program is loaded once per rule list and process, then attached to each
    container's cgroup; removing the cgroup detaches it."""
    key = tuple(rules)
    with _programs_lock:
        prog = _programs.get(key)
        if prog is None:
            try:
                prog = _libc.bpf_prog_load(_libc.BPF_PROG_TYPE_CGROUP_DEVICE,
                                           device_program(key))
            except OSError as err:
                raise CgroupError(f"cannot load the device allowlist (an eBPF program): "
                                  f"{err}") from err
            _programs[key] = prog
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _libc.bpf_prog_attach(prog, fd, _libc.BPF_CGROUP_DEVICE, _libc.BPF_F_ALLOW_MULTI)
        finally:
            os.close(fd)
    except OSError as err:
        raise CgroupError(f"cannot attach the device allowlist to {directory}: {err}") from err


def create(name: str, limits: Limits, parent: str, swap_accounting: bool,
           controllers: frozenset[str] | None,
           devices: Sequence[DeviceRule] = DEFAULT_RULES) -> V2Cgroup:
    """Create the container's directory, make sure it has its controllers, apply the limits.

    Parameters
    ----------
    name
        The container id.
    limits
        What to apply; the caller has checked that the controllers exist.
    parent
        Absolute directory of the shared parent (``.../nbcontainer``).
    swap_accounting
        Whether ``memory.swap.max`` exists.
    controllers
        The controllers to enable in the parent (the layout's), or None to enable whatever the
        parent's ``cgroup.controllers`` offers (an explicit parent).

    Returns
    -------
    V2Cgroup

    Raises
    ------
    CgroupError
        Naming the path and the errno text; everything created is removed first.
    """
    child = f"{parent}/{name}"
    cgroup = V2Cgroup(name, {"unified": child})
    make_child(parent, name)
    try:
        # Always, not only when we made the parent: a concurrent start may have made it and
        # not yet enabled the controllers. Enabling reaches existing children too.
        _enable_controllers(parent, controllers)
        for filename, value in plan_limits(limits, swap_accounting):
            write_file(f"{child}/{filename}", value)
        attach_device_program(child, devices)
    except BaseException:
        cgroup.remove(timeout=1.0)
        raise
    return cgroup
