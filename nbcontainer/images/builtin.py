"""The built-in images: ``host`` (the host's ``/``), ``busybox`` (host busybox-static), ``scratch``.

busybox is a real store image, made on first use; host and scratch need no layers.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from nbcontainer._records import field, record
from nbcontainer.errors import FeatureMissingError, ImageError, ImageNotFoundError

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from nbcontainer.images.store import ImageRecord, ImageStore

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
BUSYBOX_LABEL = "org.nbcontainer.busybox.sha256"


@record(frozen=True)
class ImageConfig:
    """The runtime config of an image (OCI image config, the part a container uses)."""

    env: tuple[tuple[str, str], ...] = (("PATH", DEFAULT_PATH),)
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    workdir: str = "/"
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@record(frozen=True)
class ResolvedImage:
    """An image ready to mount: layer directories bottom first, and its config."""

    name: str
    layers: tuple[str, ...] = ()
    config: ImageConfig = field(default_factory=ImageConfig)
    id: str = ""


def split_name(name: str) -> tuple[str, str]:
    """Split ``name[:tag]`` into (name, tag), the tag defaulting to ``latest``."""
    base, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return base, tag


def resolve(name: str, root: str | os.PathLike[str] | None = None) -> ResolvedImage:
    """Resolve an image name to its layers and config; raise ImageNotFoundError if unknown.

    Order: the built-ins ``host`` and ``scratch``; then the store (``name[:tag]``, default tag
    ``latest``); then ``busybox``, which is materialised into the store on first use. An image
    id ``sha256:<64 hex>`` names an image by content, tagged or not (a build's steps run that
    way, so each RUN sees the layers of the steps before it).
    """
    base, tag = split_name(name)
    if base == "host" and tag == "latest":
        return ResolvedImage("host:latest", ("/",), ImageConfig(cmd=("/bin/sh",)))
    if base == "scratch" and tag == "latest":
        return ResolvedImage("scratch:latest", (), ImageConfig(env=(("PATH", DEFAULT_PATH),)))
    from nbcontainer.images.store import ImageStore

    store = ImageStore(root)
    if is_image_id(name):
        by_id = store.find_by_id(name)
        if by_id is None:
            raise ImageNotFoundError(f"no image with id {name} in the store (its layers may "
                                     "have been removed by `nbcontainer gc`)")
        return to_resolved(by_id, store)
    record = store.find_image(name) or _find_normalised(store, name)
    if record is None and base == "busybox" and tag == "latest":
        record = ensure_busybox(store)
    if record is None:
        known = ", ".join(r.ref for r in store.list_images())
        raise ImageNotFoundError(
            f"image {name!r} not found; built-in images are host, busybox and scratch"
            + (f", stored images are {known}" if known else "")
            + " (see `nbcontainer images`, or add one with `nbcontainer import`)"
        )
    return to_resolved(record, store)


def _find_normalised(store: ImageStore, name: str) -> ImageRecord | None:
    """A pulled image named in another spelling (``docker.io/library/python:3.12`` is stored
    as ``python:3.12``; ``x@sha256:...`` by its manifest digest)."""
    from nbcontainer.errors import UsageError
    from nbcontainer.reference import parse

    try:
        ref = parse(name)
    except UsageError:
        return None
    if ref.digest:
        return store.find_image(f"{ref.familiar_name}@{ref.digest}")
    return store.find_image(f"{ref.familiar_name}:{ref.tag}")


def to_resolved(record: ImageRecord, store: ImageStore) -> ResolvedImage:
    """Turn a store record into what the runtime mounts: layer trees bottom first + config."""
    env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "") for e in record.env)
    if not any(k == "PATH" for k, _ in env):
        env = (("PATH", DEFAULT_PATH), *env)
    config = ImageConfig(env=env, cmd=tuple(record.cmd),  # type: ignore[arg-type]
                         entrypoint=tuple(record.entrypoint), workdir=record.workdir or "/",
                         user=record.user, labels=tuple(sorted(record.labels.items())))
    layers = tuple(str(store.layer_fs(d)) for d in record.layers)
    return ResolvedImage(record.ref, layers, config, id=record.id)


def is_image_id(name: str) -> bool:
    """True for ``sha256:<64 lowercase hex>``, an image named by its id."""
    return (len(name) == 71 and name.startswith("sha256:")
            and all(c in "0123456789abcdef" for c in name[7:]))


def stored_record(name: str, store: ImageStore) -> ImageRecord:
    """The store record for ``name`` (busybox is built on demand); host/scratch are not stored."""
    base, tag = split_name(name)
    if base in ("host", "scratch") and tag == "latest":
        raise ImageError(f"{base} is a built-in image with no stored layers; it cannot be saved")
    if is_image_id(name):
        by_id = store.find_by_id(name)
        if by_id is None:
            raise ImageNotFoundError(f"no image with id {name} in the store")
        return by_id
    record = store.find_image(name) or _find_normalised(store, name)
    if record is None and base == "busybox" and tag == "latest":
        record = ensure_busybox(store)
    return record if record is not None else store.get_image(name)


def base_record(name: str, store: ImageStore, purpose: str) -> ImageRecord:
    """The record an image derives from (``FROM``, ``commit``): stored, busybox, id or scratch.

    ``host`` is refused: it is the live host's ``/``, not a set of stored layers, so an image on
    top of it could be neither reproduced nor saved, and would change whenever the host does.
    """
    from nbcontainer.images.store import ImageRecord

    base, tag = split_name(name)
    if base == "host" and tag == "latest":
        raise ImageError(
            f"{purpose}: the host image cannot be a base: it is the live host's root filesystem, "
            "not stored layers, so the result would be neither reproducible nor exportable; use "
            "busybox, scratch or an imported image")
    if base == "scratch" and tag == "latest":
        return ImageRecord(name="scratch", tag="latest", id="", layers=[],
                           env=[f"PATH={DEFAULT_PATH}"])
    return stored_record(name, store)


def find_busybox() -> str:
    """Path of the host's static busybox binary, or a FeatureMissingError saying how to get it."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FeatureMissingError(
        "the busybox image needs the host's static busybox binary, which is missing; "
        "install it with `apt-get install busybox-static`"
    )


