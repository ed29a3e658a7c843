"""Operations on containers by name, from any process: stop, remove, pause, stats, gc.

These read the container's record (:mod:`nbcontainer.runtime.state`), so they work on a
container whatever process supervises it (a detached monitor, a notebook kernel, or none: a
crashed supervisor's leftovers are what :func:`gc` removes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from nbcontainer import cgroups
from nbcontainer.errors import CgroupError, ContainerError, ContainerStateError
from nbcontainer.net import networks
from nbcontainer.paths import containers_dir, store_root
from nbcontainer.runtime import lifecycle, userns
from nbcontainer.runtime import state as state_mod
from nbcontainer.runtime.state import ContainerState


def _cgroup(st: ContainerState) -> cgroups.Cgroup | None:
    if not st.cgroup:
        return None
    try:
        cg: cgroups.Cgroup = st.open_cgroup()
    except CgroupError:
        return None
    # cgroup_from_paths does not check existence: a removed cgroup is no cgroup.
    return cg if any(os.path.isdir(p) for p in cg.paths.values()) else None


def open_container_cgroup(st: ContainerState) -> cgroups.Cgroup:
    """The cgroup of a running container, or ContainerStateError if it is not running."""
    cg = _cgroup(st) if st.is_running() else None
    if cg is None:
        raise ContainerStateError(f"container {st.short} is not running ({st.status})")
    return cg


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _mark_exited(root: Path, st: ContainerState, reason: str, code: int | None = None) -> None:
    st.status = "exited"
    st.exit_reason = st.exit_reason or reason
    st.exit_code = st.exit_code if st.exit_code is not None else code
    st.finished = st.finished or time.time()
    with contextlib.suppress(OSError):
        state_mod.save(root, st)


def stop(ref: str, grace: float = 10.0, root: Path | None = None) -> ContainerState:
    """``docker stop``: SIGTERM to PID 1, then kill the whole cgroup after ``grace`` seconds."""
    root = store_root(root)
    st = state_mod.find(root, ref)
    if not st.is_running():
        return st
    cg = _cgroup(st)
    if st.status == "paused" and cg is not None:
        cg.thaw()
    with contextlib.suppress(ProcessLookupError):
        os.kill(st.pid, signal.SIGTERM)  # type: ignore[arg-type]
    if not _wait_until(lambda: not state_mod.is_alive(st.pid, st.pid_start), grace):
        if cg is not None:
            cg.kill_all()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)  # type: ignore[arg-type]
    _settle(root, st, cg)
    return state_mod.load(root, st.id) if state_mod.container_path(root, st.id).exists() else st


def _settle(root: Path, st: ContainerState, cg: cgroups.Cgroup | None) -> None:
    """After the first process died: let its supervisor record the end, or do it ourselves."""
    if st.supervisor_alive() and st.supervisor_pid != os.getpid():
        def recorded() -> bool:
            try:
                return state_mod.load(root, st.id).status == "exited"
            except ContainerError:
                return True
        if _wait_until(recorded, 5.0):
            return
    with contextlib.suppress(CgroupError):
        lifecycle.teardown(cg, root=root, state=st)
    _mark_exited(root, state_mod.load(root, st.id), "stopped")


def remove(ref: str, force: bool = False, root: Path | None = None) -> ContainerState:
    """``docker rm``: remove a stopped container (``force``: kill it first)."""
    root = store_root(root)
    st = state_mod.find(root, ref)
    if st.is_running():
        if not force:
            raise ContainerStateError(
                f"container {st.short} is running; stop it first (`nbcontainer stop "
                f"{st.short}`) or use `nbcontainer rm -f {st.short}`"
            )
        cg = _cgroup(st)
        if cg is not None:
            cg.kill_all()  # frozen (paused) tasks too
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)  # type: ignore[arg-type]
        _settle(root, st, cg)
    _discard(root, st)
    return st


def _discard(root: Path, st: ContainerState) -> None:
    """The container's teardown: processes, cgroup and its directory in the store."""
    with contextlib.suppress(CgroupError):
        lifecycle.teardown(_cgroup(st), state_mod.container_path(root, st.id), root=root,
                           state=st)


