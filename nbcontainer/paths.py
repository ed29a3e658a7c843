"""Where nbcontainer keeps its state on disk: the store root and its fixed sub-directories.

Layout (all root-only)::

    <root>/layers/<sha256>/       image layers, content-addressed (images package)
    <root>/images/                image records (images package)
    <root>/containers/<id>/       one container: state.json, upper/, work/, log (runtime package)
    <root>/tmp/                   staging for atomic publishes; cleaned by gc
    <root>/cache/seccomp/         compiled seccomp programs, by digest (runtime/seccomp.py)

The root is ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``. What every store on the machine
shares (the network leases, user namespace id ranges) is kept apart: :func:`machine_records`.

A store on overlayfs (nbcontainer inside a Docker container or a Kubernetes pod whose store
directory is not a volume) cannot hold what an overlay needs from it: overlayfs refuses another
overlay as a container's upper and work directories ("not supported as upperdir"), and refuses
mknod(2) of the 0/0 character devices that are a layer's whiteouts. There the whole store moves
one level down, into a tmpfs of nbcontainer's own at ``<root>/tmpfs`` (mounted on first use and
kept, as the default bridge is; it goes with the mount namespace of the server that made it).
:func:`placement` says which, and why; ``nbcontainer info`` shows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from nbcontainer import _libc
from nbcontainer._records import record

DEFAULT_ROOT = "/var/lib/nbcontainer"
#: statfs(2) f_type of overlayfs (<linux/magic.h> OVERLAYFS_SUPER_MAGIC) and of tmpfs.
OVERLAYFS_SUPER_MAGIC = 0x794C7630
TMPFS_MAGIC = 0x01021994
#: Where the store's contents go when the store is on overlayfs.
TMPFS_NAME = "tmpfs"
#: Run directories of container kernels (the relay's connection files): <tmp>/nbck-<pid>-*.
KERNEL_RUNDIR_PREFIX = "nbck-"


def configured_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The store asked for: the argument, else ``$NBCONTAINER_ROOT``, else the default."""
    return Path(root or os.environ.get("NBCONTAINER_ROOT") or DEFAULT_ROOT)


def machine_records(kind: str) -> Path:
    """Where records of a machine-wide resource live, shared by every store on the machine:
    ``networks`` (the bridges' address leases), ``userns`` (subordinate id ranges).

    Two stores (a user's, a test's, each hub user's) share one machine's bridges and host ids,
    so they must share the leases too: ``/var/lib/nbcontainer/<kind>``, or
    ``$NBCONTAINER_<KIND>`` (a test that plays the host in namespaces of its own).
    """
    return Path(os.environ.get(f"NBCONTAINER_{kind.upper()}") or f"{DEFAULT_ROOT}/{kind}")


def store_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the store root: the configured one (:func:`configured_root`), or, when that is
    on overlayfs, the tmpfs below it that holds the store instead (mounted now, as root)."""
    return placement(configured_root(root), prepare=True).root


@record(frozen=True)
class Placement:
    """Where a configured store really keeps its contents, and why."""

    configured: Path
    root: Path
    #: True when the configured directory is on overlayfs and ``root`` is our tmpfs.
    on_overlay: bool
    #: True when the tmpfs at ``root`` is mounted (in this mount namespace).
    mounted: bool


_placements: dict[Path, Placement] = {}
_placements_lock = threading.Lock()


def placement(configured: Path, prepare: bool = False) -> Placement:
    """Where the store ``configured`` keeps its contents.

    With ``prepare`` (and as root), the tmpfs a store on overlayfs needs is mounted if it is
    not yet. The answer is remembered per process once the store is usable.
    """
    known = _placements.get(configured)
    if known is not None and (known.mounted or not known.on_overlay):
        return known
    with _placements_lock:
        found = _place(configured, prepare and os.geteuid() == 0)
        if found.mounted or not found.on_overlay:
            _placements[configured] = found
        return found


def configured_store(root: Path) -> Path:
    """The configured store whose contents live at ``root`` (``root`` itself, usually)."""
    for found in list(_placements.values()):
        if found.root == root:
            return found.configured
    return root


def _filesystem(path: Path) -> int:
    """statfs(2) f_type of ``path``, or of its nearest existing ancestor."""
    probe = path
    while True:
        try:
            return _libc.statfs_type(str(probe))
        except FileNotFoundError:
            if probe.parent == probe:
                raise
            probe = probe.parent


def _is_our_tmpfs(configured: Path, inner: Path) -> bool:
    """True if ``inner`` is a tmpfs mounted on its own (not the configured directory's)."""
    try:
        if _libc.statfs_type(str(inner)) != TMPFS_MAGIC:
            return False
        return os.stat(inner).st_dev != os.stat(configured).st_dev
    except FileNotFoundError:
        return False


def _place(configured: Path, mount: bool) -> Placement:
    try:
        overlay = _filesystem(configured) == OVERLAYFS_SUPER_MAGIC
    except OSError:
        overlay = False  # unreadable: the store's own checks will say why
    if not overlay:
        return Placement(configured, configured, False, False)
    inner = configured / TMPFS_NAME
    if _is_our_tmpfs(configured, inner):
        return Placement(configured, inner, True, True)
    if not mount:
        return Placement(configured, inner, True, False)
    with directory_lock(ensure_dir(configured, 0o711)):
        if not _is_our_tmpfs(configured, inner):
            ensure_dir(inner, 0o711)
            # mode 711 as the store itself: root-only contents, traversable for bind sources.
            _libc.mount("tmpfs", str(inner), "tmpfs", _libc.MS_NODEV, "mode=711")
    return Placement(configured, inner, True, True)


def replace_runtime_record(path: Path, text: str) -> None:
    """Replace the record at ``path`` with ``text``: a reader sees the old text or the new
    one, never a part. Only for records that mean nothing after a reboot (a container that
    removes itself when it ends, as every notebook cell's does).

    Why not ``os.replace``: on ext4 a rename over an existing file starts the new file's
    writeback there and then (``auto_da_alloc``, for programs that do not fsync), about
    0.15 ms each, and a cell's record is saved three times on its start path. renameat2(2)
    with RENAME_EXCHANGE swaps the two names without that flush, then the old text (under the
    temporary name now) goes. The price: after a power loss the record may be empty; ``gc``
    removes such a directory (a cell's record would be stale after a reboot anyway). Records
    that must survive one (a kept container's, a network's) use ``os.replace``.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    try:
        _libc.rename_exchange(str(tmp), str(path))
    except OSError:
        # The first save (nothing to swap with yet), or no RENAME_EXCHANGE here.
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) if missing, with root-only permissions on the new leaf."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def containers_dir(root: Path) -> Path:
    """Directory holding one sub-directory per container."""
    return root / "containers"


def layers_dir(root: Path) -> Path:
    """Directory holding the unpacked layers."""
    return root / "layers"


def images_dir(root: Path) -> Path:
    """Directory holding the image records."""
    return root / "images"


def tmp_dir(root: Path) -> Path:
    """Staging directory for atomic publishes."""
    return root / "tmp"


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock(2) on ``directory/.lock`` for the duration (the directory is made,
    root-only, if missing): one writer at a time over the records kept there."""
    base = ensure_dir(directory, 0o700)
    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