def ensure_busybox(store: ImageStore) -> ImageRecord:
    """Return the ``busybox:latest`` store image, building it once from the host binary.

    The layer tree is normalised (owner root, fixed mtimes) so the same binary always gives the
    same diff_id, and a rebuilt store reuses the layer. A record made from another busybox
    binary (label ``org.nbcontainer.busybox.sha256``) is replaced; an imported busybox is kept.
    """
    import hashlib  # here: resolving an image made before needs no digest (nor OpenSSL)

    from nbcontainer.images.layertar import write_layer_tar
    from nbcontainer.images.store import HistoryEntry, ImageRecord, LayerMeta, now_iso

    binary = find_busybox()
    with open(binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with store.lock():
        record = store.find_image("busybox:latest")
        if record is not None and record.labels.get(BUSYBOX_LABEL, digest) == digest:
            return record
        created_by = f"nbcontainer: busybox from the host's {binary} (sha256 {digest[:12]})"
        with store.staging("busybox") as stage:
            fs = stage / "fs"
            _populate_busybox(fs, binary)
            mtime = int(os.stat(binary).st_mtime)
            for dirpath, dirnames, filenames in os.walk(fs):
                for entry in (*dirnames, *filenames):
                    os.utime(os.path.join(dirpath, entry), (mtime, mtime), follow_symlinks=False)
            os.utime(fs, (mtime, mtime))
            summary = write_layer_tar(fs, None)
            meta = LayerMeta(summary.diff_id, summary.content_size, summary.tar_size, created_by,
                             now_iso())
            if not store.has_layer(summary.diff_id):
                store.publish_layer(stage, meta)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
        record = ImageRecord(
            name="busybox", tag="latest", id="sha256:" + hashlib.sha256(
                f"{summary.diff_id} {digest}".encode()).hexdigest(),
            layers=[summary.diff_id], env=[f"PATH={DEFAULT_PATH}"], cmd=["sh"],
            labels={BUSYBOX_LABEL: digest}, created=created, source=f"built-in from {binary}",
            history=[HistoryEntry(created=created, created_by=created_by,
                                  size=summary.content_size)],
        )
        store.put_image(record)
    return record


def _populate_busybox(root: Path, binary: str) -> None:
    """Lay out a minimal busybox root: the binary, one symlink per applet, /etc basics."""
    root.mkdir(mode=0o755)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "var", "home", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(binary, root / "bin" / "busybox")
    import subprocess

    listing = subprocess.run([binary, "--list-full"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("busybox\n")
