"""A corpus of hostile layers: none may create, change, re-link or re-mode anything outside.

Each case is a layer built here (no committed binaries), imported through the whole pipeline
(OCI layout -> verify -> extract -> publish). Next to the store sits a sentinel tree that the
layers aim at; its full stat snapshot (mode, owner, size, mtime, inode, link count, content,
xattrs) must be identical afterwards. Rejected imports must leave the store as it was: no image
record, no layer, no staging directory. Neutralised ones must publish only inside the layer.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from test_images_helpers import (
    entry,
    make_docker_archive,
    make_oci_layout,
    make_tar,
    sha,
    tree_snapshot,
)

from nbcontainer.errors import ImageError
from nbcontainer.images.extract import ExtractLimits
from nbcontainer.images.oci import import_image
from nbcontainer.images.store import ImageStore

IS_ROOT = os.geteuid() == 0


class Reject(str):
    """Expectation: the import is refused with an error matching this regular expression."""


def _climbs(name: str) -> Reject:
    return Reject(re.escape(f"layer entry '{name}' climbs out of the layer with '..'; rejected"))


def _through(name: str, link: str) -> Reject:
    # One message for two reasons ("a symlink or not a directory"): see issue 17's report.
    return Reject(re.escape(f"layer entry '{name}' goes through '{link}', which is a symlink or "
                            "not a directory; refusing to write through it"))


def _whiteout(name: str, target: str) -> Reject:
    return Reject(re.escape(f"whiteout '{name}' names '{target}', which is not a file name"))


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A sentinel tree to attack, an empty store and an input dir, side by side."""
    s = tmp_path / "sentinel"
    (s / "dir").mkdir(parents=True)
    (s / "secret").write_text("secret\n")
    os.chmod(s / "secret", 0o600)
    (s / "dir" / "inner").write_text("inner\n")
    os.symlink("secret", s / "link")
    (tmp_path / "store").mkdir()
    (tmp_path / "in").mkdir()
    return {"top": tmp_path, "sentinel": s, "store": tmp_path / "store", "in": tmp_path / "in"}


def _fs(store: ImageStore) -> Path:
    [layer] = [p for p in store.layers.iterdir()]
    return layer / "fs"


def E(*args, **kw):  # noqa: N802 - reads like a table row
    return entry(*args, **kw)


# Each case: (id, entries(sentinel) -> list, expectation). Expectation is a Reject (the
# reason the import must be refused for, as a regular expression) or a check
# called with the published layer's fs/ directory.
def _absent(*names: str) -> Callable[[Path], None]:
    def check(fs: Path) -> None:
        for n in names:
            assert not os.path.lexists(fs / n), n
    return check


def _file_is(name: str, data: bytes) -> Callable[[Path], None]:
    def check(fs: Path) -> None:
        p = fs / name
        assert stat.S_ISREG(os.lstat(p).st_mode)
        assert p.read_bytes() == data
    return check


def _no_xattr(path: Path, name: str) -> None:
    assert name not in os.listxattr(path)


def _is_dir(name: str) -> Callable[[Path], None]:
    return lambda fs: stat.S_ISDIR(os.lstat(fs / name).st_mode) or pytest.fail(name)


