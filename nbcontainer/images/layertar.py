"""Write a layer directory back out as a deterministic OCI layer tar.

Used by ``save`` (stored layer -> blob), by ``commit`` (a container's upper directory -> new
layer) and to compute the diff_id of layers we make ourselves (busybox). The walk is fd-based
(``os.fwalk``) and files are opened with ``O_NOFOLLOW``, so a container swapping a file for a
symlink while we read its upper directory cannot make us archive a host file.

Overlay's forms are translated back to OCI's: a 0/0 character device becomes an empty
``.wh.NAME`` file, a directory with ``trusted.overlay.opaque=y`` gains a ``.wh..wh..opq`` entry,
and other ``trusted.overlay.*`` xattrs (origin, impure, redirect...) are overlay bookkeeping and
are left out. Entries are sorted, xattrs sorted and user/group names left empty, and headers
are encoded by :func:`nbcontainer.images.tarstream.encode_header` (not tarfile, whose bytes vary
between Python versions), so the same tree always gives the same bytes (and so the same
diff_id).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO

from nbcontainer.errors import ImageError
from nbcontainer.images.extract import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from nbcontainer.images.tarstream import (
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    END_OF_ARCHIVE,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    encode_header,
    padding,
)

_CHUNK = 1 << 20
_RECORD = 20 * 512  # tar's default record size: archives are padded to a multiple of it


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


def _xattrs(target: int | str) -> dict[str, bytes]:
    """OCI-relevant xattrs (for SCHILY pax records); overlay bookkeeping is left out."""
    out: dict[str, bytes] = {}
    follow = isinstance(target, int)  # fds refuse follow_symlinks=False; they need no lookup
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        return out
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        try:
            out[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError:
            continue
    return out


class _TarWriter:
    """Headers from :func:`encode_header` and file data, gathered into 1 MiB writes."""

    def __init__(self, sink: HashingWriter, unmap: tuple[int, int, int] | None = None) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.unmap = unmap

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        """The owner to record: with ``unmap`` (host uid, host gid, count of a user
        namespace's range), a host id in the range is written as the id inside."""
        if self.unmap is None:
            return st.st_uid, st.st_gid
        uid, gid, count = self.unmap
        return (st.st_uid - uid if uid <= st.st_uid < uid + count else st.st_uid,
                st.st_gid - gid if gid <= st.st_gid < gid + count else st.st_gid)

    def entry(self, name: str, st: os.stat_result, kind: bytes, **fields: Any) -> None:
        fields.setdefault("mode", stat.S_IMODE(st.st_mode))
        uid, gid = self._ids(st)
        self.buf += encode_header(name, kind, uid=uid, gid=gid,
                                  mtime=int(st.st_mtime), **fields)
        if len(self.buf) >= _CHUNK:
            self.flush()

    def data(self, fd: int, size: int, name: str) -> None:
        """Exactly ``size`` bytes of ``fd`` (the size the header announced), then padding."""
        left = size
        while left:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                raise ImageError(f"{name} shrank while it was being archived; is the "
                                 "container still writing to it?")
            self.buf += chunk
            left -= len(chunk)
            if len(self.buf) >= _CHUNK:
                self.flush()
        self.buf += padding(size)

    def flush(self) -> None:
        if self.buf:
            self.sink.write(bytes(self.buf))
            self.buf.clear()

    def close(self) -> None:
        self.buf += END_OF_ARCHIVE
        self.buf += bytes(-(self.sink.count + len(self.buf)) % _RECORD)  # as tar pads to 10 KiB
        self.flush()


def write_layer_tar(src: str | os.PathLike[str], out: BinaryIO | None,
                    unmap: tuple[int, int, int] | None = None) -> TarSummary:
    """Write the tree at ``src`` as an OCI layer tar to ``out`` (or only hash it if None).

    ``unmap`` (host uid, host gid, count): the tree is the upper layer of a container with a
    user namespace, whose files belong to host ids of its range; they are written as the ids
    inside, so the layer means the same in any container. Returns the diff_id, the tar's size
    and the content size (regular file bytes, counting each hardlinked inode once).
    """
    sink = HashingWriter(out)
    tar = _TarWriter(sink, unmap)
    seen: dict[tuple[int, int], str] = {}
    content = 0
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
            tar.entry(prefix, st, DIRECTORY, xattrs=_xattrs(dirfd))
        try:
            opaque = os.getxattr(dirfd, OPAQUE_XATTR) == b"y"
        except OSError:
            opaque = False
        if opaque and prefix:
            tar.entry(prefix + OPAQUE_MARKER, os.stat(dirfd), REGULAR, mode=0o644)
        for name in sorted(filenames):
            content += _add_entry(tar, dirfd, name, prefix + name, seen)
    tar.close()
    return TarSummary(sink.digest, sink.count, content)


def _add_entry(tar: _TarWriter, dirfd: int, name: str, arcname: str,
               seen: dict[tuple[int, int], str]) -> int:
    """Add one non-directory entry; return the content bytes it adds."""
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        whiteout = os.path.join(os.path.dirname(arcname), WHITEOUT_PREFIX + name)
        tar.entry(whiteout, st, REGULAR, mode=0o644)
        return 0
    if stat.S_ISLNK(mode):
        tar.entry(arcname, st, SYMLINK, linkname=os.readlink(name, dir_fd=dirfd))
        return 0
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in seen:
        tar.entry(arcname, st, HARDLINK, linkname=seen[key])
        return 0
    if stat.S_ISREG(mode):
        if st.st_nlink > 1:
            seen[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            # The size is the one lstat saw: the header is written before the data.
            tar.entry(arcname, st, REGULAR, size=st.st_size, xattrs=_xattrs(fd))
            tar.data(fd, st.st_size, arcname)
        finally:
            os.close(fd)
        return st.st_size
    if stat.S_ISFIFO(mode):
        tar.entry(arcname, st, FIFO)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        tar.entry(arcname, st, CHAR if stat.S_ISCHR(mode) else BLOCKDEV,
                  devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev))
    # sockets are not representable in tar and are skipped, as GNU tar does
    return 0
