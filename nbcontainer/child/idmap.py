"""Idmapped image layers: files owned by root in an image are owned by root inside a container
with a user namespace.

An idmapped mount (mount_setattr(2), ``MOUNT_ATTR_IDMAP``, Linux 5.12; overlayfs accepts
idmapped lower layers since 5.19) shows a file whose on-disk owner is ``k`` as owned by the
host id that ``k`` maps to in a user namespace with the container's maps: uid 0 of an image
file reads as the container's mapped root, which is root again inside. The layers on disk
are unchanged. The recipe is containers/storage's (``pkg/idmap``): a throwaway process in a
new user namespace with the container's maps lends its namespace; each layer is cloned
detached (open_tree(2) ``OPEN_TREE_CLONE``), idmapped, and attached where overlayfs takes it
as a lower layer (move_mount(2)).

Runs in the container's first process, as root of the host's user namespace, in its new
(private) mount namespace: the idmapped mounts are seen by nobody else and go with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

from nbcontainer import _libc

#: What a kernel or filesystem without idmapped mounts answers: the caller falls back.
UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP)


def userns_fd(uid: int, gid: int, size: int) -> int:
    """An fd of a new user namespace mapping 0..size-1 to ``uid``.. and ``gid``...

    A forked process unshares it, says its pid as ``/proc`` counts pids (this process is
    PID 1 of a new PID namespace, but ``/proc`` is still the host's), and waits until the maps
    are written and the namespace is open; the namespace lives on through the fd.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked side
        try:
            os.close(ready_r)
            os.close(done_w)
            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            _libc.unshare(_libc.CLONE_NEWUSER)
            os.write(ready_w, os.readlink("/proc/self").encode())
            os.read(done_r, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        said = os.read(ready_r, 32)
        if not said:
            raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER) failed in the idmap helper")
        proc = f"/proc/{int(said)}"
        for name, start in (("uid_map", uid), ("gid_map", gid)):
            with open(f"{proc}/{name}", "w") as f:
                f.write(f"0 {start} {size}\n")
        return os.open(f"{proc}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def mount_layers(layers: list[str], mountdir: str, uid: int, gid: int, size: int) -> list[str]:
    """Attach an idmapped clone of each layer at ``mountdir/0..N``; return those paths.

    Raises OSError; with an errno in :data:`UNSUPPORTED` the kernel or a layer's filesystem
    cannot do it, and nothing is left mounted.
    """
    os.makedirs(mountdir, exist_ok=True)
    ns = userns_fd(uid, gid, size)
    done: list[str] = []
    try:
        for index, layer in enumerate(layers):
            target = os.path.join(mountdir, str(index))
            os.makedirs(target, exist_ok=True)
            tree = _libc.open_tree(layer)
            try:
                _libc.mount_setattr("", _libc.MOUNT_ATTR_IDMAP, recursive=False, dirfd=tree,
                                    userns_fd=ns)
                _libc.move_mount(tree, target)
            finally:
                os.close(tree)
            done.append(target)
    except OSError:
        for target in done:
            with contextlib.suppress(OSError):
                _libc.umount2(target, _libc.MNT_DETACH)
        raise
    finally:
        os.close(ns)
    return done
