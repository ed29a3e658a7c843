"""Safe, single-pass extraction of one image layer (a tar stream) into a directory.

Why not ``tarfile.extractall`` (even with its filters): its safety rests on path strings, which
has been bypassed repeatedly (CVE-2007-4559, CVE-2024-12718 and friends), it drops xattrs and it
knows nothing about OCI whiteouts. Here :mod:`nbcontainer.images.tarstream` only parses
headers from a forward-only stream (several times faster than tarfile's stream mode); every
filesystem operation is ours and is done relative to a directory file descriptor
obtained by walking the layer root one component at a time with ``O_NOFOLLOW|O_DIRECTORY``
(openat(2) semantics through ``dir_fd=``). So:

- names are never trusted: a leading ``/`` is dropped (as GNU tar does), ``..`` is rejected;
- a symlink in the layer is stored verbatim and never followed: writing through a symlinked
  directory fails the walk (``ELOOP``/``ENOTDIR``) and is rejected;
- a later entry of the same name replaces the earlier one (OCI: later wins) by unlinking it first
  and creating with ``O_EXCL|O_NOFOLLOW``, so it never writes through an old symlink;
- hardlinks must name an entry already extracted in this layer, resolved by the same walk;
- block and character devices are skipped (and reported); the only device we create is the
  overlay whiteout, a 0/0 character device, from an OCI ``.wh.NAME`` entry; ``.wh..wh..opq``
  becomes the ``trusted.overlay.opaque=y`` xattr on its directory;
- ``trusted.overlay.*`` xattrs from the tar are dropped: they would steer overlayfs;
- total uncompressed bytes, entry count and wall time are capped (:class:`ExtractLimits`).

The uncompressed stream is hashed as it is read, so one pass yields both the tree and the layer's
OCI diff_id (sha256 of the uncompressed tar).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nbcontainer.errors import ImageError, UnsafeLayerError
from nbcontainer.images.tarstream import Member, TarFormatError, TarStream

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_FDS = 128
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class ExtractLimits:
    """Caps against decompression bombs; every import path takes one so tests can shrink it."""

    max_bytes: int = 64 << 30
    max_entries: int = 2_000_000
    max_seconds: float = 3600.0
    max_depth: int = 512


@dataclass
class ExtractResult:
    """What one extraction produced: the diff_id plus the facts history and `images` show."""

    diff_id: str
    tar_size: int
    content_size: int
    entries: int
    notes: list[str] = field(default_factory=list)
    implied_dirs: list[str] = field(default_factory=list)


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts what passes through, enforcing a byte cap."""

    def __init__(self, src: BinaryIO, max_bytes: int | None = None, what: str = "layer") -> None:
        self._src = src
        self.sha = hashlib.sha256()
        self.count = 0
        self._max = max_bytes
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n if n is not None and n >= 0 else _CHUNK)
        if data:
            self.sha.update(data)
            self.count += len(data)
            if self._max is not None and self.count > self._max:
                raise UnsafeLayerError(
                    f"{self._what} is larger than the {self._max} byte limit once decompressed "
                    "(decompression bomb?); raise ExtractLimits.max_bytes if it is genuine"
                )
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to EOF so the digest covers the whole stream (tar padding included)."""
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _rmtree_at(parent_fd: int, name: str) -> None:
    """Remove the tree ``name`` below the directory ``parent_fd`` without following links.

    shutil.rmtree takes ``dir_fd`` only from Python 3.11; the magic link of the parent fd
    gives the same (the last component is lstat'ed, never followed, by rmtree).
    """
    shutil.rmtree(f"/proc/self/fd/{parent_fd}/{name}")


def decompressed(stream: BinaryIO) -> BinaryIO:
    """Wrap ``stream`` in the decompressor its magic bytes call for (gzip, zstd or none)."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[type-var]
    head = buffered.peek(4)[:4]
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError as err:
            raise ImageError(
                "this layer is zstd-compressed; install the `zstandard` package to import it"
            ) from err
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return buffered


def clean_name(name: str, max_depth: int = 512) -> tuple[str, ...]:
    """Split a tar member name into safe components: leading ``/`` dropped, ``..`` rejected."""
    if "\x00" in name:
        raise UnsafeLayerError(f"layer entry name {name!r} contains a NUL byte")
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(f"layer entry {name!r} climbs out of the layer with '..'; rejected")
    if len(parts) > max_depth:
        raise UnsafeLayerError(f"layer entry {name[:80]!r}... is nested deeper than {max_depth}")
    return tuple(parts)


class _ThroughLink(UnsafeLayerError):
    """A path went through a symlink or a non-directory; ``symlink`` says which."""

    def __init__(self, message: str, symlink: bool = True) -> None:
        super().__init__(message)
        self.symlink = symlink


class _Tree:
    """Directory fds inside one layer root, opened only by walking with O_NOFOLLOW."""

    def __init__(self, root_fd: int, max_depth: int) -> None:
        self.root_fd = root_fd
        self.max_depth = max_depth
        self._fds: dict[tuple[str, ...], int] = {}
        self.implied: set[tuple[str, ...]] = set()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def forget(self, parts: tuple[str, ...]) -> None:
        """Drop cached fds for ``parts`` and below: that path was just replaced or removed."""
        n = len(parts)
        for key in [k for k in self._fds if k[:n] == parts]:
            os.close(self._fds.pop(key))

    def dir(self, parts: tuple[str, ...], create: bool = True, what: str = "") -> int:
        """Return an fd for directory ``parts``, creating missing ones (mode 0755, as tar does)."""
        if not parts:
            return self.root_fd
        cached = self._fds.get(parts)
        if cached is not None:
            return cached
        parent = self.dir(parts[:-1], create, what)
        leaf = parts[-1]
        try:
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(leaf, 0o755, dir_fd=parent)
            self.implied.add(parts)
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                # O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR, not ELOOP: look.
                st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
                raise _ThroughLink(
                    f"layer entry {what!r} goes through {'/'.join(parts)!r}, which is a symlink "
                    "or not a directory; refusing to write through it",
                    symlink=stat.S_ISLNK(st.st_mode),
                ) from err
            raise
        if len(self._fds) >= _MAX_FDS:
            self.close()
        self._fds[parts] = fd
        return fd

    def remove(self, parent_fd: int, parts: tuple[str, ...]) -> None:
        """Remove whatever is at ``parts`` (file, link or whole directory), never following."""
        leaf = parts[-1]
        try:
            os.unlink(leaf, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except IsADirectoryError:
            self.forget(parts)
            _rmtree_at(parent_fd, leaf)
        except PermissionError:
            # Linux returns EPERM (not EISDIR) for unlink() on a directory.
            st = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise
            self.forget(parts)
            _rmtree_at(parent_fd, leaf)


class LayerExtractor:
    """Applies tar members of one layer to a fresh directory; see the module docstring."""

    def __init__(self, dest: Path, limits: ExtractLimits, same_owner: bool) -> None:
        self.limits = limits
        self.same_owner = same_owner
        self.notes: list[str] = []
        self.content_size = 0
        self.entries = 0
        self._dirs: dict[tuple[str, ...], Member] = {}
        self._deadline = time.monotonic() + limits.max_seconds
        # what a file we create gets without asking (owner, permission bits), so the fchown
        # and fchmod that would set the same are left out: 2 of 6 syscalls per file
        self._own = (os.geteuid(), os.getegid())
        self._umask = _umask()
        root_fd = os.open(dest, _DIR_FLAGS)
        self.tree = _Tree(root_fd, limits.max_depth)

    def close(self) -> None:
        self.tree.close()
        os.close(self.tree.root_fd)

    def note(self, text: str) -> None:
        """Record something neutralised, so the caller can tell the user (kept short)."""
        if len(self.notes) < 50:
            self.notes.append(text)

    def apply(self, tar: TarStream, m: Member) -> None:
        """Apply one member: the single place where tar entries touch the filesystem."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeLayerError(
                f"layer has more than {self.limits.max_entries} entries (limit); rejected"
            )
        if time.monotonic() > self._deadline:
            raise UnsafeLayerError(
                f"layer extraction took longer than {self.limits.max_seconds}s (limit); rejected"
            )
        parts = clean_name(m.name, self.limits.max_depth)
        if not parts:
            if m.isdir():
                self._dirs[()] = m
            return
        leaf = parts[-1]
        if leaf.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, m)
            return
        parent = self.tree.dir(parts[:-1], what=m.name)
        if m.isreg():
            self._file(tar, parent, parts, m)
        elif m.isdir():
            self._mkdir(parent, parts, m)
        elif m.issym():
            self._replace(parent, parts)
            os.symlink(m.linkname, leaf, dir_fd=parent)
            self._owner_times(parent, leaf, m)
        elif m.islnk():
            self._hardlink(parent, parts, m)
        elif m.isfifo():
            self._replace(parent, parts)
            os.mkfifo(leaf, 0o600, dir_fd=parent)
            self._owner_times(parent, leaf, m, mode=True)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            self._replace(parent, parts)
            self._mknod_whiteout(parent, leaf, m.name)
        elif m.ischr() or m.isblk():
            kind = "character" if m.ischr() else "block"
            self.note(f"skipped {kind} device {m.name} ({m.devmajor},{m.devminor})")
        else:
            self.note(f"skipped {m.name}: unsupported tar entry type {m.type!r}")

    def _replace(self, parent: int, parts: tuple[str, ...]) -> None:
        """Make room for a new entry: a later entry of the same name wins (OCI)."""
        self.tree.remove(parent, parts)
        self._dirs.pop(parts, None)

    def _file(self, tar: TarStream, parent: int, parts: tuple[str, ...], m: Member) -> None:
        leaf = parts[-1]
        mode = m.mode & 0o7777
        # Created with its final permission bits (special bits come with fchmod, after
        # fchown, which clears them): the staging directory is the caller's, mode 0700.
        try:
            fd = os.open(leaf, _FILE_FLAGS, mode & 0o777, dir_fd=parent)
        except FileExistsError:
            self._replace(parent, parts)
            fd = os.open(leaf, _FILE_FLAGS, mode & 0o777, dir_fd=parent)
        try:
            if m.size:
                whole = tar.whole()
                for view in (whole,) if whole is not None else tar.data():
                    while view:
                        view = view[os.write(fd, view):]
            self.content_size += m.size
            if self.same_owner and (m.uid, m.gid) != self._own:
                os.fchown(fd, m.uid, m.gid)
            if mode != mode & 0o777 & ~self._umask:
                os.fchmod(fd, mode)
            if m.xattrs:
                self._xattrs(fd, m)
            ns = int(m.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _mkdir(self, parent: int, parts: tuple[str, ...], m: Member) -> None:
        leaf = parts[-1]
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self._replace(parent, parts)
                os.mkdir(leaf, 0o700, dir_fd=parent)
        fd = self.tree.dir(parts, what=m.name)
        self.tree.implied.discard(parts)
        if self.same_owner:
            os.fchown(fd, m.uid, m.gid)
        self._xattrs(fd, m)
        self._dirs[parts] = m  # mode and mtime are set at the end, after the children

    def _hardlink(self, parent: int, parts: tuple[str, ...], m: Member) -> None:
        target = clean_name(m.linkname, self.limits.max_depth)
        if not target:
            raise UnsafeLayerError(f"hardlink {m.name!r} points at the layer root; rejected")
        if target == parts:
            return
        try:
            tparent = self.tree.dir(target[:-1], create=False, what=m.linkname)
            st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
        except FileNotFoundError as err:
            raise UnsafeLayerError(
                f"hardlink {m.name!r} -> {m.linkname!r}: the target is not in this layer; "
                "hardlinks may only point at earlier entries of the same layer"
            ) from err
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayerError(f"hardlink {m.name!r} -> {m.linkname!r} names a directory")
        self._replace(parent, parts)
        os.link(target[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent,
                follow_symlinks=False)

    def _whiteout(self, parts: tuple[str, ...], m: Member) -> None:
        leaf = parts[-1]
        try:
            parent = self.tree.dir(parts[:-1], what=m.name)
        except _ThroughLink as err:
            if err.symlink:
                raise
            # umoci writes e.g. `d` (now a file) then `d/.wh.x`: the file already hides all of
            # the lower `d/`, so the whiteout has nothing left to do.
            self.note(f"ignored whiteout {m.name}: its directory is a file in this layer")
            return
        if leaf == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if leaf.startswith(WHITEOUT_PREFIX * 2):
            self.note(f"ignored aufs metadata entry {m.name}")
            return
        name = leaf[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise UnsafeLayerError(f"whiteout {m.name!r} names {name!r}, which is not a file name")
        target = parts[:-1] + (name,)
        self._replace(parent, target)
        self._mknod_whiteout(parent, name, m.name)
        if self.same_owner:
            os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        ns = int(m.mtime * 1e9)  # the entry's, so that `save` writes the same tar again
        os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def _mknod_whiteout(self, parent: int, name: str, what: str) -> None:
        """An overlay whiteout is a 0/0 character device (overlayfs docs, "whiteouts")."""
        try:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        except PermissionError as err:
            raise ImageError(
                f"cannot create the overlay whiteout for {what!r}: mknod needs root (CAP_MKNOD)"
            ) from err

    def _owner_times(self, parent: int, leaf: str, m: Member, mode: bool = False) -> None:
        if self.same_owner:
            os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if mode:
            # Safe to follow: we just created this FIFO in our private staging directory.
            os.chmod(leaf, m.mode & 0o7777, dir_fd=parent)
        ns = int(m.mtime * 1e9)
        os.utime(leaf, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def _xattrs(self, fd: int, m: Member) -> None:
        for name, value in m.xattrs.items():
            if name.startswith("trusted.overlay."):
                self.note(f"dropped xattr {name} on {m.name}: it would steer overlayfs")
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as err:
                self.note(f"could not set xattr {name} on {m.name}: {err.strerror}")

    def finish(self) -> None:
        """Set directory modes and mtimes last, so creating children does not disturb them."""
        for parts in sorted(self._dirs, key=len, reverse=True):
            m = self._dirs[parts]
            try:
                fd = self.tree.dir(parts, create=False, what=m.name)
            except (OSError, UnsafeLayerError):
                continue
            os.fchmod(fd, m.mode & 0o7777)
            ns = int(m.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: every file gets its fchmod


def extract_layer(
    stream: BinaryIO,
    dest: str | os.PathLike[str],
    limits: ExtractLimits | None = None,
    same_owner: bool | None = None,
) -> ExtractResult:
    """Extract one layer tar (gzip, zstd or plain) into the empty directory ``dest``.

    Parameters
    ----------
    stream
        The layer blob, read forward once.
    dest
        An existing, empty directory the caller owns (a staging directory of the store).
    limits
        Decompression-bomb caps; the defaults suit real images.
    same_owner
        Keep numeric owners from the tar; default: when running as root.

    Returns
    -------
    ExtractResult
        With the diff_id computed from the uncompressed bytes as they streamed past.

    Raises
    ------
    UnsafeLayerError
        On any entry that tries to escape ``dest`` or exceeds a limit; ``dest`` is then left
        half-filled and the caller must discard it.
    """
    limits = limits or ExtractLimits()
    if same_owner is None:
        same_owner = os.geteuid() == 0
    reader = HashingReader(decompressed(stream), limits.max_bytes)
    ex = LayerExtractor(Path(dest), limits, same_owner)
    try:
        try:
            tar = TarStream(reader)
            for member in tar:
                ex.apply(tar, member)
            ex.finish()
            reader.drain()
        except (TarFormatError, EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise ImageError(f"layer is not a valid tar stream: {err}") from err
        except OSError as err:
            raise ImageError(f"extracting layer into {dest}: {err}") from err
    finally:
        with contextlib.suppress(OSError):
            ex.close()
    implied = sorted("/".join(p) for p in ex.tree.implied)
    return ExtractResult(reader.digest, reader.count, ex.content_size, ex.entries, ex.notes,
                         implied)


def _open_dir_nofollow(root: Path, rel: str) -> int | None:
    """An fd for directory ``rel`` under ``root``, walking without following links, or None."""
    fd = os.open(root, _DIR_FLAGS)
    for part in (p for p in rel.split("/") if p):
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def inherit_implied_dirs(fs: Path, implied: list[str], lowers: list[Path]) -> None:
    """Give directories a layer implied (no tar entry) the attributes they have below.

    Overlay shows an upper directory's owner, mode and mtime, so an implied ``0755 root`` dir
    would mask, say, a lower ``1777`` ``tmp/``. Docker and umoci apply layers onto the lower tree
    and never face this; we extract layers separately, so we copy from the nearest lower layer
    (top first) that has the path, as a directory.
    """
    for rel in implied:
        fd = _open_dir_nofollow(fs, rel)
        if fd is None:
            continue
        try:
            for lower in reversed(lowers):
                lfd = _open_dir_nofollow(lower, rel)
                if lfd is None:
                    continue
                try:
                    st = os.fstat(lfd)
                    with contextlib.suppress(OSError):
                        os.fchown(fd, st.st_uid, st.st_gid)
                    os.fchmod(fd, stat.S_IMODE(st.st_mode))
                    for name in os.listxattr(lfd):
                        if not name.startswith("trusted.overlay."):
                            with contextlib.suppress(OSError):
                                os.setxattr(fd, name, os.getxattr(lfd, name))
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(lfd)
                break
        finally:
            os.close(fd)
