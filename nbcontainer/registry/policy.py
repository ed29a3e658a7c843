"""``--pull missing|always|never``: whether a container's image is pulled before it starts.

Kept apart from :mod:`nbcontainer.registry.pull` so that a container whose image is a built-in
or already stored does not import the HTTP client at all.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nbcontainer.errors import ImageNotFoundError, RegistryError
from nbcontainer.images.store import ImageStore
from nbcontainer.reference import parse

if TYPE_CHECKING:
    from nbcontainer.registry.progress import Progress
    from nbcontainer.registry.pull import PullResult

#: Names that are never pulled implicitly: the built-ins (``busybox`` is made from the host's
#: busybox-static) and ``none``; ``nbcontainer pull busybox`` still pulls Docker Hub's.
NEVER_PULLED = frozenset({"host", "scratch", "none", "busybox", "host:latest", "scratch:latest",
                          "busybox:latest"})


def stored_name(name: str) -> str:
    """The store's key for a reference in any spelling: ``docker.io/library/python`` is
    ``python:latest``, ``x@sha256:...`` stays pinned to its digest."""
    ref = parse(name)
    if ref.digest:
        return f"{ref.familiar_name}@{ref.digest}"
    return f"{ref.familiar_name}:{ref.tag}"


def present(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True if ``name`` is in the store, under the name given or its normalised form."""
    store = ImageStore(root)
    return store.find_image(name) is not None or store.find_image(stored_name(name)) is not None


def ensure_image(name: str, policy: str = "missing", platform: str | None = None,
                 root: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None) -> PullResult | None:
    """Apply ``--pull`` before a container starts; return the pull's result if one ran.

    ``missing`` pulls a registry reference that is not in the store, ``always`` pulls it every
    time (one manifest request when nothing changed), ``never`` refuses a missing one. The
    built-ins, ``none`` and image ids are never pulled.
    """
    if name in NEVER_PULLED or name.startswith("sha256:"):
        return None
    if policy != "always" and present(name, root):
        return None
    if policy == "never":
        raise ImageNotFoundError(f"image {name!r} is not in the store and --pull never forbids "
                                 f"pulling it; run `nbcontainer pull {name}` first, or use "
                                 "--pull missing")
    from nbcontainer.registry.progress import LineProgress
    from nbcontainer.registry.pull import pull

    try:
        return pull(name, platform=platform, root=root, progress=progress or LineProgress())
    except RegistryError as err:
        if "NBCONTAINER_REGISTRY_ALLOW" in str(err):
            # A name that is neither stored nor allowed to be pulled: say both.
            raise ImageNotFoundError(
                f"image {name!r} not found in the store; built-in images are host, busybox and "
                f"scratch (not pulled: {err})") from err
        raise
