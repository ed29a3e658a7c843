"""Import images from docker-save / OCI archives into the store, and save them as OCI archives.

Import trusts nothing it has not hashed: the manifest is checked against the index descriptor,
the config and every layer blob against the manifest (digest and size), and every layer's
uncompressed digest against the config's ``rootfs.diff_ids``. All layers are extracted into
staging first and published (renamed into ``layers/``) together with the image record only when
every check passed, so a failed import leaves nothing half-published.

Names and references travel with the archive. ``save`` annotates the manifest descriptor in
``index.json`` as containerd's ``ctr export`` does (``io.containerd.image.name`` = the image's
name, ``org.opencontainers.image.ref.name`` = its tag) and, for a pulled image, with where it came
from (``io.nbcontainer.image.reference``) and its registry manifest digest
(``io.nbcontainer.image.digest``): the saved manifest is regenerated (layers re-tarred), so its
own digest is not the registry's and no existing annotation carries that. ``import`` without a
NAME takes the name from those annotations (or a docker-save archive's single ``RepoTags``
entry) and keeps the reference and digest either way. They are the archive's word, as its name
is: nothing here can check them against a registry.

References: OCI image-spec (image-layout.md, manifest.md, config.md, layer.md, annotations.md),
containerd's ``images.AnnotationImageName`` and Docker's image spec v1.2 for ``docker save``'s
``manifest.json``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import platform
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nbcontainer.errors import ImageError, UsageError
from nbcontainer.images.extract import (
    ExtractLimits,
    ExtractResult,
    HashingReader,
    decompressed,
    extract_layer,
    inherit_implied_dirs,
)
from nbcontainer.images.layertar import HashingWriter, write_layer_tar
from nbcontainer.images.sources import Source, TarSource, open_source, read_json
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
from nbcontainer.progress import Progress, or_silent
from nbcontainer.reference import parse as parse_ref

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
#: containerd's image name annotation (``ctr export``, Docker's containerd store ``docker save``).
NAME_ANNOTATION = "io.containerd.image.name"
#: Where a pulled image came from, fully qualified (``docker.io/library/python:3.12``).
REFERENCE_ANNOTATION = "io.nbcontainer.image.reference"
#: A pulled image's registry manifest digest (``sha256:...``).
DIGEST_ANNOTATION = "io.nbcontainer.image.digest"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class Blob:
    """A file in the archive and, where the format gives them, its digest and size."""

    name: str
    digest: str | None = None
    size: int | None = None


@dataclass
class Plan:
    """What an archive says the image is, before any layer has been read."""

    config: dict[str, Any]
    config_digest: str
    layers: list[Blob]
    source: str
    #: The names the archive gives the image, as written (containerd's annotation, a full
    #: reference in ``ref.name``, docker-save ``RepoTags``).
    names: list[str] | None = None
    #: An OCI ``ref.name`` that is only a tag (names no repository).
    bare_tag: str = ""
    #: The registry reference and manifest digest ``save`` recorded for a pulled image.
    reference: str = ""
    digest: str = ""


def host_arch() -> str:
    """The OCI name of this machine's architecture."""
    return _ARCH.get(platform.machine(), platform.machine())


def _read_blob(source: Source, blob: Blob, limit: int = 4 << 20) -> bytes:
    """Read a small blob (manifest, config) and check its digest and size."""
    with source.open(blob.name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"{blob.name} in {source.description} is larger than {limit} bytes")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if blob.digest is not None and actual != blob.digest:
        raise ImageError(f"blob {blob.name} in {source.description} has digest {actual}, "
                         f"but the manifest says {blob.digest}: the archive is corrupt or forged")
    if blob.size is not None and len(data) != blob.size:
        raise ImageError(f"blob {blob.name} is {len(data)} bytes, the manifest says {blob.size}")
    return data


