"""Write a layer directory back out as a deterministic OCI layer tar.

Used by ``save`` (stored layer -> blob), by ``commit`` (a container's upper directory -> new
layer) and to compute the diff_id of layers we make ourselves (busybox). The walk is fd-based
(``os.fwalk``) and files are opened with ``O_NOFOLLOW``, so a container swapping a file for a
symlink while we read its upper directory cannot make us archive a host file.

Overlay's forms are translated back to OCI's: a 0/0 character device becomes an empty
``.wh.NAME`` file, a directory with ``trusted.overlay.opaque=y`` gains a ``.wh..wh..opq`` entry,
and other ``trusted.overlay.*`` xattrs (origin, impure, redirect...) are overlay bookkeeping and
are left out. Entries are sorted and user/group names left empty, so the same tree always gives
the same bytes (and so the same diff_id).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from nbcontainer.images.extract import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX

_CHUNK = 1 << 20


@dataclass(frozen=True)
class TarSummary:
    """The diff_id and sizes of a tar just written."""

    diff_id: str
    tar_size: int
    content_size: int


class HashingWriter:
    """A write-only stream that hashes and counts, optionally passing bytes on."""

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.count += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.count

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _xattrs(target: int | str) -> dict[str, str]:
    """OCI-relevant xattrs as SCHILY pax headers; overlay bookkeeping is left out."""
    out: dict[str, str] = {}
    follow = isinstance(target, int)  # fds refuse follow_symlinks=False; they need no lookup
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        return out
    for name in sorted(names):
        if name.startswith("trusted.overlay."):
            continue
        try:
            value = os.getxattr(target, name, follow_symlinks=follow)
        except OSError:
            continue
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def write_layer_tar(src: str | os.PathLike[str], out: BinaryIO | None) -> TarSummary:
    """Write the tree at ``src`` as an OCI layer tar to ``out`` (or only hash it if None).

    Returns the diff_id, the tar's size and the content size (regular file bytes, counting each
    hardlinked inode once).
    """
    sink = HashingWriter(out)
    seen: dict[tuple[int, int], str] = {}
    content = 0
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for dirpath, dirnames, filenames, dirfd in os.fwalk(src, follow_symlinks=False):
            # fwalk lists symlinks to directories among dirnames (and then skips them)
            links = [d for d in dirnames
                     if stat.S_ISLNK(os.stat(d, dir_fd=dirfd, follow_symlinks=False).st_mode)]
            dirnames[:] = sorted(set(dirnames) - set(links))
            filenames = filenames + links
            rel = os.path.relpath(dirpath, src)
            prefix = "" if rel == "." else rel + "/"
            if prefix:
                st = os.stat(dirfd)
                info = _info(prefix, st, tarfile.DIRTYPE)
                info.pax_headers = {**info.pax_headers, **_xattrs(dirfd)}
                tar.addfile(info)
            try:
                opaque = os.getxattr(dirfd, OPAQUE_XATTR) == b"y"
            except OSError:
                opaque = False
            if opaque and prefix:
                st = os.stat(dirfd)
                marker = _info(prefix + OPAQUE_MARKER, st, tarfile.REGTYPE)
                marker.mode = 0o644
                tar.addfile(marker)
            for name in sorted(filenames):
                content += _add_entry(tar, dirfd, name, prefix + name, seen)
    return TarSummary(sink.digest, sink.count, content)


def _add_entry(tar: tarfile.TarFile, dirfd: int, name: str, arcname: str,
               seen: dict[tuple[int, int], str]) -> int:
    """Add one non-directory entry; return the content bytes it adds."""
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        whiteout = os.path.join(os.path.dirname(arcname), WHITEOUT_PREFIX + name)
        info = _info(whiteout, st, tarfile.REGTYPE)
        info.mode = 0o644
        tar.addfile(info)
        return 0
    if stat.S_ISLNK(mode):
        info = _info(arcname, st, tarfile.SYMTYPE)
        info.linkname = os.readlink(name, dir_fd=dirfd)
        tar.addfile(info)
        return 0
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in seen:
        info = _info(arcname, st, tarfile.LNKTYPE)
        info.linkname = seen[key]
        tar.addfile(info)
        return 0
    if stat.S_ISREG(mode):
        if st.st_nlink > 1:
            seen[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        with os.fdopen(fd, "rb", buffering=0) as f:
            info = _info(arcname, st, tarfile.REGTYPE)
            info.size = st.st_size
            info.pax_headers = {**info.pax_headers, **_xattrs(f.fileno())}
            tar.addfile(info, f)
        return st.st_size
    if stat.S_ISFIFO(mode):
        tar.addfile(_info(arcname, st, tarfile.FIFOTYPE))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info = _info(arcname, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    # sockets are not representable in tar and are skipped, as GNU tar does
    return 0
