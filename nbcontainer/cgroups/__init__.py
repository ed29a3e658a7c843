"""Container cgroups: create, limit, attach, sample, freeze, kill and remove, on v1 or v2.

The only part of nbcontainer that touches the cgroup filesystem; its root is a parameter.
:func:`detect` says what the machine has, :func:`create_cgroup` makes a container's cgroup with
its limits applied, and the :class:`Cgroup` it returns hides whether that is one directory
(v2) or one per hierarchy (v1). See cgroups(7).

Example
-------
>>> cg = create_cgroup("0123456789ab", Limits(memory=100 << 20))   # doctest: +SKIP
>>> cg.attach(pid); ...; cg.stats().memory_peak; cg.remove()        # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from nbcontainer.cgroups import v1, v2
from nbcontainer.cgroups.base import (
    Cgroup,
    CgroupStats,
    Sampler,
    check_name,
    leave,
    read_optional,
)
from nbcontainer.cgroups.devices import ALLOW_ALL, DEFAULT_RULES, DeviceRule, rule_for
from nbcontainer.cgroups.layout import (
    DEFAULT_ROOT,
    Layout,
    detect,
    parse_proc_cgroup,
)
from nbcontainer.errors import CgroupError, FeatureMissingError, UsageError
from nbcontainer.options import limit_controllers
from nbcontainer.spec import Limits, cpuset_members

__all__ = [
    "ALLOW_ALL",
    "DEFAULT_RULES",
    "Cgroup",
    "CgroupStats",
    "DeviceRule",
    "Layout",
    "Sampler",
    "apply_devices",
    "cgroup_from_paths",
    "create_cgroup",
    "detect",
    "leave",
    "list_cgroups",
    "origin_procs_files",
    "open_cgroup",
    "remove_stale",
    "rule_for",
]


def _check_controllers(limits: Limits, layout: Layout) -> None:
    """Refuse, before anything is created, a limit whose controller is missing."""
    if layout.version == "none":
        raise FeatureMissingError(layout.problems[0])
    for field, (controller, option) in limit_controllers().items():
        value = getattr(limits, field)
        if value is None or (field == "memory_swap" and limits.memory is None):
            continue
        if controller not in layout.controllers:
            raise FeatureMissingError(
                f"{option} needs the {controller} cgroup controller, which this machine does "
                f"not offer (cgroup {layout.version}); run without {option}, or see "
                "`nbcontainer info`"
            )
    if limits.memory_swap not in (None, -1) and not layout.swap_accounting:
        # Without swap accounting the limit would be silently not enforced.
        raise FeatureMissingError(
            "--memory-swap needs swap accounting, which this kernel has off (no memsw / "
            "memory.swap.max files); run without --memory-swap, or boot with swapaccount=1")


def _available_cpus(start: str, files: tuple[str, ...]) -> str:
    """The CPU list the container may use: the nearest existing ancestor's effective cpus."""
    path = start
    while len(path) > 1:
        for name in files:
            try:
                text = (read_optional(f"{path}/{name}") or "").strip()
            except CgroupError:
                # ENODEV: the shared parent is being removed by a concurrent container's
                # remove(); its own parent has the same CPUs.
                text = ""
            if text:
                return text
        path = os.path.dirname(path)
    with open("/sys/devices/system/cpu/online") as f:
        return f.read().strip()


def _check_cpuset(limits: Limits, parent_dir: str, version: str) -> None:
    """Refuse CPUs the container's parent does not have, naming the ones it has."""
    if limits.cpuset_cpus is None:
        return
    files = (("cpuset.cpus.effective",) if version == "v2"
             else ("cpuset.effective_cpus", "cpuset.cpus"))
    available = _available_cpus(parent_dir, files)
    missing = sorted(cpuset_members(limits.cpuset_cpus) - cpuset_members(available))
    if missing:
        raise UsageError(
            f"--cpuset-cpus: CPU {','.join(map(str, missing))} is not available here; "
            f"use CPUs from {available}"
        )


