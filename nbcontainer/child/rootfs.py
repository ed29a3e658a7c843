"""The container's root filesystem, set up from inside its new mount namespace.

Runs in the container's first process, after unshare(CLONE_NEWNS) and before exec. The recipe
(runc's, in order): make every mount recursively private so nothing propagates to the host;
mount the overlay (image layers below, the container's upper directory on top); bind the
volumes; mount /proc, a read-only /sys and a minimal /dev; pivot_root into the overlay and
detach the old root; then mask and write-protect the sensitive /proc and /sys paths.
See mount_namespaces(7), pivot_root(2) and the OCI runtime spec's default masked paths.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from nbcontainer import _libc
from nbcontainer._libc import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
    mount,
)
from nbcontainer.child import idmap as idmap_mod

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# runc's default masked and read-only paths (the OCI spec's defaults; Docker uses the same).
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def make_private() -> None:
    """Make every mount of this namespace recursively private: nothing reaches the host."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def link_layers(linkdir: str, layers: Sequence[str]) -> str:
    """Make short symlinks ``linkdir/0..N`` to the layers; return the lowerdir option value.

    mount(2) data is cut at one page, so 500 long layer paths would not fit; with one-to-three
    digit names relative to ``linkdir``'s parent (our cwd while mounting), 500 layers take
    under 3 KiB. overlayfs lists lower layers top first; ``layers`` is bottom first.
    """
    os.makedirs(linkdir, exist_ok=True)
    base = os.path.basename(linkdir)
    names = []
    for index, layer in enumerate(layers):
        link = os.path.join(linkdir, str(index))
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(layer, link)
        names.append(f"{base}/{index}")
    return ":".join(reversed(names))


def mount_overlay(container_dir: str, layers: Sequence[str],
                  idmap: Sequence[int] | None = None) -> tuple[str, bool]:
    """Mount the overlay of ``layers`` under ``container_dir`` (upper, work).

    With ``idmap`` (host uid, host gid, count of a user namespace's maps) the lower layers
    are idmapped mounts (:mod:`nbcontainer.child.idmap`), so their files keep their owners
    inside; where the kernel or filesystem cannot, they are used as they are. Returns the
    merged directory and whether the layers are idmapped.
    """
    merged = os.path.join(container_dir, "merged")
    os.makedirs(merged, exist_ok=True)
    if not layers:
        empty = os.path.join(container_dir, "empty")
        os.makedirs(empty, exist_ok=True)
        layers = [empty]
    os.chdir(container_dir)
    lower, idmapped = None, False
    if idmap is not None:
        try:
            mounted = idmap_mod.mount_layers(list(layers), os.path.join(container_dir, "m"),
                                             *idmap)
        except OSError as err:
            if err.errno not in idmap_mod.UNSUPPORTED:
                raise
        else:
            # relative names, top first, as link_layers makes them (one page of mount data)
            lower = ":".join(f"m/{index}" for index in reversed(range(len(mounted))))
            idmapped = True
    if lower is None:
        lower = link_layers(os.path.join(container_dir, "l"), layers)
    options = f"lowerdir={lower},upperdir=upper,workdir=work"
    try:
        mount("overlay", merged, "overlay", 0, options)
    except OSError as err:
        raise OSError(err.errno, f"{err.strerror} (layers: {len(layers)}, options: "
                                 f"{options[:200]})") from None
    return merged, idmapped


def _ensure_mountpoint(root: str, path: str, is_dir: bool) -> str:
    """Create ``path`` inside ``root`` (never following a symlink out of it) and return it."""
    target = os.path.join(root, path.lstrip("/"))
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(target))
    if parent != real_root and not parent.startswith(real_root.rstrip("/") + "/"):
        raise OSError(1, f"mount point {path} resolves outside the container root")
    if os.path.islink(target):
        raise OSError(1, f"mount point {path} is a symlink in the image; refusing to follow it")
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    return target


def bind_volumes(root: str, volumes: Sequence[Sequence[object]]) -> None:
    """Bind each host path at its container path under ``root``; read-only where asked."""
    for host, ctr, readonly in volumes:
        host, ctr = str(host), str(ctr)
        try:
            target = _ensure_mountpoint(root, ctr, os.path.isdir(host))
        except OSError as err:
            raise OSError(err.errno, f"volume {host}:{ctr}: cannot make its mount point {ctr} "
                                     f"in the container: {err.strerror}; choose another "
                                     "container path") from None
        mount(host, target, None, MS_BIND | MS_REC)
        if readonly:
            make_readonly(target)


