"""``pull``: an image from a registry into the store, verified before anything is published.

The order of trust: the manifest is hashed as it arrives (and must match a pinned digest, an
index entry's digest, or the registry's ``Docker-Content-Digest``); a multi-platform index is
resolved to one platform; the config must hash to the digest the manifest names; every layer
blob must hash to its manifest digest (checked while downloading, and again while extracting);
every layer must unpack to the diff_id the config lists. Layers are fetched into a staging
directory, then unpacked by the store's own importer (:func:`nbcontainer.images.oci
._import_plan`: the hostile-layer checks, the atomic publish), so a failure at any step leaves
nothing in the store.

Nothing already in the store is fetched again: a layer whose diff_id is stored is skipped, and
an image whose config (its id) is already stored under any name is not even downloaded — a
second pull of an image costs one manifest request.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from nbcontainer._records import field, record, replace
from nbcontainer.errors import RegistryError
from nbcontainer.images.extract import ExtractLimits
from nbcontainer.images.oci import (
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    Blob,
    Plan,
    _import_plan,
    json_object,
)
from nbcontainer.images.sources import DirSource
from nbcontainer.images.store import ImageRecord, ImageStore, hex_of
from nbcontainer.progress import or_silent
from nbcontainer.reference import Platform, Reference, host_platform, parse, parse_platform
from nbcontainer.registry.client import RegistryClient
from nbcontainer.registry.progress import Progress

MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_V1 = ("application/vnd.docker.distribution.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
ACCEPT = (MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
)
#: As Docker's ``max-concurrent-downloads`` default.
MAX_CONCURRENT_DOWNLOADS = 3


@record
class PullResult:
    """What a pull stored and what it cost: the record, and the blobs it downloaded."""

    record: ImageRecord
    manifest_digest: str
    fetched: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)


def _json_doc(data: bytes, what: str) -> dict[str, Any]:
    return json_object(data, what, RegistryError)


def _kind(doc: dict[str, Any], media: str) -> str:
    """The manifest's media type: its own field, else the Content-Type, else by shape."""
    mt = str(doc.get("mediaType") or media or "")
    if not mt or mt in ("application/json", "application/octet-stream"):
        mt = MT_OCI_INDEX if "manifests" in doc else MT_OCI_MANIFEST if "config" in doc else mt
    return mt


def _unsupported(ref: Reference, mt: str) -> RegistryError:
    if mt in MT_DOCKER_V1:
        return RegistryError(f"unsupported media type: {ref} is a Docker schema 1 manifest "
                             f"({mt}), which is deprecated; push it again with a current tool")
    return RegistryError(f"unsupported media type: {ref} is {mt or 'an unknown kind'}; "
                         f"supported: {', '.join(ACCEPT)}")


def choose_manifest(index: dict[str, Any], want: Platform, ref: Reference) -> dict[str, Any]:
    """The index entry for platform ``want`` (attestation entries ``unknown/unknown`` skipped)."""
    entries = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
    offered = []
    for desc in entries:
        plat = desc.get("platform") or {}
        have = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")),
                        str(plat.get("variant", "")))
        if have.os == "unknown":
            continue
        offered.append(str(have))
        if want.matches(have):
            return desc
    raise RegistryError(f"{ref} has no image for platform {want}; it offers "
                        f"{', '.join(offered) or 'no platform'} (choose one with --platform)")


def _descriptor(desc: Any, what: str) -> tuple[str, int | None, str]:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise RegistryError(f"{what}: malformed descriptor {str(desc)[:100]!r}")
    digest = desc["digest"]
    try:
        hex_of(digest)
    except Exception as err:
        raise RegistryError(f"{what}: unsupported digest {digest!r} (only sha256 is)") from err
    size = desc.get("size")
    return digest, size if isinstance(size, int) else None, str(desc.get("mediaType", ""))


def resolve_manifest(client: RegistryClient, ref: Reference, platform: Platform | None,
                     progress: Progress) -> tuple[dict[str, Any], str]:
    """The image manifest of ``ref`` for ``platform`` and its digest (indexes followed)."""
    scope = f"repository:{ref.path}:pull"
    data, media, digest = client.get_manifest(ref.path, ref.pull_target, ACCEPT, scope)
    doc = _json_doc(data, f"the manifest of {ref}")
    mt = _kind(doc, media)
    if mt in INDEX_TYPES:
        want = platform or host_platform()
        desc = choose_manifest(doc, want, ref)
        sub, size, _ = _descriptor(desc, f"the index of {ref}")
        progress.message(f"{ref.familiar}: {want} is {sub}")
        data, media, digest = client.get_manifest(ref.path, sub, ACCEPT, scope)
        if size is not None and len(data) != size:
            raise RegistryError(f"digest mismatch: manifest {sub} is {len(data)} bytes, the "
                                f"index says {size}")
        doc = _json_doc(data, f"manifest {sub} of {ref}")
        mt = _kind(doc, media)
        if mt in INDEX_TYPES:
            raise RegistryError(f"{ref}: an index entry is itself an index; nested indexes are "
                                "not supported")
    if mt not in MANIFEST_TYPES:
        raise _unsupported(ref, mt)
    return doc, digest


