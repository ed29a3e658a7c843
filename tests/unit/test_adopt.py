"""A tree moved into the store (``adopt_tree``) is the layer the tar copy (``publish_tree``) makes.

The same upper-directory-shaped tree is built twice, byte for byte and with the same times:
one copy goes through the old path (layer tar -> safe extractor -> store), the other is renamed
into a second store and fixed in place. Both must give the same diff_id and the same stored
tree: types, modes, owners, contents, link targets, device numbers, hardlink groups, every
xattr (``trusted.*`` too) and mtimes to the second (what a tar carries).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from nbcontainer.images.layertar import write_layer_tar
from nbcontainer.images.snapshot import CannotAdopt, adopt_tree, publish_tree
from nbcontainer.images.store import ImageStore

pytestmark = pytest.mark.root

HOST = 100_000  # the host id range of a user namespace container (the ``unmap`` cases)
# security.capability, VFS_CAP_REVISION_2 with the effective bit: cap_net_bind_service
CAPS = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)


def build(root: Path, base: int) -> None:
    """An overlay upper directory with everything commit meets; owners offset by ``base``."""
    def own(path: Path, uid: int, gid: int) -> None:
        os.chown(path, base + uid, base + gid, follow_symlinks=False)

    root.mkdir(mode=0o700)
    os.setxattr(root, "trusted.overlay.impure", b"y")
    os.setxattr(root, "user.on-root", b"dropped: the tar has no root entry")
    (root / "a" / "b").mkdir(parents=True)
    os.setxattr(root / "a", "user.dir", b"kept")
    os.setxattr(root / "a", "trusted.overlay.impure", b"y")
    f = root / "a" / "f"
    f.write_bytes(b"content\n" * 100)
    os.setxattr(f, "user.k", b"v")
    os.setxattr(f, "trusted.keep", b"a trusted xattr that is not overlay's")
    os.setxattr(f, "trusted.overlay.origin", b"\x00bookkeeping")
    own(f, 1000, 2000)
    os.chmod(f, 0o4755)  # after chown, which clears it
    os.setxattr(f, "security.capability", CAPS)
    os.link(f, root / "a" / "b" / "hl")
    os.symlink("../f", root / "a" / "b" / "sl")
    os.setxattr(root / "a" / "b" / "sl", "trusted.overlay.origin", b"x", follow_symlinks=False)
    own(root / "a" / "b" / "sl", 3, 4)
    os.symlink("/nowhere", root / "dangling")
    os.mknod(root / "a" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout (mode 0
    # when overlay makes it; this one as a process with CAP_MKNOD could)
    own(root / "a" / "gone", 5, 6)
    (root / "opq").mkdir()
    os.setxattr(root / "opq", "trusted.overlay.opaque", b"y")
    (root / "opq" / "only").write_text("only\n")
    (root / "xw").mkdir()
    os.setxattr(root / "xw", "trusted.overlay.opaque", b"x")  # not a replaced dir: dropped
    os.mkfifo(root / "a" / "fifo", 0o640)
    os.mknod(root / "a" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # not created
    os.mknod(root / "a" / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))  # not created
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "a" / "sock"))                                  # not in a tar
    (root / ("L" * 150)).write_text("long name\n")
    for mode in (0o666, 0o600, 0o444, 0o2755, 0o1777, 0o000):  # past the umask, special bits
        (root / f"mode-{mode:04o}").write_bytes(b"m" * mode)
        os.chmod(root / f"mode-{mode:04o}", mode)
    (root / "big").write_bytes(bytes(range(256)) * 6000)  # more than the writer's 1 MiB pieces
    (root / "dé j").mkdir(mode=0o1777)
    (root / "dé j" / "é").write_text("not ascii\n")
    own(root / "dé j", 7, 8)
    own(root / "opq", 0, 0)
    own(root / "a", 0, 0)
    t = 1_700_000_000
    for n, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(root))):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            ns = (t + n) * 10**9 + 123_456_789  # sub-second parts: a tar keeps seconds
            os.utime(path, ns=(ns, ns), follow_symlinks=False)


def snapshot(top: Path) -> dict[str, tuple]:
    """Everything a layer's tree says, below ``top``, comparable between two stores."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            xattrs = sorted((n, os.getxattr(path, n, follow_symlinks=False))
                            for n in os.listxattr(path, follow_symlinks=False))
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), extra, xattrs)
    for group in inodes.values():
        for rel in group:
            out[rel] = (*out[rel], sorted(group))
    return out