def create_cgroup(name: str, limits: Limits, *, parent: str | None = None,
                  root: str = DEFAULT_ROOT, layout: Layout | None = None,
                  devices: Sequence[DeviceRule] = DEFAULT_RULES) -> Cgroup:
    """Create a container's cgroup below the parent and apply its limits.

    Parameters
    ----------
    name
        The directory name, the container id.
    limits
        Limits to apply before this returns (so they hold before the payload starts).
    parent
        A cgroup path used in every hierarchy instead of the detected default
        (``layout.parent_path``: the supervisor's own cgroup + ``/nbcontainer``). Only its last
        component is created if missing.
    root
        The cgroup filesystem root.
    layout
        A layout to use instead of ``detect(root)``.
    devices
        The device allowlist (:mod:`.devices`; runc's default, or ``ALLOW_ALL``).

    Returns
    -------
    Cgroup

    Raises
    ------
    FeatureMissingError
        A requested limit's controller is missing; nothing is created.
    UsageError
        ``--cpuset-cpus`` names CPUs that are not available; nothing is created.
    CgroupError
        A cgroup operation failed (message names the path and the errno text); whatever was
        created is removed.
    """
    check_name(name)
    layout = layout or detect(root)
    _check_controllers(limits, layout)
    parents = layout.parent_dirs(parent)
    if layout.version == "v2":
        _check_cpuset(limits, parents["unified"], "v2")
        return v2.create(name, limits, parents["unified"], layout.swap_accounting,
                         None if parent is not None else layout.controllers, devices)
    if "cpuset" in parents:
        _check_cpuset(limits, parents["cpuset"], "v1")
    return v1.create(name, limits, _v1_hierarchies(parents, limits), layout.swap_accounting,
                     devices)


# Every v1 container is metered (memory, cpuacct, pids) and killable (freezer); cpu and cpuset
# join only when limited. Each hierarchy costs a mkdir, an attach and an rmdir per container.
_V1_ALWAYS = frozenset({"memory", "cpuacct", "pids", "freezer", "devices"})


def _v1_hierarchies(parents: dict[str, str], limits: Limits) -> dict[str, str]:
    """The v1 hierarchies a container with ``limits`` needs."""
    needed = set(_V1_ALWAYS)
    if limits.cpus is not None or limits.cpu_shares is not None:
        needed.add("cpu")
    if limits.cpuset_cpus is not None:
        needed.add("cpuset")
    chosen = {c: p for c, p in parents.items() if c in needed}
    # A hierarchy shared by several controllers (e.g. cpu,cpuacct) is one directory anyway.
    shared = set(chosen.values())
    chosen.update({c: p for c, p in parents.items() if p in shared})
    return chosen


def v1_controllers_for(limits: Limits, root: str = DEFAULT_ROOT) -> set[str]:
    """The v1 controllers a container cgroup with ``limits`` joins (for adopting a spare)."""
    layout = detect(root)
    return set(_v1_hierarchies(layout.parent_dirs(None), limits))


def apply_limits(cgroup: Cgroup, limits: Limits, root: str = DEFAULT_ROOT) -> None:
    """Apply ``limits`` to an existing, still empty-of-payload cgroup (an adopted spare).

    On v2 the same files :func:`create_cgroup` writes (``memory.max``, ``pids.max``,
    ``cpu.max``...): the spare's directory has every controller its parent enables.

    Raises
    ------
    FeatureMissingError
        A limit's controller is missing.
    UsageError
        ``--cpuset-cpus`` names CPUs that are not available.
    CgroupError
        A hierarchy the limit needs is not one the cgroup has, or a write failed.
    """
    layout = detect(root)
    _check_controllers(limits, layout)
    if "unified" in cgroup.paths:
        directory = cgroup.paths["unified"]
        _check_cpuset(limits, os.path.dirname(directory), "v2")
        for filename, value in v2.plan_limits(limits, layout.swap_accounting):
            v2.write_file(f"{directory}/{filename}", value)
        return
    for controller, filename, value in v1.plan_limits(limits, layout.swap_accounting):
        if controller not in cgroup.paths:
            raise CgroupError(f"cgroup {cgroup.name} has no {controller} hierarchy")
        v1.write_file(f"{cgroup.paths[controller]}/{filename}", value)


def apply_devices(cgroup: Cgroup, devices: Sequence[DeviceRule]) -> None:
    """Apply a device allowlist to an existing cgroup (an adopted spare)."""
    if "unified" in cgroup.paths:
        v2.attach_device_program(cgroup.paths["unified"], devices)
    elif "devices" in cgroup.paths:
        v1.write_devices(cgroup.paths["devices"], devices)


def _existing(name: str, parent: str | None, root: str, layout: Layout | None) -> Cgroup | None:
    """The container's cgroup restricted to the hierarchies where its directory exists."""
    layout = layout or detect(root)
    if layout.version == "none":
        return None
    parents = layout.parent_dirs(parent)
    paths = {c: f"{p}/{name}" for c, p in parents.items() if os.path.isdir(f"{p}/{name}")}
    if not paths:
        return None
    if layout.version == "v2":
        return v2.V2Cgroup(name, paths)
    return v1.V1Cgroup(name, paths)