def json_object(data: bytes, what: str,
                error: type[Exception] = ImageError) -> dict[str, Any]:
    """``data`` as a JSON object (a manifest, an index, a config: untrusted bytes from an
    archive or a registry), else ``error`` saying what ``what`` is not."""
    try:
        value = json.loads(data)
    except ValueError as err:
        raise error(f"{what} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    return value


def _blob_of(source: Source, desc: Any) -> Blob:
    """The blob a descriptor names; a missing blob is an error naming it."""
    if not isinstance(desc, dict) or "digest" not in desc:
        raise ImageError(f"{source.description}: malformed descriptor {desc!r}")
    digest = str(desc["digest"])
    blob = Blob(f"blobs/sha256/{hex_of(digest)}", digest, desc.get("size"))
    if not source.exists(blob.name):
        raise ImageError(f"{source.description}: the manifest names blob {digest}, which is "
                         "missing from the archive")
    return blob


def _pick_manifest(source: Source, descs: list[Any],
                   tag: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Choose one manifest from an index: the only one, the one tagged ``tag``, or this arch's.

    Returns the manifest and the annotations of the chosen descriptor in the outermost index
    (where ``save``, ``ctr export`` and ``skopeo`` put the image's name).
    """
    if not descs:
        raise ImageError(f"{source.description}: index.json lists no manifests")
    tagged = [d for d in descs if tag is not None
              and (d.get("annotations") or {}).get(REF_ANNOTATION) == tag]
    if len(descs) > 1:
        if len(tagged) == 1:
            descs = tagged
        else:
            arch = [d for d in descs if (d.get("platform") or {}).get("architecture") == host_arch()
                    and (d.get("platform") or {}).get("os", "linux") == "linux"]
            if len(arch) != 1:
                refs = [(d.get("annotations") or {}).get(REF_ANNOTATION, d.get("digest"))
                        for d in descs]
                raise ImageError(f"{source.description} holds several images "
                                 f"({', '.join(map(str, refs))}); import it with a NAME whose "
                                 "tag matches one of them")
            descs = arch
    desc = descs[0]
    annotations = {str(k): str(v) for k, v in (desc.get("annotations") or {}).items()}
    data = _read_blob(source, _blob_of(source, desc))
    doc = json_object(data, f"manifest {desc.get('digest')}")
    if doc.get("mediaType") in (MT_OCI_INDEX, MT_DOCKER_LIST) or "manifests" in doc:
        return _pick_manifest(source, list(doc.get("manifests") or []), tag)[0], annotations
    return doc, annotations


def _plan_oci(source: Source, tag: str | None) -> Plan:
    index = read_json(source, "index.json")
    if not isinstance(index, dict):
        raise ImageError(f"{source.description}: index.json is not a JSON object")
    manifest, notes = _pick_manifest(source, list(index.get("manifests") or []), tag)
    config_blob = _blob_of(source, manifest.get("config"))
    config_bytes = _read_blob(source, config_blob)
    layers = [_blob_of(source, d) for d in manifest.get("layers") or []]
    plan = Plan(json_object(config_bytes, "image config"), config_blob.digest or "", layers,
                source.description, names=[])
    ref_name = notes.get(REF_ANNOTATION, "")
    if notes.get(NAME_ANNOTATION):
        plan.names = [notes[NAME_ANNOTATION]]
    elif any(c in ref_name for c in ":/@"):
        plan.names = [ref_name]  # skopeo/podman write a whole reference here (oci-archive:F:REF)
    else:
        plan.bare_tag = ref_name  # the OCI convention: only a tag, no repository
    plan.reference = _checked_reference(source, notes.get(REFERENCE_ANNOTATION, ""))
    plan.digest = _checked_digest(source, notes.get(DIGEST_ANNOTATION, ""))
    return plan


def _checked_reference(source: Source, text: str) -> str:
    """An archive's ``io.nbcontainer.image.reference``, fully qualified, or an error saying so."""
    if not text:
        return ""
    try:
        return str(parse_ref(text))
    except UsageError as err:
        raise ImageError(f"{source.description}: the annotation {REFERENCE_ANNOTATION} is not "
                         f"an image reference ({err}); the archive is damaged") from None


def _checked_digest(source: Source, text: str) -> str:
    """An archive's ``io.nbcontainer.image.digest``, or an error saying what is wrong."""
    if text:
        try:
            hex_of(text)
        except ImageError as err:
            raise ImageError(f"{source.description}: the annotation {DIGEST_ANNOTATION} is not a "
                             f"digest ({err}); the archive is damaged") from None
    return text


def _plan_docker(source: Source, wanted: tuple[str, str] | None) -> Plan:
    entries = read_json(source, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{source.description}: manifest.json lists no images")
    if len(entries) > 1:
        picked = [] if wanted is None else [e for e in entries if any(
            t == f"{wanted[0]}:{wanted[1]}" or t.endswith(f"/{wanted[0]}:{wanted[1]}")
            for t in e.get("RepoTags") or [])]
        if len(picked) != 1:
            tags = [t for e in entries for t in e.get("RepoTags") or []]
            raise ImageError(f"{source.description} holds several images ({', '.join(tags)}); "
                             "import it with the NAME of one of them")
        entries = picked
    entry = entries[0]
    config_name = str(entry.get("Config", ""))
    base = os.path.basename(config_name).removesuffix(".json")
    digest = f"sha256:{base}" if len(base) == 64 else None
    if not source.exists(config_name):
        raise ImageError(f"{source.description}: manifest.json names config {config_name!r}, "
                         "which is missing from the archive")
    config_bytes = _read_blob(source, Blob(config_name, digest))
    layers = []
    for name in entry.get("Layers") or []:
        if not source.exists(str(name)):
            raise ImageError(f"{source.description}: manifest.json names layer {name!r}, "
                             "which is missing from the archive")
        layers.append(Blob(str(name)))
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    repo_tags = entry.get("RepoTags") or []
    return Plan(json_object(config_bytes, "image config"), config_digest, layers,
                source.description,
                names=[str(t) for t in repo_tags] if isinstance(repo_tags, list) else [])


def name_from_archive(plan: Plan, path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """The (name, tag, digest) an archive gives its image, normalised as a pull would store it.

    ``docker.io/library/python:3.12`` becomes ``python``/``3.12``; ``name@sha256:...`` a
    record by digest (tag ""). An archive that names no image, or only a tag, or several
    names, is a UsageError asking for a NAME.
    """
    how = f"give a NAME: `nbcontainer import {os.fspath(path)} NAME[:TAG]`"
    names = plan.names or []
    if len(names) > 1:
        raise UsageError(f"{plan.source} names its image several times ({', '.join(names)}); "
                         f"pick one: {how.replace('NAME[:TAG]', names[0])}")
    if not names:
        if plan.bare_tag:
            raise UsageError(f"{plan.source} names its image only by the tag {plan.bare_tag!r} "
                             "(org.opencontainers.image.ref.name) and no repository; "
                             + how.replace("NAME[:TAG]", f"NAME:{plan.bare_tag}"))
        raise UsageError(f"{plan.source} does not name its image; {how}")
    try:
        ref = parse_ref(names[0])
    except UsageError as err:
        raise UsageError(f"{plan.source} names its image {names[0]!r}, which is not a valid "
                         f"image name ({err}); {how}") from None
    tag, digest = ref.tag or "", plan.digest or ref.digest or ""
    if not tag and ref.digest and plan.digest and ref.digest != plan.digest:
        raise ImageError(f"{plan.source} names its image {names[0]} but records the manifest "
                         f"digest {plan.digest}; the archive is inconsistent: {how}")
    parse_reference(f"{ref.familiar_name}:{tag or 'latest'}")  # the store's own grammar
    return ref.familiar_name, tag, digest


def _extract_blob(source: Source, blob: Blob, dest: Path | None,
                  limits: ExtractLimits) -> ExtractResult | str:
    """Stream a layer blob into ``dest`` (or only hash it when None), checking its digest.

    Returns the extraction result, or the diff_id when only hashing.
    """
    with source.open(blob.name) as raw:
        outer = HashingReader(raw, limits.max_bytes, what=f"blob {blob.name}")
        stream: BinaryIO = outer  # type: ignore[assignment]
        if dest is None:
            inner = HashingReader(decompressed(stream), limits.max_bytes)
            inner.drain()
            result: ExtractResult | str = inner.digest
        else:
            result = extract_layer(stream, dest, limits)
        outer.drain()
    if blob.digest is not None and outer.digest != blob.digest:
        raise ImageError(f"layer blob {blob.name} has digest {outer.digest}, but the manifest "
                         f"says {blob.digest}: the archive is corrupt or forged")
    if blob.size is not None and outer.count != blob.size:
        raise ImageError(f"layer blob {blob.name} is {outer.count} bytes; the manifest says "
                         f"{blob.size}")
    return result


def _history(config: dict[str, Any], metas: list[LayerMeta]) -> list[HistoryEntry]:
    """OCI history with each non-empty step given its layer's content size."""
    raw = [h for h in config.get("history") or [] if isinstance(h, dict)]
    if sum(1 for h in raw if not h.get("empty_layer")) != len(metas):
        return [HistoryEntry(created=m.created, created_by=m.created_by, size=m.size)
                for m in metas]
    sizes = iter(metas)
    out = []
    for h in raw:
        empty = bool(h.get("empty_layer"))
        out.append(HistoryEntry(created=str(h.get("created", "")),
                                created_by=str(h.get("created_by", "")), empty_layer=empty,
                                size=0 if empty else next(sizes).size,
                                comment=str(h.get("comment", ""))))
    return out


def record_from_config(name: str, tag: str, image_id: str, config: dict[str, Any],
                       metas: list[LayerMeta], source: str) -> ImageRecord:
    """Build the store record from an OCI/docker image config."""
    cfg = config.get("config") or {}

    def strings(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else []

    return ImageRecord(
        name=name, tag=tag, id=image_id, layers=[m.diff_id for m in metas],
        env=strings(cfg.get("Env")), cmd=strings(cfg.get("Cmd")),
        entrypoint=strings(cfg.get("Entrypoint")), workdir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        history=_history(config, metas), created=str(config.get("created", "")),
        architecture=str(config.get("architecture", host_arch())),
        os=str(config.get("os", "linux")), source=source,
    )


def import_image(path: str | os.PathLike[str], name: str | None = None,
                 root: str | os.PathLike[str] | None = None,
                 limits: ExtractLimits | None = None,
                 progress: Progress | None = None) -> ImageRecord:
    """Import a docker-save tarball, an OCI layout directory or an OCI layout tarball as ``name``.

    Parameters
    ----------
    path
        The archive. OCI layouts are recognised by ``index.json``, docker-save by
        ``manifest.json`` (an archive with both is read as OCI).
    name
        ``name[:tag]`` to store it under; with several images in one archive, the tag (OCI
        ``ref.name``) or the name (docker ``RepoTags``) picks one. None: the name the archive
        gives (:func:`name_from_archive`). Either way the record keeps the registry reference
        and manifest digest ``save`` recorded.
    root
        Store root; default ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``.
    limits
        Decompression-bomb caps for each layer.
    progress
        Where the import is shown: one task per layer.

    Returns
    -------
    ImageRecord
        The record now in the store.
    """
    wanted = parse_reference(name) if name is not None else None
    if wanted is not None and wanted[0] in BUILTIN_NAMES:
        raise UsageError(f"{wanted[0]} is a built-in image name; import under another name")
    limits = limits or ExtractLimits()
    store = ImageStore(root)
    source = open_source(path)
    try:
        if source.exists("index.json"):
            plan = _plan_oci(source, wanted[1] if wanted else None)
        elif source.exists("manifest.json"):
            plan = _plan_docker(source, wanted)
        else:
            raise ImageError(f"{source.description} is neither an OCI image layout (no "
                             "index.json) nor a docker-save archive (no manifest.json)")
        if wanted is not None:
            (repo, tag), digest = wanted, plan.digest
        else:
            repo, tag, digest = name_from_archive(plan, path)
            if repo in BUILTIN_NAMES:
                raise UsageError(f"{source.description} names its image {repo}, a built-in "
                                 "image name; import it under another NAME")
        return _import_plan(store, source, plan, repo, tag, limits, or_silent(progress),
                            digest=digest, reference=plan.reference)
    finally:
        if isinstance(source, TarSource):
            source.close()


def _import_plan(store: ImageStore, source: Source, plan: Plan, repo: str, tag: str,
                 limits: ExtractLimits, progress: Progress, *, trust_present: bool = False,
                 digest: str = "", reference: str = "") -> ImageRecord:
    """Check and extract a plan's layers, then publish them and the record together.

    ``trust_present``: a layer whose diff_id is already in the store is used as it is, without
    reading its blob (a pull does not even fetch it: the diff_id comes from a config whose
    digest the verified manifest names). ``digest`` and ``reference`` are recorded for a pull,
    and for an import of an archive ``save`` wrote from a pulled image.
    """
    diff_ids = (plan.config.get("rootfs") or {}).get("diff_ids") or []
    if not isinstance(diff_ids, list) or len(diff_ids) != len(plan.layers):
        raise ImageError(f"{plan.source}: the config lists {len(diff_ids)} diff_ids for "
                         f"{len(plan.layers)} layers")
    for d in diff_ids:
        hex_of(str(d))
    with store.lock(), contextlib.ExitStack() as stack:
        staged: dict[str, tuple[Path, LayerMeta]] = {}
        metas: list[LayerMeta] = []
        for i, (blob, diff_id) in enumerate(zip(plan.layers, diff_ids, strict=True)):
            task = progress.task(f"layer {i + 1}/{len(diff_ids)} "
                                 f"{str(diff_id).removeprefix('sha256:')[:12]}")
            if diff_id in staged:
                metas.append(staged[diff_id][1])
                task.finish("same as an earlier layer")
                continue
            if store.has_layer(diff_id) and trust_present:
                metas.append(store.layer_meta(diff_id))
                task.finish("already in the store")
                continue
            try:
                if store.has_layer(diff_id):
                    got = _extract_blob(source, blob, None, limits)
                    _check_diff_id(got if isinstance(got, str) else got.diff_id, diff_id, i)
                    metas.append(store.layer_meta(diff_id))
                    task.finish("already in the store")
                    continue
                stage = stack.enter_context(store.staging("import"))
                (stage / "fs").mkdir(mode=0o755)
                result = _extract_blob(source, blob, stage / "fs", limits)
                assert isinstance(result, ExtractResult)
                _check_diff_id(result.diff_id, diff_id, i)
            except BaseException:
                task.fail("refused")
                raise
            task.finish("unpacked", total=result.content_size)
            lowers = [staged[d][0] / "fs" if d in staged else store.layer_fs(d)
                      for d in diff_ids[:i]]
            inherit_implied_dirs(stage / "fs", result.implied_dirs, lowers)
            created_by = _created_by(plan.config, i)
            meta = LayerMeta(diff_id, result.content_size, result.tar_size, created_by, now_iso())
            staged[diff_id] = (stage, meta)
            metas.append(meta)
        for stage, meta in staged.values():
            store.publish_layer(stage, meta)
        record = record_from_config(repo, tag, plan.config_digest, plan.config, metas, plan.source)
        record.digest, record.reference = digest, reference
        store.put_image(record)
    return record


def _check_diff_id(actual: str, expected: str, index: int) -> None:
    if actual != expected:
        raise ImageError(f"layer {index} unpacks to diff_id {actual}, but the image config says "
                         f"{expected}: the archive is corrupt or forged")


def _created_by(config: dict[str, Any], index: int) -> str:
    """The history line that made non-empty layer ``index`` (for the layer's meta)."""
    steps = [h for h in config.get("history") or []
             if isinstance(h, dict) and not h.get("empty_layer")]
    return str(steps[index].get("created_by", "")) if index < len(steps) else ""


# ----------------------------------------------------------------------------------- save
def oci_config(record: ImageRecord, diff_ids: list[str]) -> dict[str, Any]:
    """The OCI image config for a record, with the given (regenerated) diff_ids."""
    cfg: dict[str, Any] = {}
    if record.env:
        cfg["Env"] = record.env
    if record.cmd:
        cfg["Cmd"] = record.cmd
    if record.entrypoint:
        cfg["Entrypoint"] = record.entrypoint
    if record.workdir:
        cfg["WorkingDir"] = record.workdir
    if record.user:
        cfg["User"] = record.user
    if record.labels:
        cfg["Labels"] = record.labels
    history = []
    for h in record.history:
        entry: dict[str, Any] = {"created": h.created or record.created or now_iso(),
                                 "created_by": h.created_by}
        if h.comment:
            entry["comment"] = h.comment
        if h.empty_layer:
            entry["empty_layer"] = True
        history.append(entry)
    return {"created": record.created or now_iso(), "architecture": record.architecture,
            "os": record.os, "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def save_image(name: str, path: str | os.PathLike[str],
               root: str | os.PathLike[str] | None = None, compress: bool = True) -> Path:
    """Write image ``name`` as an OCI image-layout tarball at ``path`` (atomically).

    Layers are re-tarred deterministically from the stored trees (overlay whiteouts back in
    ``.wh.`` form), gzip-compressed unless ``compress`` is False. The manifest is tagged with the
    image's tag (``org.opencontainers.image.ref.name``), so ``skopeo inspect
    oci-archive:PATH`` and ``umoci unpack --image DIR:TAG`` find it, with its name
    (``io.containerd.image.name``) for ``import`` without a NAME, and with a pulled image's
    registry reference and manifest digest (:data:`REFERENCE_ANNOTATION`,
    :data:`DIGEST_ANNOTATION`).
    """
    from nbcontainer.images.builtin import stored_record

    store = ImageStore(root)
    dest = Path(path)
    with store.lock():
        record = stored_record(name, store)
        with store.staging("save") as stage:
            blobs = stage / "blobs"
            blobs.mkdir()
            layer_descs, diff_ids = [], []
            for diff_id in record.layers:
                desc, new_diff_id = _layer_blob(store.layer_fs(diff_id), blobs, compress)
                layer_descs.append(desc)
                diff_ids.append(new_diff_id)
            config_desc = _json_blob(blobs, oci_config(record, diff_ids), MT_OCI_CONFIG)
            manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                        "config": config_desc, "layers": layer_descs}
            manifest_desc = _json_blob(blobs, manifest, MT_OCI_MANIFEST)
            manifest_desc["annotations"] = save_annotations(record)
            index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [manifest_desc]}
            (stage / "index.json").write_bytes(_canonical(index))
            (stage / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
            _write_outer_tar(stage, dest)
    return dest


def save_annotations(record: ImageRecord) -> dict[str, str]:
    """What ``save`` says about the image on its manifest descriptor (see the module doc)."""
    notes = {NAME_ANNOTATION: record.ref}
    if record.tag:  # a by-digest pull has no tag; ``ref.name`` must not be empty
        notes[REF_ANNOTATION] = record.tag
    if record.reference:
        notes[REFERENCE_ANNOTATION] = record.reference
    if record.digest:
        notes[DIGEST_ANNOTATION] = record.digest
    return notes


def _layer_blob(fs: Path, blobs: Path, compress: bool) -> tuple[dict[str, Any], str]:
    """Tar (and gzip) one layer into ``blobs``; return its descriptor and new diff_id."""
    tmp = blobs / f"layer-{secrets.token_hex(6)}"
    with open(tmp, "wb") as f:
        outer = HashingWriter(f)
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=outer, mtime=0,  # type: ignore[call-overload]
                               compresslevel=6) as gz:
                summary = write_layer_tar(fs, gz)
        else:
            summary = write_layer_tar(fs, outer)  # type: ignore[arg-type]
    os.replace(tmp, blobs / hex_of(outer.digest))
    media = MT_OCI_LAYER + ("+gzip" if compress else "")
    return {"mediaType": media, "digest": outer.digest, "size": outer.count}, summary.diff_id


def _json_blob(blobs: Path, doc: Any, media_type: str) -> dict[str, Any]:
    data = _canonical(doc)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / hex_of(digest)).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _write_outer_tar(stage: Path, dest: Path) -> None:
    """The layout as a deterministic tar: sorted, owner 0, mtime 0; renamed into place."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for arc in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(arc)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            files = sorted(f"blobs/sha256/{p.name}" for p in (stage / "blobs").iterdir()
                           if not p.name.startswith("layer-"))
            for arc in [*files, "index.json", "oci-layout"]:
                src = stage / (arc.replace("blobs/sha256/", "blobs/", 1))
                info = tarfile.TarInfo(arc)
                info.size, info.mode, info.mtime = src.stat().st_size, 0o644, 0
                with open(src, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, dest)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ImageError(f"cannot write {dest}: {err}") from err
