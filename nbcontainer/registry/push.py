"""``push IMAGE REF``: a stored image to a registry, uploading only what it lacks.

The layers are written as gzip'd tars from the stored trees, as ``save`` writes them
(deterministically: the same tree gives the same blob), with an OCI config and manifest. For
each blob: ``HEAD`` says whether the repository has it; if not, a blob this store pushed before
to another repository of the same registry is *mounted* from there (``POST
/blobs/uploads/?mount=DIGEST&from=REPO``, no bytes sent); otherwise it is uploaded in one
``PUT``. The manifest goes last, under the tag.

The repositories each blob was pushed to are remembered in ``<store>/pushed/<hex digest>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

from nbcontainer.errors import RegistryError, UsageError
from nbcontainer.images.builtin import stored_record
from nbcontainer.images.oci import (
    MT_OCI_CONFIG,
    MT_OCI_MANIFEST,
    _json_blob,
    _layer_blob,
    oci_config,
)
from nbcontainer.images.store import ImageStore, hex_of
from nbcontainer.reference import Reference, parse
from nbcontainer.registry.client import RegistryClient
from nbcontainer.registry.progress import Progress


@dataclass
class PushResult:
    """Where it went, its manifest digest and size, and what each blob cost."""

    reference: str
    digest: str
    size: int
    uploaded: list[str]
    mounted: list[str]
    existing: list[str]


def _pushed_dir(store: ImageStore) -> Path:
    return store.root / "pushed"


def _mount_sources(store: ImageStore, digest: str, ref: Reference) -> list[str]:
    try:
        lines = (_pushed_dir(store) / hex_of(digest)).read_text().split()
    except FileNotFoundError:
        return []
    prefix = ref.domain + "/"
    return [line[len(prefix):] for line in lines
            if line.startswith(prefix) and line[len(prefix):] != ref.path]


def _remember(store: ImageStore, digest: str, ref: Reference) -> None:
    directory = _pushed_dir(store)
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / hex_of(digest)
    known = set(path.read_text().split()) if path.exists() else set()
    known.add(ref.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("\n".join(sorted(known)) + "\n")
    os.replace(tmp, path)


def push(image: str, reference: str, *, root: str | os.PathLike[str] | None = None,
         progress: Progress | None = None, client: RegistryClient | None = None) -> PushResult:
    """Push stored ``image`` to ``reference``; see the module docstring."""
    ref = parse(reference)
    if ref.digest:
        raise UsageError(f"push: {reference} names a digest; push to a tag, e.g. "
                         f"{ref.familiar_name}:latest")
    progress = progress or Progress()
    store = ImageStore(root)
    client = client or RegistryClient.for_reference(ref)
    result = PushResult(str(ref), "", 0, [], [], [])
    with store.lock(), store.staging("push") as stage:
        record = stored_record(image, store)
        blobs = stage / "blobs"
        blobs.mkdir()
        layers, diff_ids = [], []
        for diff_id in record.layers:
            desc, new_id = _layer_blob(store.layer_fs(diff_id), blobs, compress=True)
            layers.append(desc)
            diff_ids.append(new_id)
        config = _json_blob(blobs, oci_config(record, diff_ids), MT_OCI_CONFIG)
        for desc in [*layers, config]:
            how = _upload(client, store, ref, str(desc["digest"]), blobs, progress)
            getattr(result, how).append(desc["digest"])
            _remember(store, str(desc["digest"]), ref)
        manifest = _json_blob(blobs, {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                                      "config": config, "layers": layers}, MT_OCI_MANIFEST)
        body = (blobs / hex_of(manifest["digest"])).read_bytes()
        what = f"the manifest of {ref.familiar}"
        resp = client.request("PUT", f"/v2/{ref.path}/manifests/{ref.tag}",
                              scope=_scope(ref), what=what, body=body, kind="manifest",
                              headers={"Content-Type": MT_OCI_MANIFEST})
        if resp.status not in (200, 201):
            raise client.error(resp, f"the upload of {what}")
        result.digest, result.size = str(manifest["digest"]), len(body)
    progress.message(f"{ref.familiar}: pushed {result.digest}")
    return result


def _scope(ref: Reference, mount_from: str | None = None) -> str:
    scope = f"repository:{ref.path}:pull,push"
    return scope + (f" repository:{mount_from}:pull" if mount_from else "")


def _upload(client: RegistryClient, store: ImageStore, ref: Reference, digest: str,
            blobs: Path, progress: Progress) -> str:
    """Get one blob into the repository; return how: existing, mounted or uploaded."""
    what = f"blob {digest} in {ref.familiar_name}"
    resp = client.request("HEAD", f"/v2/{ref.path}/blobs/{digest}", scope=_scope(ref),
                          what=what, kind="blob-head")
    if resp.status == 200:
        progress.layer(digest, "Layer already exists")
        return "existing"
    for source in _mount_sources(store, digest, ref):
        query = urlencode({"mount": digest, "from": source})
        resp = client.request("POST", f"/v2/{ref.path}/blobs/uploads/?{query}",
                              scope=_scope(ref, source), what=what, kind="upload")
        if resp.status == 201:
            progress.layer(digest, f"Mounted from {source}")
            return "mounted"
        if resp.status == 202:  # the registry started an ordinary upload instead
            return _put(client, ref, digest, blobs, resp.headers.get("Location", ""), progress)
    resp = client.request("POST", f"/v2/{ref.path}/blobs/uploads/", scope=_scope(ref),
                          what=what, kind="upload")
    if resp.status != 202:
        raise client.error(resp, f"starting the upload of {what}")
    return _put(client, ref, digest, blobs, resp.headers.get("Location", ""), progress)


def _put(client: RegistryClient, ref: Reference, digest: str, blobs: Path, location: str,
         progress: Progress) -> str:
    if not location:
        raise RegistryError(f"{client.domain} started an upload without a Location")
    url = urljoin(client.base + "/", location)
    url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
    data = (blobs / hex_of(digest)).read_bytes()
    progress.layer(digest, "Pushing", len(data))
    resp = client.request("PUT", "", url=url, scope=_scope(ref), body=data, kind="upload",
                          what=f"the upload of blob {digest}",
                          headers={"Content-Type": "application/octet-stream"})
    if resp.status != 201:
        raise client.error(resp, f"the upload of blob {digest} to {ref.familiar_name}")
    progress.layer(digest, "Pushed")
    return "uploaded"
