"""Turn a directory in overlay-upper form into a stored layer: what RUN, COPY and commit share.

The tree is written as a layer tar (:func:`write_layer_tar`: whiteouts and opaque directories
back in OCI form) and that tar is streamed, through a pipe, into :func:`extract_layer` in a
staging directory, which is then published. Going through the tar rather than copying the tree
keeps one invariant for every layer in the store, however it was made: the stored tree is what
the safe extractor makes of the layer's tar, and the layer's name is that tar's sha256. So a
container cannot smuggle into a layer what an import would refuse (a device node, an overlay
``redirect`` or ``origin`` xattr), and ``save`` reproduces the same diff_id.

:func:`adopt_tree` keeps that invariant without the second copy, for a tree nothing writes to
any more (a stopped container's upper directory): the tar is only hashed, and the walk that
hashes it also lists what differs between the tree and what the extractor would make of the
tar (an :class:`~nbcontainer.images.layertar.AdoptPlan`). The tree is then renamed into the
store and those differences are undone in place, so the stored tree and the diff_id are the
ones :func:`publish_tree` would have made.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from nbcontainer.errors import ImageError
from nbcontainer.images.extract import ExtractLimits, extract_layer
from nbcontainer.images.layertar import AdoptPlan, TarSummary, write_layer_tar
from nbcontainer.images.store import ImageStore, LayerMeta, now_iso

if TYPE_CHECKING:
    from nbcontainer.images.store import ImageRecord

_PIPE_BUFFER = 1 << 20


def publish_tree(store: ImageStore, src: str | os.PathLike[str], created_by: str,
                 limits: ExtractLimits | None = None,
                 unmap: tuple[int, int, int] | None = None) -> LayerMeta | None:
    """Store the tree at ``src`` as a layer; return its meta, or None when the tree is empty.

    ``src`` may be live (a running container's upper directory): the writer never follows a
    link and reads each file through an ``O_NOFOLLOW`` descriptor. The caller holds the store's
    shared lock so the layer cannot be collected before an image names it. ``unmap``: see
    :func:`write_layer_tar` (a user namespace container's upper layer).
    """
    with store.staging("layer") as stage:
        fs = stage / "fs"
        fs.mkdir(mode=0o755)
        rfd, wfd = os.pipe()
        summary: list[TarSummary] = []
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with open(wfd, "wb", buffering=_PIPE_BUFFER) as sink:
                    summary.append(write_layer_tar(src, sink, unmap))
            except BrokenPipeError:
                pass  # the extractor stopped early and says why
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                failure.append(err)

        writer = threading.Thread(target=produce, name="layer-tar", daemon=True)
        writer.start()
        try:
            with open(rfd, "rb", buffering=_PIPE_BUFFER) as source:
                result = extract_layer(source, fs, limits)
        except ImageError:
            if failure:
                raise _read_error(src, failure[0]) from failure[0]
            raise
        finally:
            writer.join()
        if failure:
            raise _read_error(src, failure[0]) from failure[0]
        if not summary or summary[0].diff_id != result.diff_id:
            raise ImageError(f"the layer stream of {src} was cut short; nothing was stored")
        if result.entries == 0:
            return None
        meta = LayerMeta(result.diff_id, summary[0].content_size, summary[0].tar_size,
                         created_by, now_iso())
        if not store.has_layer(meta.diff_id):
            store.publish_layer(stage, meta)
        return store.layer_meta(meta.diff_id) if store.has_layer(meta.diff_id) else meta


class CannotAdopt(Exception):
    """The tree cannot become a layer by a rename (the message says why); copy it instead."""


def adopt_tree(store: ImageStore, src: Path, created_by: str,
               unmap: tuple[int, int, int] | None = None) -> tuple[LayerMeta | None, bool]:
    """Make the tree at ``src`` a stored layer by moving it there; return (meta, moved).

    Only for a tree nothing changes meanwhile (a stopped container's upper directory). The
    result is what :func:`publish_tree` would store: same diff_id, same tree (sub-second
    mtimes, which a tar does not carry, are kept). ``(None, False)``: the tree is empty.
    ``moved`` False: the store has that layer already and ``src`` stays as it is. When
    ``moved``, ``src`` is gone (the caller gives the container a new, empty one).

    Raises
    ------
    CannotAdopt
        Before anything was changed, when the tree holds what only the copy can turn into a
        layer (a ``.wh.*`` name) or lies on another filesystem than the store.
    """
    plan = AdoptPlan()
    summary = write_layer_tar(src, None, unmap, plan)
    if plan.refuse:
        raise CannotAdopt(plan.refuse)
    if summary.entries == 0:
        return None, False
    meta = LayerMeta(summary.diff_id, summary.content_size, summary.tar_size, created_by,
                     now_iso())
    if store.has_layer(meta.diff_id):
        return store.layer_meta(meta.diff_id), False
    with store.staging("adopt") as stage:
        fs = stage / "fs"
        try:
            os.rename(src, fs)
        except OSError as err:
            if err.errno == errno.EXDEV:
                raise CannotAdopt(f"{src} is on another filesystem than the store") from err
            raise ImageError(f"cannot move {src} into the image store: {err}") from err
        try:
            apply_plan(fs, plan)
        except OSError as err:
            os.rename(fs, src)  # back to the container, with the changes made so far
            raise ImageError(f"cannot make {src} a layer in place: {err}") from err
        store.publish_layer(stage, meta)  # a twin published meanwhile: same content, ours goes
    return store.layer_meta(meta.diff_id), True


def apply_plan(root: Path, plan: AdoptPlan) -> None:
    """Change the tree at ``root`` as ``plan`` says (see :class:`AdoptPlan`), never following
    a symlink: the entries are named below ``root``'s fd, their last component not followed."""
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        def path(rel: str) -> str:
            return f"/proc/self/fd/{rfd}/{rel}"

        for rel, names in plan.strip:
            for name in names:
                try:
                    if rel:
                        os.removexattr(path(rel), name, follow_symlinks=False)
                    else:  # the root: its fd (the magic link itself has no xattrs)
                        os.removexattr(rfd, name)
                except OSError as err:
                    if err.errno != errno.ENODATA:
                        raise
        for rel, uid, gid, mode, caps in plan.chown:
            os.chown(path(rel), uid, gid, follow_symlinks=False)
            if mode >= 0:  # what chown(2) cleared on a regular file; a whiteout's mode
                os.chmod(path(rel), mode)  # (neither is a symlink: nothing to follow)
            if caps is not None:
                os.setxattr(path(rel), "security.capability", caps, follow_symlinks=False)
        for rel in plan.drop:
            os.unlink(path(rel))
        for rel, mtime in plan.dir_mtimes.items():
            if rel:  # (the root's own mtime is nobody's: the tar has no entry for it)
                os.utime(path(rel), ns=(mtime, mtime), follow_symlinks=False)
        # the tar has no entry for the root: the extractor's is a fresh 0755 root directory
        os.fchown(rfd, 0, 0)
        os.fchmod(rfd, 0o755)
    finally:
        os.close(rfd)


def _read_error(src: str | os.PathLike[str], err: BaseException) -> ImageError:
    return ImageError(f"cannot read {src} to make a layer: {err}")


def image_id(record: ImageRecord) -> str:
    """The image id: sha256 of its canonical OCI config, as Docker computes it."""
    from nbcontainer.images.oci import oci_config

    doc = oci_config(record, list(record.layers))
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_dirs(store: ImageStore, record: ImageRecord) -> list[Path]:
    """The unpacked trees of a record's layers, bottom first."""
    return [store.layer_fs(d) for d in record.layers]
