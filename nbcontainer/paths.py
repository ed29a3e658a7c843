"""Where nbcontainer keeps its state on disk: the store root and its fixed sub-directories.

Layout (all root-only)::

    <root>/layers/<sha256>/       image layers, content-addressed (images package)
    <root>/images/                image records (images package)
    <root>/containers/<id>/       one container: state.json, upper/, work/, log (runtime package)
    <root>/tmp/                   staging for atomic publishes; cleaned by gc
    <root>/userns/ranges.json     user namespace id ranges leased to containers (runtime.userns)

The root is ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

DEFAULT_ROOT = "/var/lib/nbcontainer"
#: Run directories of container kernels (the relay's connection files): <tmp>/nbck-<pid>-*.
KERNEL_RUNDIR_PREFIX = "nbck-"


def store_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the store root: the argument, else ``$NBCONTAINER_ROOT``, else the default."""
    return Path(root or os.environ.get("NBCONTAINER_ROOT") or DEFAULT_ROOT)


def machine_records(kind: str) -> Path:
    """Where records of a machine-wide resource live, shared by every store on the machine:
    ``networks`` (the bridges' address leases), ``userns`` (subordinate id ranges).

    Two stores (a user's, a test's, each hub user's) share one machine's bridges and host ids,
    so they must share the leases too: ``/var/lib/nbcontainer/<kind>``, or
    ``$NBCONTAINER_<KIND>`` (a test that plays the host in namespaces of its own).
    """
    return Path(os.environ.get(f"NBCONTAINER_{kind.upper()}") or f"{DEFAULT_ROOT}/{kind}")


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