def pause(ref: str, root: Path | None = None) -> ContainerState:
    """Freeze every process of a running container."""
    root = store_root(root)
    st = state_mod.find(root, ref)
    lifecycle.set_paused(root, st, open_container_cgroup(st), True)
    return st


def unpause(ref: str, root: Path | None = None) -> ContainerState:
    """Thaw a paused container."""
    root = store_root(root)
    st = state_mod.find(root, ref)
    if st.status != "paused":
        raise ContainerStateError(f"container {st.short} is not paused ({st.status})")
    lifecycle.set_paused(root, st, open_container_cgroup(st), False)
    return st


def gc(root: Path | None = None) -> list[str]:
    """Remove what crashed supervisors left: processes, cgroups, directories. Returns actions.

    A container whose supervisor is alive is never touched.
    """
    root = store_root(root)
    actions: list[str] = []
    live: set[str] = set()
    base = containers_dir(root)
    if base.is_dir():
        for entry in os.listdir(base):
            path = base / entry
            if entry.startswith(state_mod.SPARE_DIR_PREFIX) and path.is_dir():
                # A spare's root built ahead: kept while its supervisor lives (one without its
                # marker yet is a crash between mkdir and writing it, once it is a minute old).
                spare = state_mod.spare_directory_alive(path)
                if spare is False or (spare is None
                                      and time.time() - path.stat().st_mtime > 60):
                    lifecycle.teardown(None, path)
                    actions.append(f"removed the spare directory {entry} (its supervisor is gone)")
                continue
            if entry.startswith(".") or not path.is_dir():
                continue
            try:
                st = state_mod.load(root, entry)
            except ContainerError:
                # A directory without a record: a crash between mkdir and the first save (or
                # a spare's, renamed, whose record comes next).
                if time.time() - path.stat().st_mtime > 60:
                    lifecycle.teardown(None, path)
                    actions.append(f"removed incomplete container directory {entry}")
                else:
                    live.add(entry)
                continue
            if st.supervisor_alive():
                live.add(st.id)
                continue
            if st.status in ("created", "running", "paused"):
                if _cgroup(st) is None and st.pid and state_mod.is_alive(st.pid, st.pid_start):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(st.pid, signal.SIGKILL)
                actions.append(f"stopped {st.short}: its supervisor (pid {st.supervisor_pid}) "
                               "is gone")
            remove = st.auto_remove or (st.owner or "").startswith("kernel:")
            if not remove and st.status != "exited":
                _mark_exited(root, st, "its supervisor died", 137)
            try:
                lifecycle.teardown(_cgroup(st),
                                   state_mod.container_path(root, st.id) if remove else None,
                                   root=root, state=st)
            except CgroupError as err:
                actions.append(f"could not remove what {st.short} left: {err}")
            if remove:
                actions.append(f"removed {st.short}")
    def alive(store: Path, cid: str) -> bool:
        return (store == root and cid in live) or _alive(store, cid)

    actions += networks.collect(alive)
    actions += userns.collect(alive)
    actions += _remove_orphan_cgroups(live | (set(os.listdir(base)) if base.is_dir() else set()))
    return actions


def _alive(root: Path, cid: str) -> bool:
    """True if container ``cid``'s supervisor runs, or its record is being made right now."""
    try:
        return state_mod.load(root, cid).supervisor_alive()
    except ContainerError:
        path = state_mod.container_path(root, cid)
        return path.is_dir() and time.time() - path.stat().st_mtime <= 60


def _remove_orphan_cgroups(known: set[str], min_age: float = 60.0) -> list[str]:
    """Remove container cgroups that no container record names: empty and old ones only.

    Other stores (another NBCONTAINER_ROOT, another user's kernel) share the cgroup parent,
    so a cgroup unknown here may be theirs: one with processes in it, or one younger than
    ``min_age`` (being set up right now), is never touched.
    """
    removed = []
    for name in cgroups.list_cgroups():
        if name in known:
            continue
        try:
            cg = cgroups.open_cgroup(name)
            if cg.procs():
                continue
            ages = [time.time() - os.stat(p).st_mtime for p in cg.paths.values()
                    if os.path.isdir(p)]
            if not ages or min(ages) < min_age:
                continue
            lifecycle.teardown(cg)
        except (CgroupError, OSError):
            continue
        removed.append(f"removed orphaned cgroup {name}")
    return removed
