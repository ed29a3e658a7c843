"""The content-addressed image store: layers kept once, images as small JSON records.

Layout under the store root (see :mod:`nbcontainer.paths`)::

    layers/<hex diff_id>/fs/          the unpacked layer (an overlay lower directory)
    layers/<hex diff_id>/meta.json    {diff_id, size, tar_size, created_by, created}
    images/<quoted name:tag>.json     an ImageRecord
    tmp/<token>/ + tmp/<token>.lock   staging for one publish; its owner holds the lock
    images.lock                       flock(2): shared while importing, exclusive to delete
    states/<hex image id>.json        untagged images by id: the steps of builds (``resolve``
                                      takes ``sha256:<id>``, so each RUN sees the steps before)
    buildcache/<hex key>              the build cache: key (parent id + instruction) -> image id

Why this locking: publishing never needs mutual exclusion between writers, because each
step is one atomic rename (a layer directory; an image record via os.replace) and two imports of
the same layer simply keep the first rename's result. Only deleting (rmi, gc) could pull a layer
from under an import that is about to reference it, so importers hold the lock shared for their
whole run and deleters take it exclusively. Builds hold it shared too, so a step's layer cannot
vanish before the final image names it. States and cache entries never keep a layer alive: once
no image or container uses a layer, ``gc``/``rmi`` delete it, and then the states naming it and
the cache entries leading to them. Staging directories carry their own lock, held by
their owner, so gc can tell an abandoned one (owner crashed: the lock is free) from a live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from nbcontainer._records import asdict, field, record
from nbcontainer.errors import ImageError, ImageNotFoundError, UsageError
from nbcontainer.paths import (
    containers_dir,
    ensure_dir,
    images_dir,
    layers_dir,
    store_root,
    tmp_dir,
)

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any

BUILTIN_NAMES = ("host", "scratch")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
STALE_UNLOCKED_SECONDS = 3600


def parse_reference(ref: str) -> tuple[str, str]:
    """Validate ``name[:tag]`` (Docker's grammar, no digests) and return (name, tag)."""
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
    first, _, rest = name.partition("/")
    ok_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
    body = rest if ok_host else name
    if not (_NAME_RE.fullmatch(body) and (not ok_host or _HOST_RE.fullmatch(first))
            and _TAG_RE.fullmatch(tag)) or len(name) > 255:
        raise UsageError(
            f"invalid image name {ref!r}: use lowercase letters, digits and . _ - / for the name, "
            "and an optional :tag of letters, digits, . _ - (e.g. `myimage:v1`)"
        )
    return name, tag


def hex_of(diff_id: str) -> str:
    """The 64 hex digits of a ``sha256:`` digest, or an ImageError."""
    algo, _, hexdigest = diff_id.partition(":")
    if algo != "sha256" or not _HEX64.fullmatch(hexdigest):
        raise ImageError(f"unsupported or malformed digest {diff_id!r}; expected sha256:<64 hex>")
    return hexdigest


@record
class HistoryEntry:
    """One step of an image's history, as `history` shows it (OCI config history + size)."""

    created: str = ""
    created_by: str = ""
    empty_layer: bool = False
    size: int = 0
    comment: str = ""


@record
class LayerMeta:
    """The small facts kept beside a layer's tree."""

    diff_id: str
    size: int
    tar_size: int = 0
    created_by: str = ""
    created: str = ""


@record
class ImageRecord:
    """An image: ordered layers (bottom first), runtime config and history."""

    name: str
    tag: str
    id: str
    layers: list[str]
    env: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    created: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    source: str = ""
    #: The registry manifest's digest (``sha256:...``) when pulled; "" otherwise.
    digest: str = ""
    #: Where it was pulled from, fully qualified (``docker.io/library/python:3.12``).
    reference: str = ""

    @property
    def ref(self) -> str:
        """``name:tag``, or ``name@sha256:...`` for an image pulled by digest alone."""
        return f"{self.name}:{self.tag}" if self.tag else f"{self.name}@{self.digest}"

    def to_json(self) -> str:
        return json.dumps({"schema": 1, **asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageRecord:
        data: dict[str, Any] = json.loads(text)
        data.pop("schema", None)
        data["history"] = [HistoryEntry(**h) for h in data.get("history", [])]
        return cls(**data)


def now_iso() -> str:
    """UTC timestamp in the RFC 3339 form OCI configs use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def layers_in_use(root: str | os.PathLike[str] | None = None) -> set[str]:
    """Hex diff_ids of layers that containers use, from ``containers/*/state.json``.

    The runtime records each container's layer list there (paths or diff_ids: anything with the
    64-hex id in it counts), so a layer stays while a container, even a stopped one, needs it.
    """
    used: set[str] = set()
    cdir = containers_dir(store_root(root))
    if not cdir.is_dir():
        return used
    for state in cdir.glob("*/state.json"):
        try:
            layers = json.loads(state.read_text()).get("layers") or []
        except (OSError, ValueError, AttributeError):
            continue
        for item in layers:
            used.update(_HEX64.findall(str(item)))
    return used


class ImageStore:
    """Operations on one store root; cheap to create, holds no open files between calls."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = store_root(root)
        self.layers = layers_dir(self.root)
        self.images = images_dir(self.root)
        self.tmp = tmp_dir(self.root)
        self.states = self.root / "states"
        self.cache = self.root / "buildcache"

    def _ensure(self) -> None:
        for d in (self.root, self.layers, self.images, self.tmp):
            ensure_dir(d)

    @contextlib.contextmanager
    def lock(self, exclusive: bool = False) -> Iterator[None]:
        """Hold the store lock: shared for importers/builders/resolvers, exclusive to delete."""
        self._ensure()
        fd = os.open(self.root / "images.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, label: str = "import") -> Iterator[Path]:
        """A private directory under tmp/, removed on exit; gc knows it is live by its lock."""
        self._ensure()
        token = f"{label}-{os.getpid()}-{os.urandom(6).hex()}"
        lock_path = self.tmp / f"{token}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.tmp / token
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                lock_path.unlink()
            os.close(fd)

    # layers -----------------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> Path:
        return self.layers / hex_of(diff_id)

    def layer_fs(self, diff_id: str) -> Path:
        """The unpacked tree of a layer: what overlay gets as a lower directory."""
        return self.layer_path(diff_id) / "fs"

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_path(diff_id) / "meta.json").is_file()

    def layer_meta(self, diff_id: str) -> LayerMeta:
        try:
            return LayerMeta(**json.loads((self.layer_path(diff_id) / "meta.json").read_text()))
        except FileNotFoundError as err:
            raise ImageError(f"layer {diff_id} is missing from the store; run `nbcontainer gc` "
                             "and re-import the image") from err

    def publish_layer(self, staged: Path, meta: LayerMeta) -> Path:
        """Move ``staged`` (holding ``fs/``) into place as layer ``meta.diff_id``; atomic.

        If another import published the same layer first, ours is discarded: same diff_id,
        same content.
        """
        (staged / "meta.json").write_text(json.dumps(asdict(meta), indent=1))
        os.chmod(staged, 0o700)
        target = self.layer_path(meta.diff_id)
        try:
            os.rename(staged, target)
        except OSError as err:
            if not self.has_layer(meta.diff_id):
                raise ImageError(f"cannot publish layer {meta.diff_id}: {err}") from err
        return target

    # images -----------------------------------------------------------------------------
    def _record_path(self, name: str, tag: str) -> Path:
        """``name:tag``'s record; ``tag`` ``@sha256:...`` is a by-digest record's key."""
        sep = "" if tag.startswith("@") else ":"
        return self.images / (quote(f"{name}{sep}{tag}", safe="") + ".json")

    def put_image(self, record: ImageRecord) -> None:
        """Write (or replace) an image record atomically; its layers must be in the store."""
        for diff_id in record.layers:
            if not self.has_layer(diff_id):
                raise ImageError(f"image {record.ref} names layer {diff_id}, not in the store")
        self._ensure()
        path = self._record_path(record.name, record.tag or f"@{record.digest}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)

    def find_image(self, ref: str) -> ImageRecord | None:
        """The record for ``name[:tag]`` or ``name[:tag]@digest``, or None.

        A digest matches the manifest digest of a pulled image of that name, whatever its tag.
        """
        if "@" in ref:
            name, digest = _split(ref.split("@", 1)[0])[0], ref.split("@", 1)[1]
            return next((r for r in self.list_images()
                         if r.name == name and r.digest == digest), None)
        name, tag = _split(ref)
        try:
            return ImageRecord.from_json(self._record_path(name, tag).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise ImageError(f"image record for {name}:{tag} is corrupt: {err}") from err

    def get_image(self, ref: str) -> ImageRecord:
        """The record for ``name[:tag]``, or ImageNotFoundError naming what exists."""
        record = self.find_image(ref)
        if record is None:
            known = ", ".join(r.ref for r in self.list_images()) or "none"
            raise ImageNotFoundError(f"image {ref!r} not found in the store (stored: {known}; "
                                     "built-ins: host, busybox, scratch)")
        return record

    def list_images(self) -> list[ImageRecord]:
        out: list[ImageRecord] = []
        try:
            # listdir, not glob: an unreadable store (not root) must be an error saying so,
            # not an empty list.
            names = sorted(os.listdir(self.images))
        except FileNotFoundError:
            return out
        for name in names:
            path = self.images / name
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                out.append(ImageRecord.from_json(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
        return out

    # states and the build cache -------------------------------------------------------------
    def put_state(self, record: ImageRecord) -> None:
        """Keep an untagged image under its id (a build step), atomically."""
        for diff_id in record.layers:
            if not self.has_layer(diff_id):
                raise ImageError(f"image {record.id} names layer {diff_id}, not in the store")
        ensure_dir(self.states)
        _write_atomic(self.states / f"{hex_of(record.id)}.json", record.to_json())

    def find_by_id(self, image_id: str) -> ImageRecord | None:
        """The image with this id: a build state, else a tagged image; None if neither.

        A state whose layers were deleted (``gc``) counts as missing.
        """
        path = self.states / f"{hex_of(image_id)}.json"
        try:
            record: ImageRecord | None = ImageRecord.from_json(path.read_text())
        except FileNotFoundError:
            record = next((r for r in self.list_images() if r.id == image_id), None)
        except (ValueError, TypeError):
            return None
        if record is None or not all(self.has_layer(d) for d in record.layers):
            return None
        return record

    def cache_get(self, key: str) -> ImageRecord | None:
        """The image a build step with this cache key made before, if all of it is still here."""
        try:
            image_id = (self.cache / key).read_text().strip()
            return self.find_by_id(image_id)
        except (OSError, ImageError):
            return None

    def cache_put(self, key: str, image_id: str) -> None:
        """Remember that the build step ``key`` made image ``image_id``."""
        ensure_dir(self.cache)
        _write_atomic(self.cache / key, image_id + "\n")

    def _drop_stale_states(self) -> list[str]:
        """Delete states whose layers are gone and cache entries leading nowhere."""
        removed: list[str] = []
        if self.states.is_dir():
            for path in self.states.glob("*.json"):
                try:
                    layers = ImageRecord.from_json(path.read_text()).layers
                    complete = all(self.has_layer(d) for d in layers)
                except (OSError, ValueError, TypeError, ImageError):
                    complete = False
                if not complete:
                    path.unlink(missing_ok=True)
                    removed.append(path.stem)
        if self.cache.is_dir():
            for path in self.cache.iterdir():
                try:
                    target = path.read_text().strip()
                    alive = (self.states / f"{hex_of(target)}.json").is_file() or any(
                        r.id == target for r in self.list_images())
                except (OSError, ImageError):
                    alive = False
                if not alive:
                    path.unlink(missing_ok=True)
        return removed

    def referenced_layers(self) -> set[str]:
        return {hex_of(d) for r in self.list_images() for d in r.layers}

    def remove_image(self, ref: str) -> list[str]:
        """Remove an image record, then every layer nothing else uses; return removed diff_ids."""
        return self.remove(ref)[1]

    def matching(self, ref: str) -> list[ImageRecord]:
        """The records ``ref`` names: ``name[:tag]``, ``name@digest``, or a bare
        ``sha256:<hex>`` that is an image id or a pulled manifest digest (all such records)."""
        if _HEX64.fullmatch(ref.removeprefix("sha256:")) and ref.startswith("sha256:"):
            found = [r for r in self.list_images() if ref in (r.id, r.digest)]
            if not found:
                raise ImageNotFoundError(f"no image with id or digest {ref} in the store (see "
                                         "`nbcontainer images`)")
            return found
        return [self.get_image(ref)]

    def remove(self, ref: str, force: bool = False) -> tuple[list[str], list[str]]:
        """Untag what ``ref`` names (see :meth:`matching`), then delete layers nothing uses.

        A digest or id naming several tagged images removes them all only with ``force``, as
        ``docker rmi -f`` does. Returns (untagged refs, removed diff_ids).
        """
        name, _tag = _split(ref)
        if name in BUILTIN_NAMES:
            raise ImageError(f"{name} is a built-in image and cannot be removed")
        with self.lock(exclusive=True):
            records = self.matching(ref)
            if len(records) > 1 and not force:
                refs = ", ".join(r.ref for r in records)
                raise ImageError(f"{ref} names {len(records)} images ({refs}); remove them by "
                                 "name, or all of them with `rmi -f`")
            for record in records:
                self._record_path(record.name, record.tag or f"@{record.digest}").unlink()
            removed = self._drop_unreferenced()
            self._drop_stale_states()
            return [r.ref for r in records], removed

    def _drop_unreferenced(self) -> list[str]:
        """Delete layers no image and no container uses (caller holds the exclusive lock)."""
        keep = self.referenced_layers() | layers_in_use(self.root)
        removed: list[str] = []
        if not self.layers.is_dir():
            return removed
        for entry in os.listdir(self.layers):
            if _HEX64.fullmatch(entry) and entry not in keep:
                self._delete_dir(self.layers / entry)
                removed.append("sha256:" + entry)
        return removed

    def _delete_dir(self, path: Path) -> None:
        """Rename out of sight first, so a crash mid-delete never leaves a half layer in place."""
        grave = self.tmp / f"deleted-{path.name}-{os.urandom(4).hex()}"
        os.rename(path, grave)
        shutil.rmtree(grave, ignore_errors=True)

    def gc(self) -> dict[str, list[str]]:
        """Remove unreferenced layers and staging left by crashed imports; report what went."""
        self._ensure()
        with self.lock(exclusive=True):
            stale = self._drop_stale_tmp()
            layers = self._drop_unreferenced()
            states = self._drop_stale_states()
        return {"layers": layers, "tmp": stale, "states": states}

    def _drop_stale_tmp(self) -> list[str]:
        removed: list[str] = []
        for entry in sorted(os.listdir(self.tmp)):
            path = self.tmp / entry
            if entry.endswith(".lock"):
                continue
            lock_path = self.tmp / f"{entry}.lock"
            if lock_path.exists():
                if _owner_alive(lock_path):
                    continue
            elif not entry.startswith("deleted-") and (
                time.time() - path.lstat().st_mtime < STALE_UNLOCKED_SECONDS
            ):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
            removed.append(entry)
        for entry in os.listdir(self.tmp):  # locks whose directory is already gone
            lock_path = self.tmp / entry
            if entry.endswith(".lock") and not (self.tmp / entry[:-5]).exists() and not (
                _owner_alive(lock_path)
            ):
                lock_path.unlink(missing_ok=True)
        return removed


def _write_atomic(path: Path, text: str) -> None:
    """Write a small file by rename, so readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _owner_alive(lock_path: Path) -> bool:
    """True if some process holds the staging lock (its import is still running)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _split(ref: str) -> tuple[str, str]:
    """Split ``name[:tag]`` without validating (lookups of names that may be built-ins)."""
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"

