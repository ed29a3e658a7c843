"""Read-only views of an image archive: an OCI layout directory or any tarball (OCI/docker).

Import code asks a source for files by relative name; the source never lets a name leave the
archive (no ``..``, no absolute names, symlinks inside a tarball resolved within it), and caps
the size of JSON documents so a hostile manifest cannot exhaust memory.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol

from nbcontainer.errors import ImageError, UnsafeLayerError

MAX_JSON = 4 << 20


def _norm(name: str) -> str:
    """Normalise an archive-relative name; reject ones that climb out."""
    clean = posixpath.normpath("/" + name.lstrip("/"))[1:]
    if ".." in name.split("/") or not clean:
        raise UnsafeLayerError(f"archive names the file {name!r}, which is outside the archive")
    return clean


class Source(Protocol):
    """What the importer needs from an archive."""

    description: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...


def read_json(source: Source, name: str) -> object:
    """Read and parse a small JSON document from the archive."""
    import json

    with source.open(name) as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ImageError(f"{name} in {source.description} is larger than {MAX_JSON} bytes")
    try:
        return json.loads(data)
    except ValueError as err:
        raise ImageError(f"{name} in {source.description} is not valid JSON: {err}") from err


class DirSource:
    """An OCI image-layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"OCI layout directory {path}"

    def exists(self, name: str) -> bool:
        try:
            st = os.stat(self.path / _norm(name))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path / _norm(name), "rb")
        except FileNotFoundError as err:
            raise ImageError(f"{self.description} has no file {name}") from err


class TarSource:
    """A tarball (OCI layout or docker save), read in place without unpacking it."""

    def __init__(self, path: Path) -> None:
        self.description = f"archive {path}"
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
            members = self.tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ImageError(f"{path} is not a readable tar archive: {err}") from err
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in members:
            try:
                self.members[_norm(m.name)] = m
            except UnsafeLayerError:
                continue  # never reachable by a name we look up

    def close(self) -> None:
        self.tar.close()

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        name = _norm(name)
        for _ in range(16):
            m = self.members.get(name)
            if m is None or m.isreg():
                return m
            if m.issym():
                name = _norm(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = _norm(m.linkname)
            else:
                return None
        raise ImageError(f"{self.description}: too many links resolving {name}")

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def open(self, name: str) -> BinaryIO:
        m = self._resolve(name)
        f = self.tar.extractfile(m) if m is not None else None
        if f is None:
            raise ImageError(f"{self.description} has no file {name}")
        return f  # type: ignore[return-value]


def open_source(path: str | os.PathLike[str]) -> DirSource | TarSource:
    """Pick the source type for ``path``: a directory, or a tarball of any compression."""
    p = Path(path)
    if p.is_dir():
        return DirSource(p)
    if not p.exists():
        raise ImageError(f"{p} does not exist; expected a docker-save tarball, an OCI "
                         "image-layout directory or an OCI image-layout tarball")
    return TarSource(p)
