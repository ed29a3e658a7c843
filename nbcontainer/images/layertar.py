"""Write a layer directory back out as a deterministic OCI layer tar.

Used by ``save`` (stored layer -> blob), by ``commit`` (a container's upper directory -> new
layer, or only its diff_id when a stopped container's upper directory is moved into the store
as it is) and to compute the diff_id of layers we make ourselves (busybox). The walk is by
directory fds (``os.scandir`` of an fd opened ``O_DIRECTORY|O_NOFOLLOW`` below its parent's)
and files are opened with ``O_NOFOLLOW``, so a container swapping a file or a directory for a
symlink while we read its upper directory cannot make us archive a host file. Per small file it
makes five system calls (lstat, open, flistxattr, read, close; GNU tar makes seven).

Overlay's forms are translated back to OCI's: a 0/0 character device becomes an empty
``.wh.NAME`` file, a directory with ``trusted.overlay.opaque=y`` gains a ``.wh..wh..opq`` entry,
and other ``trusted.overlay.*`` xattrs (origin, impure, redirect...) are overlay bookkeeping and
are left out. Entries are sorted, xattrs sorted and user/group names left empty, and headers
are encoded by :func:`nbcontainer.images.tarstream.encode_header` (not tarfile, whose bytes vary
between Python versions), so the same tree always gives the same bytes (and so the same
diff_id).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from operator import attrgetter
from typing import BinaryIO

from nbcontainer.errors import ImageError
from nbcontainer.images.extract import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from nbcontainer.images.tarstream import (
    BLOCK,
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    END_OF_ARCHIVE,
    FIFO,
    HARDLINK,
    MAX_ID,
    MAX_SIZE,
    REGULAR,
    SYMLINK,
    encode_header,
    ustar_block,
)

_CHUNK = 1 << 20
_ZEROS = bytes(BLOCK)
_DIRECT = 64 << 10  # pieces of file data at least this large skip the buffer
_RECORD = 20 * 512  # tar's default record size: archives are padded to a multiple of it


@dataclass(frozen=True)
class TarSummary:
    """The diff_id and sizes of a tar just written."""

    diff_id: str
    tar_size: int
    content_size: int
    entries: int = 0


class HashingWriter:
    """A write-only stream that hashes and counts, optionally passing bytes on."""

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes | bytearray) -> int:
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
    return _split_xattrs(target, _list_xattrs(target))[0]


def _list_xattrs(target: int | str, dir_fd: int | None = None) -> list[str]:
    """The xattr names of an fd (or of ``target`` below ``dir_fd``, not followed); [] on error."""
    try:
        if isinstance(target, int):
            return os.listxattr(target)
        return os.listxattr(target if dir_fd is None else f"/proc/self/fd/{dir_fd}/{target}",
                            follow_symlinks=False)
    except OSError:
        return []


def _split_xattrs(fd: int | str, names: list[str]) -> tuple[dict[str, bytes], list[str]]:
    """(the xattrs a layer records, the overlay bookkeeping names it leaves out)."""
    kept: dict[str, bytes] = {}
    overlay: list[str] = []
    follow = isinstance(fd, int)  # fds refuse follow_symlinks=False; they need no lookup
    for name in names:
        if name.startswith("trusted.overlay."):
            overlay.append(name)
            continue
        try:
            kept[name] = os.getxattr(fd, name, follow_symlinks=follow)
        except OSError:
            continue
    return kept, overlay


@dataclass
class AdoptPlan:
    """What must change in a tree for it to *be* the layer its tar describes, in place.

    Filled by :func:`write_layer_tar` while it hashes an upper directory that is to become a
    stored layer by a rename instead of a copy (a stopped container's commit). The stored form
    of a layer is what :func:`~nbcontainer.images.extract.extract_layer` makes of its tar; the
    upper directory is already that form except for what the tar leaves out or the extractor
    refuses, listed here per entry (paths relative to the tree, "" for its root):

    - ``strip``: xattrs to remove: overlay bookkeeping (``trusted.overlay.*`` but an opaque
      directory's ``opaque=y``), and every xattr of entries whose tar form has none (symlinks,
      FIFOs, whiteouts, the root);
    - ``drop``: entries the extractor does not create (sockets, device nodes but whiteouts);
    - ``chown``: (path, uid, gid, mode to restore or -1, security.capability to restore or
      None): a user namespace container's files, from host ids to the ids inside (-1: the
      id stays; a whiteout made with another mode than overlay's 0 gets 0 this way);
    - ``dir_mtimes``: directories whose mtime is put back after ``drop`` removed a child;
    - ``refuse``: why the tree cannot be adopted as it is (a name that the tar turns into a
      whiteout, ``.wh.*``); the caller then copies through the tar instead.
    """

    strip: list[tuple[str, list[str]]] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    chown: list[tuple[str, int, int, int, bytes | None]] = field(default_factory=list)
    dir_mtimes: dict[str, int] = field(default_factory=dict)
    refuse: str = ""


class _TarWriter:
    """Headers from :func:`encode_header` and file data, gathered into 1 MiB writes."""

    def __init__(self, sink: HashingWriter, unmap: tuple[int, int, int] | None = None) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.unmap = unmap
        self.entries = 0

    def ids(self, st: os.stat_result) -> tuple[int, int]:
        """The owner to record: with ``unmap`` (host uid, host gid, count of a user
        namespace's range), a host id in the range is written as the id inside."""
        if self.unmap is None:
            return st.st_uid, st.st_gid
        uid, gid, count = self.unmap
        return (st.st_uid - uid if uid <= st.st_uid < uid + count else st.st_uid,
                st.st_gid - gid if gid <= st.st_gid < gid + count else st.st_gid)

    def entry(self, name: str, st: os.stat_result, kind: bytes, mode: int = -1, size: int = 0,
              linkname: str = "", xattrs: dict[str, bytes] | None = None, devmajor: int = 0,
              devminor: int = 0) -> None:
        self.entries += 1
        uid, gid = (st.st_uid, st.st_gid) if self.unmap is None else self.ids(st)
        self.buf += encode_header(name, kind, mode=st.st_mode if mode < 0 else mode, uid=uid,
                                  gid=gid, size=size, mtime=int(st.st_mtime), linkname=linkname,
                                  devmajor=devmajor, devminor=devminor, xattrs=xattrs)
        if len(self.buf) >= _CHUNK:
            self.flush()

    def data(self, fd: int, size: int, name: str, done: int = 0) -> None:
        """Exactly ``size`` bytes of ``fd`` (the size the header announced; ``done`` of them
        are in the buffer already), then padding."""
        left = size - done
        buf = self.buf
        while left:
            chunk = os.read(fd, left if left < _CHUNK else _CHUNK)
            if not chunk:
                raise ImageError(f"{name} shrank while it was being archived; is the "
                                 "container still writing to it?")
            left -= len(chunk)
            if len(chunk) >= _DIRECT:  # a large file's piece: to the sink as it is, no copy
                self.flush()
                self.sink.write(chunk)
                continue
            buf += chunk
            if len(buf) >= _CHUNK:
                self.flush()
        buf += _ZEROS[:-size % BLOCK]

    def flush(self) -> None:
        if self.buf:
            self.sink.write(self.buf)  # the sink hashes and writes it before returning
            self.buf.clear()

    def close(self) -> None:
        self.buf += END_OF_ARCHIVE
        self.buf += bytes(-(self.sink.count + len(self.buf)) % _RECORD)  # as tar pads to 10 KiB
        self.flush()


def write_layer_tar(src: str | os.PathLike[str], out: BinaryIO | None,
                    unmap: tuple[int, int, int] | None = None,
                    plan: AdoptPlan | None = None) -> TarSummary:
    """Write the tree at ``src`` as an OCI layer tar to ``out`` (or only hash it if None).

    ``unmap`` (host uid, host gid, count): the tree is the upper layer of a container with a
    user namespace, whose files belong to host ids of its range; they are written as the ids
    inside, so the layer means the same in any container. ``plan``: also note what would have
    to change for the tree itself to be the stored layer (see :class:`AdoptPlan`). Returns the
    diff_id, the tar's size and the content size (regular file bytes, counting each hardlinked
    inode once).

    Order (it fixes the bytes, so the diff_id): a directory's entry, its opaque marker, its
    non-directories by name, then its subdirectories by name, each in the same order below.
    """
    walk = _Walk(_TarWriter(HashingWriter(out), unmap), plan)
    fd = os.open(src, _DIR_FLAGS)
    try:
        walk.directory(fd, "", None)
    finally:
        os.close(fd)
    walk.tar.close()
    return TarSummary(walk.tar.sink.digest, walk.tar.sink.count, walk.content, walk.tar.entries)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_KEEP_ON_CHOWN = stat.S_ISUID | stat.S_ISGID  # chown(2) clears them on non-directories
_CAPABILITY = "security.capability"  # ... and this xattr
_NAME = attrgetter("name")


class _Walk:
    """One pass over a tree by directory fds (a symlink is never followed)."""

    def __init__(self, tar: _TarWriter, plan: AdoptPlan | None) -> None:
        self.tar = tar
        self.plan = plan
        self.seen: dict[tuple[int, int], str] = {}
        self.content = 0

    def directory(self, dfd: int, prefix: str, st: os.stat_result | None) -> None:
        """Archive the directory open as ``dfd`` (``prefix`` "" for the root, else "a/b/")."""
        tar, plan = self.tar, self.plan
        names = _list_xattrs(dfd)
        opaque = OPAQUE_XATTR in names and _get(dfd, OPAQUE_XATTR) == b"y"
        if prefix:
            assert st is not None
            xattrs, overlay = _split_xattrs(dfd, names) if names else ({}, [])
            tar.entry(prefix, st, DIRECTORY, xattrs=xattrs)
            if opaque:
                tar.entry(prefix + OPAQUE_MARKER, st, REGULAR, mode=0o644)
                overlay.remove(OPAQUE_XATTR)
            if plan is not None:
                rel = prefix[:-1]
                if overlay:
                    plan.strip.append((rel, overlay))
                self._chown(rel, st, False)
        elif plan is not None and names:
            plan.strip.append(("", names))  # the tar has no entry for the root
        files: list[os.DirEntry[str]] = []
        dirs: list[os.DirEntry[str]] = []
        with os.scandir(dfd) as it:
            for entry in it:
                (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry)
        files.sort(key=_NAME)
        other = self.other
        for entry in files:
            other(dfd, entry.name, prefix, entry.stat(follow_symlinks=False))
        dirs.sort(key=_NAME)
        for entry in dirs:
            if plan is not None and entry.name.startswith(WHITEOUT_PREFIX):
                plan.refuse = plan.refuse or f"a directory is named {prefix}{entry.name}"
            try:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # removed or replaced while we read (a running container)
                raise
            try:
                self.directory(sub, prefix + entry.name + "/", os.fstat(sub))
            finally:
                os.close(sub)

    def _chown(self, rel: str, st: os.stat_result, regular: bool, fd: int | None = None,
               names: list[str] | None = None) -> None:
        """Note the owner change ``unmap`` asks for (and what chown would clear)."""
        assert self.plan is not None
        if self.tar.unmap is None:
            return
        uid, gid = self.tar.ids(st)
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        mode = stat.S_IMODE(st.st_mode) if regular and st.st_mode & _KEEP_ON_CHOWN else -1
        caps = None
        if regular and fd is not None and names and _CAPABILITY in names:
            caps = _get(fd, _CAPABILITY)
        self.plan.chown.append((rel, uid, gid, mode, caps))

    def other(self, dfd: int, name: str, prefix: str, st: os.stat_result) -> None:
        """Add one non-directory entry (and note its changes in the plan)."""
        tar, plan = self.tar, self.plan
        arcname = prefix + name
        mode = st.st_mode
        if plan is not None and name.startswith(WHITEOUT_PREFIX):
            plan.refuse = plan.refuse or f"an entry is named {arcname}"
        if stat.S_ISREG(mode) and st.st_nlink == 1:  # by far the most common: first
            self.regular(dfd, name, arcname, st)
            return
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            tar.entry(prefix + WHITEOUT_PREFIX + name, st, REGULAR, mode=0o644)
            self._bare(dfd, name, arcname, st)
            if plan is not None and stat.S_IMODE(mode):  # the extractor's have mode 0, as
                plan.chown.append((arcname, -1, -1, 0, None))  # overlay's own
            return
        if stat.S_ISLNK(mode):
            tar.entry(arcname, st, SYMLINK, linkname=os.readlink(name, dir_fd=dfd))
            self._bare(dfd, name, arcname, st)
            return
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.seen:
            tar.entry(arcname, st, HARDLINK, linkname=self.seen[key])
            return
        if stat.S_ISREG(mode):
            self.seen[key] = arcname
            self.regular(dfd, name, arcname, st)
            return
        if stat.S_ISFIFO(mode):
            tar.entry(arcname, st, FIFO)
            self._bare(dfd, name, arcname, st)
            return
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            tar.entry(arcname, st, CHAR if stat.S_ISCHR(mode) else BLOCKDEV,
                      devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev))
        # sockets are not representable in tar and are skipped, as GNU tar does; the
        # extractor skips devices
        if plan is not None:
            plan.drop.append(arcname)
            plan.dir_mtimes.setdefault(prefix[:-1], os.fstat(dfd).st_mtime_ns)

    def regular(self, dfd: int, name: str, arcname: str, st: os.stat_result) -> None:
        """A regular file's header and data (the size lstat saw: the header comes first)."""
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        try:
            try:
                names = os.listxattr(fd)
            except OSError:
                names = []
            if names:
                xattrs, overlay = _split_xattrs(fd, names)
            else:
                xattrs, overlay = None, None
            tar = self.tar
            tar.entries += 1
            uid, gid = (st.st_uid, st.st_gid) if tar.unmap is None else tar.ids(st)
            size, mtime = st.st_size, int(st.st_mtime)
            raw = arcname.encode("utf-8", "surrogateescape")
            if (xattrs is None and len(raw) <= 100 and raw.isascii() and uid < MAX_ID
                    and gid < MAX_ID and size < MAX_SIZE and 0 <= mtime < MAX_SIZE):
                # encode_header's one-block case, without its checks (saves ~10% here)
                tar.buf += ustar_block(raw, st.st_mode & 0o7777, uid, gid, size, mtime, REGULAR,
                                       b"", 0, 0)
            else:
                tar.buf += encode_header(arcname, REGULAR, mode=st.st_mode, uid=uid, gid=gid,
                                         size=size, mtime=mtime, xattrs=xattrs)
            data = os.read(fd, size) if 0 < size < _CHUNK else b""
            if len(data) == size:  # a small file: one read (none if empty)
                tar.buf += data
                tar.buf += _ZEROS[:-size % BLOCK]
                if len(tar.buf) >= _CHUNK:
                    tar.flush()
            else:
                tar.buf += data
                tar.data(fd, size, arcname, len(data))
            if self.plan is not None:
                if overlay:
                    self.plan.strip.append((arcname, overlay))
                self._chown(arcname, st, True, fd, names)
        finally:
            os.close(fd)
        self.content += size

    def _bare(self, dfd: int, name: str, arcname: str, st: os.stat_result) -> None:
        """An entry whose tar form has no xattrs: note its xattrs and owner in the plan."""
        if self.plan is None:
            return
        names = _list_xattrs(name, dfd)
        if names:
            self.plan.strip.append((arcname, names))
        self._chown(arcname, st, False)


def _get(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None