CASES: list[tuple[str, Callable[[Path], list], object]] = [
    ("dotdot-file", lambda s: [E("../../../sentinel/pwned", data=b"x")],
     _climbs("../../../sentinel/pwned")),
    ("dotdot-deep", lambda s: [E("a/b/../../../../sentinel/pwned", data=b"x")],
     _climbs("a/b/../../../../sentinel/pwned")),
    ("dotdot-dotslash", lambda s: [E("./../pwned", data=b"x")], _climbs("./../pwned")),
    ("dotdot-dir", lambda s: [E("../evil", "dir")], _climbs("../evil/")),
    ("dotdot-symlink-name", lambda s: [E("../evil", "sym", linkname="/")], _climbs("../evil")),
    ("dotdot-in-pax-path", lambda s: [E("ok", data=b"x", pax={"path": "../../pwned"})],
     _climbs("../../pwned")),
    ("dotdot-longname", lambda s: [E("a" * 120 + "/../../../../pwned", data=b"x")],
     _climbs("a" * 120 + "/../../../../pwned")),
    ("absolute-to-sentinel", lambda s: [E(str(s / "pwned"), data=b"x")],
     lambda fs: None),
    ("absolute-overwrite-sentinel", lambda s: [E(str(s / "secret"), data=b"owned")],
     lambda fs: None),
    ("symlink-dir-then-write", lambda s: [E("ln", "sym", linkname=str(s)),
                                          E("ln/pwned", data=b"x")], _through("ln/pwned", "ln")),
    ("relative-symlink-out-then-write",
     lambda s: [E("ln", "sym", linkname="../../../../../../../" + str(s)),
                E("ln/pwned", data=b"x")], _through("ln/pwned", "ln")),
    ("symlink-chain-then-write", lambda s: [E("b", "sym", linkname=str(s)),
                                            E("a", "sym", linkname="b"),
                                            E("a/pwned", data=b"x")],
     _through("a/pwned", "a")),
    ("symlink-to-file-then-overwrite", lambda s: [E("ln", "sym", linkname=str(s / "secret")),
                                                  E("ln", data=b"owned")],
     _file_is("ln", b"owned")),
    ("symlink-then-dir-entry-chmod", lambda s: [E("ln", "sym", linkname=str(s / "dir")),
                                                E("ln", "dir", mode=0o777)], _is_dir("ln")),
    ("dir-replaced-by-symlink-then-write", lambda s: [E("d", "dir"), E("d/f", data=b"1"),
                                                      E("d", "sym", linkname=str(s)),
                                                      E("d/pwned", data=b"x")],
     _through("d/pwned", "d")),
    ("hardlink-dotdot", lambda s: [E("h", "link", linkname="../../sentinel/secret")],
     _climbs("../../sentinel/secret")),
    ("hardlink-absolute", lambda s: [E("h", "link", linkname=str(s / "secret"))],
     Reject(r"hardlink 'h' -> '/.*/sentinel/secret': the target is not in this layer")),
    ("hardlink-through-symlink", lambda s: [E("s", "sym", linkname=str(s)),
                                            E("h", "link", linkname="s/secret")],
     _through("s/secret", "s")),
    ("hardlink-to-outbound-symlink-then-write",
     lambda s: [E("s", "sym", linkname=str(s / "secret")), E("h", "link", linkname="s"),
                E("h", data=b"owned")], _file_is("h", b"owned")),
    ("hardlink-missing-target", lambda s: [E("h", "link", linkname="nope")],
     Reject(r"hardlink 'h' -> 'nope': the target is not in this layer")),
    ("hardlink-to-dir", lambda s: [E("d", "dir"), E("h", "link", linkname="d")],
     Reject(r"hardlink 'h' -> 'd' names a directory")),
    ("hardlink-then-chmod-via-dup", lambda s: [E("f", data=b"1"), E("h", "link", linkname="f"),
                                               E("h", data=b"2", mode=0o4777)],
     _file_is("f", b"1")),
    ("whiteout-dotdot-name", lambda s: [E("d", "dir"), E("d/.wh...", data=b"")],
     _whiteout("d/.wh...", "..")),
    ("whiteout-dot-name", lambda s: [E("d", "dir"), E("d/.wh..", data=b"")],
     _whiteout("d/.wh..", ".")),
    ("whiteout-empty-name", lambda s: [E(".wh.", data=b"")], _whiteout(".wh.", "")),
    ("whiteout-escaping-path", lambda s: [E("../sentinel/.wh.secret", data=b"")],
     _climbs("../sentinel/.wh.secret")),
    ("whiteout-through-symlink", lambda s: [E("ln", "sym", linkname=str(s)),
                                            E("ln/.wh.secret", data=b"")],
     _through("ln/.wh.secret", "ln")),
    ("opaque-through-symlink", lambda s: [E("ln", "sym", linkname=str(s / "dir")),
                                          E("ln/.wh..wh..opq", data=b"")],
     _through("ln/.wh..wh..opq", "ln")),
    ("char-device-mem", lambda s: [E("dev/mem", "chr", dev=(1, 1))], _absent("dev/mem")),
    ("block-device-disk", lambda s: [E("dev/sda", "blk", dev=(8, 0))], _absent("dev/sda")),
    ("char-device-dotdot", lambda s: [E("../mem", "chr", dev=(1, 1))], _climbs("../mem")),
    ("duplicate-file-later-wins", lambda s: [E("x", data=b"A"), E("x", data=b"B")],
     _file_is("x", b"B")),
    ("duplicate-dir-replaced-by-file", lambda s: [E("d", "dir"), E("d/f", data=b"1"),
                                                  E("d", data=b"file")], _file_is("d", b"file")),
    ("file-under-regular-file", lambda s: [E("f", data=b"1"), E("f/x", data=b"2")],
     _through("f/x", "f")),
    ("overlay-redirect-xattr-dropped",
     lambda s: [E("d", "dir", pax={"SCHILY.xattr.trusted.overlay.redirect": "/sentinel"})],
     lambda fs: _no_xattr(fs / "d", "trusted.overlay.redirect")),
    ("aufs-metadata-ignored", lambda s: [E(".wh..wh.plnk", "dir"), E(".wh..wh.aufs", data=b"")],
     _absent(".wh..wh.plnk", ".wh..wh.aufs")),
    ("nul-free-deep-nesting", lambda s: [E("/".join(["d"] * 600) + "/f", data=b"x")],
     Reject(r"layer entry '(d/){40}'\.\.\. is nested deeper than 512")),
]