def open_cgroup(name: str, *, parent: str | None = None, root: str = DEFAULT_ROOT,
                layout: Layout | None = None) -> Cgroup:
    """Open an existing container cgroup (for exec, stats, pause or gc of a detached one).

    Parameters
    ----------
    name
        The container id.
    parent
        As for :func:`create_cgroup`.
    root
        The cgroup filesystem root.
    layout
        A layout to use instead of ``detect(root)``.

    Returns
    -------
    Cgroup

    Raises
    ------
    CgroupError
        If no hierarchy has a cgroup of that name.
    """
    check_name(name)
    cgroup = _existing(name, parent, root, layout)
    if cgroup is None:
        where = ", ".join(sorted((layout or detect(root)).parent_dirs(parent).values()))
        raise CgroupError(f"cannot open cgroup {name}: no such cgroup under {where or root}")
    return cgroup


def cgroup_from_paths(name: str, paths: dict[str, str]) -> Cgroup:
    """Rebuild a :class:`Cgroup` from the ``paths`` a runtime saved at creation.

    On v1 the memory parent is the *supervisor's* own memory cgroup, so a later process (a
    ``gc`` or ``exec`` run from another cgroup) cannot find it by name alone; the saved paths
    can. Missing directories are fine (``remove`` is idempotent).

    Parameters
    ----------
    name
        The container id.
    paths
        ``Cgroup.paths`` as saved: controller -> absolute directory, or ``{"unified": dir}``.

    Returns
    -------
    Cgroup
    """
    check_name(name)
    if not paths or any(os.path.basename(p) != name for p in paths.values()):
        raise CgroupError(f"invalid saved cgroup paths for {name}: {paths!r}")
    if "unified" in paths:
        return v2.V2Cgroup(name, dict(paths))
    return v1.V1Cgroup(name, dict(paths))


def list_cgroups(parent: str | None = None, root: str = DEFAULT_ROOT,
                 layout: Layout | None = None) -> list[str]:
    """Names of the container cgroups under the parent, in any hierarchy (for gc).

    Parameters
    ----------
    parent
        As for :func:`create_cgroup`.
    root
        The cgroup filesystem root.
    layout
        A layout to use instead of ``detect(root)``.

    Returns
    -------
    list of str
        Sorted names; empty when the parent does not exist.
    """
    layout = layout or detect(root)
    if layout.version == "none":
        return []
    names: set[str] = set()
    for path in set(layout.parent_dirs(parent).values()):
        try:
            with os.scandir(path) as entries:
                names.update(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
        except OSError as err:
            raise CgroupError(f"cannot list cgroups in {path}: {os.strerror(err.errno or 0)}")\
                from err
    return sorted(names)


def remove_stale(alive: Callable[[str], bool], parent: str | None = None,
                 root: str = DEFAULT_ROOT, layout: Layout | None = None) -> list[str]:
    """Kill and remove the container cgroups whose container is not alive (for gc).

    Parameters
    ----------
    alive
        Called with each cgroup name; True keeps it.
    parent
        As for :func:`create_cgroup`.
    root
        The cgroup filesystem root.
    layout
        A layout to use instead of ``detect(root)``.

    Returns
    -------
    list of str
        The names removed.
    """
    removed = []
    for name in list_cgroups(parent, root, layout):
        if alive(name):
            continue
        cgroup = _existing(name, parent, root, layout)
        if cgroup is not None:
            cgroup.remove()
            removed.append(name)
    return removed


def origin_procs_files(pid: int, cgroup: Cgroup, root: str = DEFAULT_ROOT) -> list[str]:
    """The ``cgroup.procs`` files of the cgroups ``pid`` is in, one per directory of ``cgroup``.

    Where a spare's helper (forked by ``pid``, the zygote) returns once it has forked the first
    process: back where it came from, not into the shared ``nbcontainer`` parent, where a
    process would keep that directory from being removed when the last container leaves.
    """
    with open(f"/proc/{pid}/cgroup") as f:
        own = parse_proc_cgroup(f.read())
    mounts = detect(root).hierarchies
    files: dict[str, str] = {}
    for controller, directory in cgroup.paths.items():
        if directory not in files:
            origin = mounts[controller].rstrip("/") + own[controller]
            files[directory] = os.path.join(origin, "cgroup.procs")
    return list(files.values())
