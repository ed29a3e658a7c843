"""What every way out of a container shares: one teardown, and one pause/unpause.

A container ends in many ways — its process exits, ``stop``, ``rm -f``, ``gc`` after a crashed
supervisor, a spare nobody adopted — and each must leave nothing behind. They all end here
(podman's and containerd's shape: one teardown per container, called by every exit path).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nbcontainer.cgroups import Cgroup
from nbcontainer.net import networks
from nbcontainer.runtime import state as state_mod
from nbcontainer.runtime import userns
from nbcontainer.runtime.state import ContainerState


def teardown(cgroup: Cgroup | None, directory: Path | None = None, *,
             root: Path | None = None, state: ContainerState | None = None) -> None:
    """Kill every process of the container, remove its cgroup, release its network, then
    remove its directory.

    Idempotent. :meth:`Cgroup.remove` kills what is left first, frozen tasks included (the
    freezer is thawed after the SIGKILLs, which then act), in every hierarchy, and removes the
    shared parent if this was its last container. With the container's ``state`` (and the
    store's ``root``), its veth pair and address lease go (:func:`networks.release`), and its
    user namespace id range (:func:`userns.release`).
    ``directory`` (the container's directory in the store, with its upper layer) is removed
    even if the cgroup could not be.

    Raises
    ------
    CgroupError
        A process could not be killed or a directory removed in time.
    """
    try:
        if cgroup is not None:
            cgroup.remove()
    finally:
        try:
            if root is not None and state is not None and state.network:
                networks.release(state.network, state.id)
        finally:
            try:
                # after the cgroup: no process of the container holds the ids any more
                if root is not None and state is not None and (state.userns or {}).get("leased"):
                    userns.release(root, state.id)
            finally:
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)


def set_paused(root: Path, st: ContainerState, cgroup: Cgroup, paused: bool) -> None:
    """Freeze (``paused``) or thaw every process of a container, and record it."""
    if paused:
        cgroup.freeze()
    else:
        cgroup.thaw()
    st.status = "paused" if paused else "running"
    state_mod.save(root, st)