@pytest.mark.parametrize("userns", [False, True], ids=["host-ids", "userns-unmapped"])
def test_moved_layer_is_the_copied_layer(tmp_path: Path, userns: bool) -> None:
    base = HOST if userns else 0
    unmap = (HOST, HOST, 65536) if userns else None
    try:
        build(tmp_path / "copy-src", base)
    except OSError as err:
        if err.errno == errno.EOPNOTSUPP:
            pytest.skip(f"{tmp_path} has no user.* or trusted.* xattrs: {err}")
        raise
    build(tmp_path / "move-src", base)
    old_store, new_store = ImageStore(tmp_path / "old"), ImageStore(tmp_path / "new")
    old = publish_tree(old_store, tmp_path / "copy-src", "test", unmap=unmap)
    new, moved = adopt_tree(new_store, tmp_path / "move-src", "test", unmap)
    assert old is not None and new is not None and moved
    assert new.diff_id == old.diff_id
    assert (new.size, new.tar_size) == (old.size, old.tar_size)
    assert not (tmp_path / "move-src").exists()
    old_fs, new_fs = old_store.layer_fs(old.diff_id), new_store.layer_fs(new.diff_id)
    want, got = snapshot(old_fs), snapshot(new_fs)
    assert got == want
    root_old, root_new = os.lstat(old_fs), os.lstat(new_fs)
    assert (root_new.st_mode, root_new.st_uid, root_new.st_gid) == (
        root_old.st_mode, root_old.st_uid, root_old.st_gid)
    assert os.listxattr(new_fs) == os.listxattr(old_fs) == []
    # what the comparison must have covered, spelled out
    assert "a/sock" not in got and "a/null" not in got and "a/loop" not in got
    assert stat.S_ISCHR(got["a/gone"][0]) and got["a/gone"][4] == 0
    assert got["a/gone"][1:3] == (5, 6)
    assert got["a/f"][1:3] == (1000, 2000) and stat.S_IMODE(got["a/f"][0]) == 0o4755
    assert dict(got["a/f"][5]) == {"security.capability": CAPS, "user.k": b"v",
                                   "trusted.keep": b"a trusted xattr that is not overlay's"}
    assert got["a/f"][6] == ["a/b/hl", "a/f"]
    assert dict(got["opq"][5]) == {"trusted.overlay.opaque": b"y"}
    assert got["xw"][5] == [] and got["a/b/sl"][5] == []
    assert stat.S_IMODE(got["mode-2755"][0]) == 0o2755
    assert stat.S_IMODE(got["mode-0666"][0]) == 0o666
    assert dict(got["a"][5]) == {"user.dir": b"kept"}
    # ``save`` writes the same tar from either (not the diff_id: the devices are gone)
    assert write_layer_tar(new_fs, None) == write_layer_tar(old_fs, None)


def test_a_whiteout_name_is_copied_not_moved(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / ".wh.x").write_text("a file the tar would turn into a whiteout\n")
    os.setxattr(src / "d", "trusted.overlay.impure", b"y")
    with pytest.raises(CannotAdopt, match=r"d/\.wh\.x"):
        adopt_tree(ImageStore(tmp_path / "store"), src, "test")
    assert os.listxattr(src / "d") == ["trusted.overlay.impure"]  # untouched


def test_a_layer_already_stored_leaves_the_tree_alone(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("same\n")
        os.utime(tmp_path / name / "f", (1, 1))
    first, moved = adopt_tree(store, tmp_path / "one", "test")
    assert first is not None and moved
    assert write_layer_tar(store.layer_fs(first.diff_id), None).diff_id == first.diff_id
    second, moved = adopt_tree(store, tmp_path / "two", "test")
    assert second == first and not moved
    assert (tmp_path / "two" / "f").read_text() == "same\n"
    (tmp_path / "empty").mkdir()
    assert adopt_tree(store, tmp_path / "empty", "test") == (None, False)
    assert (tmp_path / "empty").is_dir()
