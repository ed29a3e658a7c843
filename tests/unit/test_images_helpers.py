"""Builders for layer tars and image archives used by the image tests (no tests here)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any


def entry(name: str, kind: str = "file", data: bytes = b"", **kw: Any) -> dict[str, Any]:
    """One tar entry spec: kind in file, dir, sym, link, chr, blk, fifo."""
    return {"name": name, "kind": kind, "data": data, **kw}


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
          "link": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def make_tar(entries: list[dict[str, Any]], compress: bool = False) -> bytes:
    """A layer tar with exactly these entries, names untouched (hostile ones included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = _TYPES[e["kind"]]
            info.mode = e.get("mode", 0o755 if e["kind"] == "dir" else 0o644)
            info.mtime = e.get("mtime", 1_600_000_000)
            info.linkname = e.get("linkname", "")
            info.devmajor, info.devminor = e.get("dev", (0, 0))
            info.pax_headers = dict(e.get("pax", {}))
            data = e["data"] if e["kind"] == "file" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = sha(data)
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def make_oci_layout(layout: Path, layers: list[bytes], diff_ids: list[str] | None = None,
                    tag: str = "latest", cmd: list[str] | None = None) -> Path:
    """An OCI image-layout directory holding one image made of these layer blobs."""
    layout.mkdir(parents=True, exist_ok=True)
    if diff_ids is None:
        diff_ids = [sha(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b) for b in layers]
    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(layout, b)}
             for b in layers]
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["A=1"], "Cmd": cmd or ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"step {i}"} for i in range(len(layers))]}
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json",
             **_blob(layout, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": descs}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             **_blob(layout, json.dumps(manifest).encode()),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def make_docker_archive(path: Path, layers: list[bytes], diff_ids: list[str] | None = None,
                        repo_tag: str = "x:latest") -> Path:
    """A docker-save style tarball (manifest.json, <id>.json, <n>/layer.tar)."""
    if diff_ids is None:
        diff_ids = [sha(b) for b in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    files = {f"{sha(config)[7:]}.json": config}
    names = []
    for i, b in enumerate(layers):
        files[f"l{i}/layer.tar"] = b
        names.append(f"l{i}/layer.tar")
    files["manifest.json"] = json.dumps(
        [{"Config": f"{sha(config)[7:]}.json", "RepoTags": [repo_tag], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tree_snapshot(top: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Every path under ``top`` with type, mode, owner, size, mtime, inode, link count, content."""
    out: dict[str, tuple] = {}
    skip_s = {str(p) for p in skip}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip_s]
        for name in [".", *dirnames, *filenames]:
            p = os.path.normpath(os.path.join(dirpath, name))
            if p in skip_s:
                continue
            st = os.lstat(p)
            extra: Any = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            xattrs = tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                            st.st_mtime_ns, st.st_ino, st.st_nlink, extra, xattrs)
    return out


def rootfs_manifest(top: Path) -> dict[str, tuple]:
    """A comparable view of an image tree: type/mode, owner, size, content, link, mtime (s)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            extra: Any = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            mtime = None if stat.S_ISDIR(st.st_mode) else int(st.st_mtime)
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid,
                                            None if stat.S_ISDIR(st.st_mode) else st.st_size,
                                            extra, mtime)
    return out