NEEDS_ROOT = {"whiteout-dotdot-name", "whiteout-dot-name", "overlay-redirect-xattr-dropped"}


def _assert_store_clean(store: ImageStore) -> None:
    for d, what in ((store.images, "an image record"), (store.layers, "a layer"),
                    (store.tmp, "staging")):
        assert not d.exists() or not os.listdir(d), f"a failed import left {what} behind"


@pytest.mark.parametrize(("case", "build", "expect"), CASES, ids=[c[0] for c in CASES])
def test_hostile_layer(world: dict[str, Path], case: str, build, expect) -> None:
    if case in NEEDS_ROOT and not IS_ROOT:
        pytest.skip("needs root (whiteout mknod / trusted xattrs)")
    layer = make_tar(build(world["sentinel"]))
    layout = make_oci_layout(world["in"], [layer])
    skip = (world["store"], world["in"])
    before = tree_snapshot(world["top"], skip)
    store = ImageStore(world["store"])
    if isinstance(expect, Reject):
        with pytest.raises(ImageError, match=expect):
            import_image(layout, "hostile:1", world["store"])
        _assert_store_clean(store)
    else:
        import_image(layout, "hostile:1", world["store"])
        assert not list(store.tmp.iterdir())
        [layer_dir] = list(store.layers.iterdir())
        assert sorted(os.listdir(layer_dir)) == ["fs", "meta.json"]
        expect(_fs(store))  # type: ignore[operator]
    assert tree_snapshot(world["top"], skip) == before, "the layer changed files outside"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) + len(ARCHIVE_CASES) >= 30


def _bomb(world):  # size: 50 MiB of zeros, gzip makes it ~50 KiB
    return make_oci_layout(world["in"], [make_tar([E("z", data=bytes(50 << 20))], True)])


def _many(world):
    return make_oci_layout(world["in"], [make_tar([E(f"f{i}") for i in range(500)])])


def _digest_mismatch(world):
    layout = make_oci_layout(world["in"], [make_tar([E("a", data=b"1")])])
    blobs = layout / "blobs" / "sha256"
    for p in blobs.iterdir():
        if p.read_bytes().startswith(b"a"):
            p.write_bytes(make_tar([E("a", data=b"2")]))
    return layout


def _missing_blob(world):
    layer = make_tar([E("a", data=b"1")])
    layout = make_oci_layout(world["in"], [layer])
    (layout / "blobs" / "sha256" / sha(layer)[7:]).unlink()
    return layout


