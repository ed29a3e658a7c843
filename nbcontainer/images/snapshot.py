"""Turn a directory in overlay-upper form into a stored layer: what RUN, COPY and commit share.

The tree is written as a layer tar (:func:`write_layer_tar`: whiteouts and opaque directories
back in OCI form) and that tar is streamed, through a pipe, into :func:`extract_layer` in a
staging directory, which is then published. Going through the tar rather than copying the tree
keeps one invariant for every layer in the store, however it was made: the stored tree is what
the safe extractor makes of the layer's tar, and the layer's name is that tar's sha256. So a
container cannot smuggle into a layer what an import would refuse (a device node, an overlay
``redirect`` or ``origin`` xattr), and ``save`` reproduces the same diff_id.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from nbcontainer.errors import ImageError
from nbcontainer.images.extract import ExtractLimits, extract_layer
from nbcontainer.images.layertar import TarSummary, write_layer_tar
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