def pull(reference: str | Reference, *, platform: str | Platform | None = None,
         root: str | os.PathLike[str] | None = None, progress: Progress | None = None,
         limits: ExtractLimits | None = None,
         client: RegistryClient | None = None) -> PullResult:
    """Pull ``reference`` into the store and return what was stored.

    Parameters
    ----------
    reference
        ``[REGISTRY[:PORT]/]REPO[:TAG|@sha256:DIGEST]``, normalised as Docker does.
    platform
        ``OS/ARCH[/VARIANT]`` to take from a multi-platform image; default this machine's.
        Given explicitly, a single-platform image of another architecture is refused.
    root
        The store; default ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``.
    progress
        Receives per-layer events (see :mod:`nbcontainer.registry.progress`).

    Raises
    ------
    RegistryError
        In words: unauthorized, denied, manifest unknown, unsupported media type, digest
        mismatch, network error naming the registry. Nothing is stored then.
    """
    ref = reference if isinstance(reference, Reference) else parse(reference)
    plat = parse_platform(platform) if isinstance(platform, str) else platform
    progress = progress or Progress()
    client = client or RegistryClient.for_reference(ref)
    store = ImageStore(root)
    manifest, digest = resolve_manifest(client, ref, plat, progress)
    scope = f"repository:{ref.path}:pull"
    config_digest, config_size, config_mt = _descriptor(manifest.get("config"),
                                                        f"the manifest of {ref}")
    if config_mt and config_mt not in (MT_DOCKER_CONFIG, MT_OCI_CONFIG):
        raise RegistryError(f"unsupported media type: {ref} is not a container image (its "
                            f"config is {config_mt})")
    layers = [_descriptor(d, f"the manifest of {ref}") for d in manifest.get("layers") or []]
    for layer_digest, _, mt in layers:
        if mt and mt not in LAYER_TYPES:
            raise RegistryError(f"unsupported media type: layer {layer_digest} of {ref} is {mt}; "
                                f"supported: {', '.join(LAYER_TYPES)}")
    name, tag = ref.familiar_name, ref.tag or ""
    with store.lock():
        same = next((r for r in store.list_images() if r.id == config_digest
                     and all(store.has_layer(d) for d in r.layers)), None)
        if same is not None and plat is not None and (
                (same.os, same.architecture) != (plat.os, plat.architecture)):
            same = None
        if same is not None:
            record = replace(same, name=name, tag=tag, digest=digest, reference=str(ref))
            store.put_image(record)
            progress.message(f"{ref.familiar}: image is up to date ({digest})")
            return PullResult(record, digest, [], dict(client.counters))
        config = _json_doc(client.get_small_blob(ref.path, config_digest, config_size, scope),
                           f"the config of {ref}")
        _check_platform(config, plat, ref)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise RegistryError(f"{ref}: the config lists {len(diff_ids)} diff_ids for "
                                f"{len(layers)} layers")
        with store.staging("pull") as stage:
            blobs = stage / "blobs" / "sha256"
            blobs.mkdir(parents=True)
            wanted: dict[str, int | None] = {}
            for (layer_digest, size, _), diff_id in zip(layers, diff_ids, strict=True):
                if store.has_layer(str(diff_id)):
                    progress.layer(layer_digest, "Already exists")
                elif layer_digest not in wanted:
                    wanted[layer_digest] = size
                    progress.layer(layer_digest, "Waiting", size)
            _download(client, ref, wanted, blobs, progress)
            plan = Plan(config, config_digest,
                        [Blob(f"blobs/sha256/{hex_of(d)}", d, s) for d, s, _ in layers],
                        str(ref))
            # The pull draws its own per-layer progress (downloads); unpacking is silent.
            record = _import_plan(store, DirSource(stage), plan, name, tag,
                                  limits or ExtractLimits(), or_silent(None),
                                  trust_present=True, digest=digest, reference=str(ref))
    for layer_digest in wanted:
        progress.layer(layer_digest, "Pull complete")
    progress.message(f"Digest: {digest}")
    return PullResult(record, digest, list(wanted), dict(client.counters))


def _check_platform(config: dict[str, Any], plat: Platform | None, ref: Reference) -> None:
    if plat is None:
        return
    have = (str(config.get("os", "")), str(config.get("architecture", "")))
    if have != (plat.os, plat.architecture):
        raise RegistryError(f"{ref} is an image for {'/'.join(have)}, not the requested "
                            f"platform {plat}")


def _download(client: RegistryClient, ref: Reference, wanted: dict[str, int | None],
              blobs: Any, progress: Progress) -> None:
    """Fetch ``wanted`` blobs, at most MAX_CONCURRENT_DOWNLOADS at once; the first failure
    stops the others and is raised."""
    if not wanted:
        return
    scope = f"repository:{ref.path}:pull"

    def one(digest: str, size: int | None) -> None:
        progress.layer(digest, "Downloading", size)
        client.fetch_blob(ref.path, digest, size, blobs / hex_of(digest), scope,
                          advance=lambda n: progress.advance(digest, n))
        progress.layer(digest, "Download complete")

    pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_DOWNLOADS,
                              thread_name_prefix="nbcontainer-pull")
    try:
        futures = [pool.submit(one, d, s) for d, s in wanted.items()]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            err = failed.exception()
            assert err is not None
            raise err
    except BaseException:
        # A failure or an interrupt (Ctrl-C): the other downloads stop at their next chunk.
        client.abort.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