def _wrong_diff_id(world):
    return make_oci_layout(world["in"], [make_tar([E("a", data=b"1")])], diff_ids=[sha(b"x")])


def _docker_wrong_diff_id(world):
    return make_docker_archive(world["in"] / "d.tar", [make_tar([E("a", data=b"1")])],
                               diff_ids=[sha(b"nope")])


def _second_layer_bad(world):  # the first layer is fine: it must not be published either
    good, bad = make_tar([E("ok", data=b"1")]), make_tar([E("../x", data=b"1")])
    return make_oci_layout(world["in"], [good, bad])


def _index_blob_escape(world):
    layout = make_oci_layout(world["in"], [make_tar([E("a", data=b"1")])])
    (layout / "index.json").write_text(
        '{"schemaVersion":2,"manifests":[{"digest":"sha256:../../../etc/passwd","size":1}]}')
    return layout


ARCHIVE_CASES = [
    ("bomb-size", _bomb, ExtractLimits(max_bytes=1 << 20),
     r"layer is larger than the 1048576 byte limit once decompressed \(decompression bomb\?\)"),
    ("bomb-entries", _many, ExtractLimits(max_entries=100),
     r"layer has more than 100 entries \(limit\); rejected"),
    ("bomb-time", _many, ExtractLimits(max_seconds=0.0),
     r"layer extraction took longer than 0\.0s \(limit\); rejected"),
    ("blob-digest-mismatch", _digest_mismatch, None,
     r"layer blob blobs/sha256/[0-9a-f]{64} has digest sha256:[0-9a-f]{64}, but the manifest "
     r"says sha256:[0-9a-f]{64}: the archive is corrupt or forged"),
    ("manifest-names-missing-blob", _missing_blob, None,
     r"the manifest names blob sha256:[0-9a-f]{64}, which is missing from the archive"),
    ("config-diff-id-mismatch", _wrong_diff_id, None,
     r"layer 0 unpacks to diff_id sha256:[0-9a-f]{64}, but the image config says "
     r"sha256:[0-9a-f]{64}: the archive is corrupt or forged"),
    ("docker-archive-diff-id-mismatch", _docker_wrong_diff_id, None,
     r"layer 0 unpacks to diff_id sha256:[0-9a-f]{64}, but the image config says "
     r"sha256:[0-9a-f]{64}: the archive is corrupt or forged"),
    ("second-layer-bad-first-not-published", _second_layer_bad, None,
     re.escape("layer entry '../x' climbs out of the layer with '..'; rejected")),
    ("descriptor-digest-path-escape", _index_blob_escape, None,
     re.escape("unsupported or malformed digest 'sha256:../../../etc/passwd'; "
               "expected sha256:<64 hex>")),
]


@pytest.mark.parametrize(("case", "build", "limits", "reason"), ARCHIVE_CASES,
                         ids=[c[0] for c in ARCHIVE_CASES])
def test_hostile_archive(world: dict[str, Path], case: str, build, limits, reason) -> None:
    archive = build(world)
    skip = (world["store"], world["in"])
    before = tree_snapshot(world["top"], skip)
    with pytest.raises(ImageError, match=reason):
        import_image(archive, "hostile:1", world["store"], limits=limits)
    _assert_store_clean(ImageStore(world["store"]))
    assert tree_snapshot(world["top"], skip) == before


@pytest.mark.root
def test_whiteouts_become_overlay_whiteouts(world: dict[str, Path]) -> None:
    layer = make_tar([E("d", "dir"), E("d/.wh.gone", data=b""), E("o", "dir"),
                      E("o/.wh..wh..opq", data=b""), E("o/new", data=b"n")])
    import_image(make_oci_layout(world["in"], [layer]), "wh:1", world["store"])
    fs = _fs(ImageStore(world["store"]))
    st = os.lstat(fs / "d" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(fs / "o", "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(fs / "o" / ".wh..wh..opq")
    assert (fs / "o" / "new").read_bytes() == b"n"
