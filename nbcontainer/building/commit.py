"""``commit``: a container's upper directory becomes a new layer on top of its image.

The upper directory is everything the container changed, in overlay's form: whiteouts are 0/0
character devices, a replaced directory is marked opaque. :func:`publish_tree` writes it as an
OCI layer tar (``.wh.`` entries again) and stores what the safe extractor makes of that tar, so
owners, modes, xattrs, hardlinks and symlinks survive and the new image mounts, exports and
re-imports like any other. A running container is frozen (cgroup freezer) while its upper
directory is read, as ``docker commit`` pauses by default: a process writing mid-way would give
a layer that never existed as a whole.

A stopped container's upper directory is not copied: nothing writes to it any more, so
:func:`adopt_tree` hashes its tar without writing one and renames the directory into the store
as the new layer (same tree, same diff_id as the copy). The container keeps what it saw: its
record then lists the new layer above its image's and it gets a new, empty upper directory, so
``rm``, ``ps -a`` and a second ``commit`` (which carries the layers committed before) behave as
if nothing had moved. A tree the rename cannot take as it is (a file named ``.wh.*``, which the
tar turns into a whiteout; a store on another filesystem) is copied as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nbcontainer._records import replace
from nbcontainer.errors import ContainerStateError, ImageError, UsageError
from nbcontainer.images.builtin import base_record
from nbcontainer.images.snapshot import CannotAdopt, adopt_tree, image_id, publish_tree
from nbcontainer.images.store import (
    BUILTIN_NAMES,
    HistoryEntry,
    ImageRecord,
    ImageStore,
    LayerMeta,
    hex_of,
    now_iso,
    parse_reference,
)
from nbcontainer.paths import store_root
from nbcontainer.progress import Progress, or_silent

if TYPE_CHECKING:
    from nbcontainer.runtime.state import ContainerState

_HEX64 = re.compile(r"[0-9a-f]{64}")


def commit(container_ref: str, image_name: str, root: str | os.PathLike[str] | None = None,
           message: str | None = None, pause: bool = True,
           progress: Progress | None = None) -> ImageRecord:
    """Store container ``container_ref``'s changes as image ``image_name``.

    Parameters
    ----------
    container_ref
        Name, id or unique id prefix of a container, running or stopped (it must still exist:
        a named or ``keep`` container).
    image_name
        ``name[:tag]`` for the new image.
    root
        Store root; default ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``.
    message
        Kept as the history entry's comment (``docker commit -m``).
    pause
        Freeze a running container while its changes are read (default, as Docker).
    progress
        Where reading the changes into a layer is shown (one task).

    Returns
    -------
    ImageRecord
        The new image: the container's image's layers and config, plus one layer (none when
        the container changed nothing, recorded as an empty history step).
    """
    from nbcontainer.runtime import state as state_mod
    from nbcontainer.runtime.container import require_root

    repo, tag = parse_reference(image_name)
    if repo in BUILTIN_NAMES:
        raise UsageError(f"{repo} is a built-in image name; commit under another name")
    require_root()
    root_path = store_root(root)
    st = state_mod.find(root_path, container_ref)
    if st.image == "none":
        raise UsageError(f"container {st.short} runs on the host's / (--image none): it has no "
                         "filesystem of its own to commit")
    cdir = state_mod.container_path(root_path, st.id)
    upper = cdir / "upper"
    store = ImageStore(root_path)
    with store.lock(), _commit_lock(cdir):
        st = state_mod.load(root_path, st.id)  # as the commit before ours may have left it
        base = base_record(st.image, store, f"commit {st.short}")
        earlier = _earlier_layers(st.short, st.image, st.layers, base, store)
        if not upper.is_dir():
            raise ImageError(f"container {st.short} has no upper directory at {upper}")
        created_by = shlex.join(st.command) if st.command else "(no command)"
        task = or_silent(progress).task(f"changes of {st.name or st.short}")
        # a user namespace container's files belong to its host id range: record the ids
        # they have inside
        idmap = st.userns
        unmap = None if not idmap else (idmap["uid"], idmap["gid"], idmap["size"])
        try:
            if st.status == "exited" and not st.is_running():
                layer = _adopt(store, st, root_path, upper, created_by, unmap)
            else:
                with _frozen(st, root_path, pause):
                    layer = publish_tree(store, upper, created_by, unmap=unmap)
        except BaseException:
            task.fail("not stored")
            raise
        if layer is None:
            task.finish("no changes: an empty history step")
        else:
            task.finish(f"layer {layer.diff_id.removeprefix('sha256:')[:12]}", total=layer.size)
        entry = HistoryEntry(created=now_iso(), created_by=created_by,
                             empty_layer=layer is None, size=layer.size if layer else 0,
                             comment=message or "")
        before = [HistoryEntry(created=m.created, created_by=m.created_by, size=m.size,
                               comment="committed before") for m in earlier]
        record = replace(
            base, name=repo, tag=tag, id="", created=entry.created,
            layers=base.layers + [m.diff_id for m in earlier] + ([layer.diff_id] if layer else []),
            history=[*base.history, *before, entry], source=f"commit of container {st.short}")
        record.id = image_id(record)
        store.put_image(record)
    return record


def _adopt(store: ImageStore, st: ContainerState, root: Path, upper: Path, created_by: str,
           unmap: tuple[int, int, int] | None) -> LayerMeta | None:
    """A stopped container: its upper directory becomes the layer (no copy); the container
    then runs on that layer with a new, empty upper directory. Copies when it cannot move."""
    from nbcontainer.runtime import state as state_mod

    try:
        layer, moved = adopt_tree(store, upper, created_by, unmap)
    except CannotAdopt:
        return publish_tree(store, upper, created_by, unmap=unmap)
    if moved:
        assert layer is not None
        # A crash from here to the saved record (three syscalls) would leave the layer
        # unreferenced and the container without an upper directory (docs/images.md).
        upper.mkdir(mode=0o755)
        if st.userns:
            os.chown(upper, st.userns["uid"], st.userns["gid"])
        st.layers = [*st.layers, str(store.layer_fs(layer.diff_id))]
        state_mod.save(root, st)
    return layer


@contextlib.contextmanager
def _commit_lock(cdir: Path) -> Iterator[None]:
    """One commit of a container at a time (a second one waits, then sees the first's move)."""
    fd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _earlier_layers(short: str, image: str, mounted: list[str], base: ImageRecord,
                    store: ImageStore) -> list[LayerMeta]:
    """The layers earlier commits moved out of the container (above its image's layers).

    Refuses when ``image`` now names other layers than the container was started on.
    """
    used = [m.group(0) for m in (_HEX64.search(Path(p).parent.name) for p in mounted) if m]
    own = [hex_of(d) for d in base.layers]
    if used[:len(own)] != own:
        raise ImageError(f"image {image} has changed since container {short} was created from "
                         "it (rebuilt or re-imported), so its changes cannot be put on top of it; "
                         "commit a container of the current image")
    return [store.layer_meta("sha256:" + h) for h in used[len(own):]]


@contextlib.contextmanager
def _frozen(st: ContainerState, root: Path, pause: bool) -> Iterator[None]:
    """Freeze the container for the duration if it runs (a paused one stays paused)."""
    from nbcontainer.runtime import manage

    if not pause or st.status == "paused" or not st.is_running():
        yield
        return
    manage.pause(st.id, root=root)
    try:
        yield
    finally:
        with contextlib.suppress(ContainerStateError):  # it ended meanwhile: nothing to thaw
            manage.unpause(st.id, root=root)
