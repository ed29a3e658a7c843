"""Which namespace flags a container gets, and in which order they are created or joined.

The order is data, not code (youki's habit): the helper walks these tables. The PID namespace
applies to children only, so the helper forks after unsharing it; the cgroup namespace comes
after the supervisor has put the child into its cgroup, so that the cgroup is the namespace's
root; the user namespace comes last, once the root filesystem is built as real root.
"""

from __future__ import annotations

from nbcontainer import _libc

FLAGS: dict[str, int] = {
    "user": _libc.CLONE_NEWUSER,
    "pid": _libc.CLONE_NEWPID,
    "mount": _libc.CLONE_NEWNS,
    "uts": _libc.CLONE_NEWUTS,
    "ipc": _libc.CLONE_NEWIPC,
    "net": _libc.CLONE_NEWNET,
    "cgroup": _libc.CLONE_NEWCGROUP,
}

# /proc/PID/ns/<file> for each namespace name.
PROC_NAMES: dict[str, str] = {
    "user": "user", "pid": "pid", "mount": "mnt", "uts": "uts", "ipc": "ipc", "net": "net",
    "cgroup": "cgroup",
}

# The order to join a running container. Our containers enter their user namespace last,
# after the root filesystem is built (see runtime.init), so the other namespaces belong to the
# host's user namespace: join them as real root first, and the user namespace at the end.
# Every fd is opened before the first setns, since joining the mount namespace changes root.
JOIN_ORDER = ("ipc", "uts", "net", "pid", "cgroup", "mount", "user")


def helper_flags(namespaces: frozenset[str] | set[str]) -> int:
    """Flags the helper unshares before forking the container's first process: pid and net.

    The PID namespace takes effect for children, so it must be unshared before the fork. The
    network namespace is unshared before the fork too, so it exists when the supervisor hears
    the first process's pid and puts a veth end into it. Everything else is unshared by the
    child, so the helper holds no mount namespace alive.
    """
    flags = 0
    for name in ("pid", "net"):
        if name in namespaces:
            flags |= FLAGS[name]
    return flags


def child_flags(namespaces: frozenset[str] | set[str]) -> int:
    """Flags the child unshares before its setup (all but user, pid, net and cgroup)."""
    flags = 0
    for name in ("mount", "uts", "ipc"):
        if name in namespaces:
            flags |= FLAGS[name]
    return flags