def make_readonly(target: str) -> None:
    """Make a bind mount and every mount below it read-only, keeping nosuid/nodev/noexec.

    A remount with ``MS_RDONLY | MS_REC`` only changes the top mount (the kernel ignores
    MS_REC on a remount): a tmpfs mounted under a ``:ro`` volume's source would stay writable.
    mount_setattr(2) with AT_RECURSIVE does them all at once (Linux 5.12); before that, each
    submount is remounted in turn, with the flags it has.
    """
    try:
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=True)
        return
    except OSError as err:
        if err.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    for mountpoint, flags in submounts(target):
        mount(None, mountpoint, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


_KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def submounts(target: str, mountinfo: str | None = None) -> list[tuple[str, int]]:
    """(mount point, nosuid/nodev/noexec flags) of ``target`` and every mount below it."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    top = os.path.realpath(target).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if point == top or point.startswith(top + "/"):
            flags = 0
            for option in fields[5].split(","):
                flags |= _KEPT_FLAGS.get(option, 0)
            found.append((point, flags))
    return found


def mount_proc_sys(root: str) -> None:
    """Mount /proc (of this PID namespace) and a read-only /sys under ``root``."""
    proc = _ensure_mountpoint(root, "/proc", True)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_dir = _ensure_mountpoint(root, "/sys", True)
    # Always our own sysfs: the root is built as real root, before any user namespace.
    mount("sysfs", sys_dir, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


def mount_dev(root: str) -> None:
    """A minimal /dev: a small tmpfs with bound device nodes, pts, shm, mqueue and links."""
    dev = _ensure_mountpoint(root, "/dev", True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        with open(target, "a"):
            pass
        # Bind the host's node rather than mknod: it also works inside a user namespace.
        mount(f"/dev/{name}", target, None, MS_BIND)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    mqueue = os.path.join(dev, "mqueue")
    os.mkdir(mqueue, 0o755)
    try:
        mount("mqueue", mqueue, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        os.rmdir(mqueue)  # no POSIX message queues in this kernel: leave it out
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, os.path.join(dev, link))


def bind_devices(root: str, devices: Sequence[Sequence[str]]) -> None:
    """Each ``--device`` node at its path inside (a bind of the host's node, so it also works
    in a user namespace); the device cgroup is what lets it be opened."""
    for host, ctr in devices:
        target = _ensure_mountpoint(root, str(ctr), False)
        mount(str(host), target, None, MS_BIND)


def hide_path(root: str, path: str) -> None:
    """Cover ``path`` under ``root``: a directory with an empty read-only tmpfs, a file with
    ``/dev/null``, if it exists and is not a symlink (the supervisor resolved those)."""
    target = os.path.join(root, path.lstrip("/"))
    if os.path.islink(target):
        return
    if os.path.isdir(target):
        mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=0,mode=000")
    elif os.path.exists(target):
        mount("/dev/null", target, None, MS_BIND)  # reads as empty; a write goes nowhere


def pivot(root: str) -> None:
    """pivot_root into ``root`` and detach the old root (runc's ``pivot_root(".", ".")``)."""
    os.chdir(root)
    _libc.pivot_root(".", ".")
    # The old root is now stacked on top of "/": detach it, so nothing of the host stays.
    _libc.umount2(".", MNT_DETACH)
    os.chdir("/")


def mask_paths(root: str = "/") -> None:
    """Mask and write-protect the /proc and /sys paths runc masks (under ``root``: after
    pivot_root, or before it in a root built ahead)."""
    for path in MASKED_PATHS:
        path = os.path.join(root, path.lstrip("/"))
        try:
            if os.path.isdir(path):
                mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
            elif os.path.exists(path):
                mount("/dev/null", path, None, MS_BIND)
        except OSError:
            pass  # absent on this kernel, or already covered
    for path in READONLY_PATHS:
        path = os.path.join(root, path.lstrip("/"))
        if not os.path.exists(path):
            continue
        mount(path, path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def setup(
    container_dir: str,
    layers: Sequence[str],
    volumes: Sequence[Sequence[object]],
    hide: Sequence[str],
    privileged: bool,
    devices: Sequence[Sequence[str]] = (),
    idmap: Sequence[int] | None = None,
) -> bool:
    """The whole recipe: private propagation, overlay, volumes, /proc /sys /dev, pivot, masks.

    Returns whether the image layers are idmapped (asked for with ``idmap``)."""
    make_private()
    root, idmapped = mount_overlay(container_dir, layers, idmap)
    bind_volumes(root, volumes)
    # After the volumes: a volume above a hidden path (the container kernel binds the
    # notebook's directory, say /root) must not uncover it (/root/.ssh). One at or below a
    # hidden path exposes it on purpose; the supervisor left those out of ``hide``.
    for path in hide:
        hide_path(root, path)
    mount_proc_sys(root)
    mount_dev(root)
    bind_devices(root, devices)
    pivot(root)
    if not privileged:
        mask_paths()
    return idmapped


#: What a root built ahead has mounted already: a volume at or below one of these cannot go
#: into it (its mount point would be made in a read-only mount), nor at or below a hidden path.
PREPARED_MOUNTS = ("/proc", "/sys", "/dev")


def prepare(container_dir: str, layers: Sequence[str], hide: Sequence[str]) -> str:
    """A spare's root built ahead of its cell (runtime/spare.py): everything of :func:`setup`
    that does not depend on the cell — the overlay, the hidden paths, /proc, /sys, /dev and
    the masks — in the spare's own mount and PID namespaces. :func:`finish` does the rest.
    Returns the merged directory."""
    make_private()
    root, _ = mount_overlay(container_dir, layers)
    for path in hide:
        hide_path(root, path)
    mount_proc_sys(root)
    mount_dev(root)
    mask_paths(root)
    return root


def finish(container_dir: str, volumes: Sequence[Sequence[object]], hide: Sequence[str],
           hidden: Sequence[str], devices: Sequence[Sequence[str]] = ()) -> None:
    """The cell's part of a root built ahead by :func:`prepare` (which hid ``hidden``): its
    volumes, then the hidden paths a volume covered again (a volume above a hidden path must
    not uncover it) and those ``hidden`` did not have, its devices, pivot_root."""
    root = os.path.join(container_dir, "merged")
    bind_volumes(root, volumes)
    targets = [str(volume[1]).rstrip("/") + "/" for volume in volumes]
    done = set(hidden)
    for path in hide:
        if path not in done or any(path.startswith(target) for target in targets):
            hide_path(root, path)
    bind_devices(root, devices)
    pivot(root)
