"""The image store: import, resolve, refcounted rmi, gc, locking, save round trip, CLI."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_images_helpers import (
    entry,
    make_docker_archive,
    make_oci_layout,
    make_tar,
    rootfs_manifest,
)

from nbcontainer.errors import ImageError, ImageNotFoundError, UsageError
from nbcontainer.images import resolve
from nbcontainer.images.commands import add_commands, human_size
from nbcontainer.images.extract import extract_layer
from nbcontainer.images.layertar import write_layer_tar
from nbcontainer.images.oci import import_image, save_image
from nbcontainer.images.store import ImageStore, layers_in_use, parse_reference

BASE = [entry("etc", "dir"), entry("etc/os-release", data=b"ID=test\n"),
        entry("bin", "dir"), entry("bin/tool", data=b"#!/bin/sh\n", mode=0o755),
        entry("bin/alias", "link", linkname="bin/tool"), entry("lib", "sym", linkname="usr/lib"),
        entry("tmp", "dir", mode=0o1777)]
TOP = [entry("etc", "dir"), entry("etc/motd", data=b"hello\n")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _layout(tmp_path: Path, name: str, layers: list[list[dict]], **kw) -> Path:
    return make_oci_layout(tmp_path / name, [make_tar(e) for e in layers], **kw)


def test_parse_reference() -> None:
    assert parse_reference("a") == ("a", "latest")
    assert parse_reference("reg.io:5000/x/y:v1.2") == ("reg.io:5000/x/y", "v1.2")
    for bad in ("UPPER", "a:b:c", "a/../b", "", "a:", "-a"):
        with pytest.raises(UsageError, match=f"^invalid image name {re.escape(repr(bad))}: "):
            parse_reference(bad)


def test_import_resolve_and_share_layers(tmp_path: Path, root: Path) -> None:
    one = import_image(_layout(tmp_path, "one", [BASE]), "one", root)
    two = import_image(_layout(tmp_path, "two", [BASE, TOP]), "two:v1", root)
    assert one.layers[0] == two.layers[0]
    store = ImageStore(root)
    assert len(os.listdir(store.layers)) == 2, "the base layer is stored once"
    img = resolve("two:v1", root)
    assert img.name == "two:v1" and len(img.layers) == 2
    assert img.layers[0].endswith("/fs") and img.config.cmd == ("sh",)
    assert ("A", "1") in img.config.env and img.config.workdir == "/"
    fs = Path(img.layers[0])
    assert (fs / "bin" / "tool").stat().st_nlink == 2
    assert os.readlink(fs / "lib") == "usr/lib"
    assert stat.S_IMODE((fs / "tmp").stat().st_mode) == 0o1777
    assert (Path(img.layers[1]) / "etc" / "motd").read_bytes() == b"hello\n"
    with pytest.raises(ImageNotFoundError, match="^image 'nope' not found; built-in images are"):
        resolve("nope", root)


def test_docker_archive_import(tmp_path: Path, root: Path) -> None:
    archive = make_docker_archive(tmp_path / "d.tar", [make_tar(BASE)], repo_tag="x:1")
    rec = import_image(archive, "dx:1", root)
    assert rec.cmd == ["sh"] and len(rec.layers) == 1


def test_builtin_names_are_reserved(tmp_path: Path, root: Path) -> None:
    with pytest.raises(UsageError, match="^host is a built-in image name; import under another"):
        import_image(_layout(tmp_path, "x", [BASE]), "host", root)


def test_rmi_is_refcounted_and_respects_containers(tmp_path: Path, root: Path) -> None:
    import_image(_layout(tmp_path, "one", [BASE]), "one", root)
    two = import_image(_layout(tmp_path, "two", [BASE, TOP]), "two", root)
    store = ImageStore(root)
    assert store.remove_image("one") == []  # base still used by two
    # a container still runs on two's top layer: rmi must not delete it
    cdir = root / "containers" / "c1"
    cdir.mkdir(parents=True)
    (cdir / "state.json").write_text(json.dumps({"layers": [str(store.layer_fs(two.layers[1]))]}))
    assert layers_in_use(root) == {two.layers[1][7:]}
    assert store.remove_image("two") == [two.layers[0]]
    assert store.has_layer(two.layers[1])
    (cdir / "state.json").unlink()
    cdir.rmdir()
    assert store.gc()["layers"] == [two.layers[1]]
    assert os.listdir(store.layers) == []
    with pytest.raises(ImageNotFoundError, match="^image 'two' not found in the store"):
        store.remove_image("two")
    with pytest.raises(ImageError, match="host is a built-in image and cannot be removed"):
        store.remove_image("host")


def test_gc_removes_abandoned_staging_only(root: Path) -> None:
    store = ImageStore(root)
    with store.staging("live") as live:
        (live / "x").write_text("x")
        dead = store.tmp / "import-999999-dead"
        dead.mkdir()
        (store.tmp / "import-999999-dead.lock").write_text("")
        report = store.gc()
        assert report["tmp"] == ["import-999999-dead"]
        assert live.exists()
    assert os.listdir(store.tmp) == []


def test_concurrent_imports_do_not_corrupt(tmp_path: Path, root: Path) -> None:
    layout = _layout(tmp_path, "big", [BASE + [entry(f"f{i}", data=b"x" * i) for i in range(300)],
                                       TOP])
    code = "import sys; from nbcontainer.images.oci import import_image as i; " \
           "print(i(sys.argv[1], sys.argv[2], sys.argv[3]).id)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(layout), f"c{i}", str(root)],
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    ids = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(ids)) == 1
    store = ImageStore(root)
    assert len(store.list_images()) == 8
    assert len(os.listdir(store.layers)) == 2
    for d in os.listdir(store.layers):
        assert sorted(os.listdir(store.layers / d)) == ["fs", "meta.json"]
    assert os.listdir(store.tmp) == []


@pytest.mark.parametrize("compress", [True, False])
def test_save_then_import_gives_the_same_tree(tmp_path: Path, root: Path, compress: bool) -> None:
    import_image(_layout(tmp_path, "src", [BASE, TOP]), "src", root)
    out = save_image("src", tmp_path / "out.tar", root, compress=compress)
    again = save_image("src", tmp_path / "out2.tar", root, compress=compress)
    assert out.read_bytes() == again.read_bytes(), "save is deterministic"
    rec = import_image(out, "copy", root)
    a, b = resolve("src", root), resolve("copy", root)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert rootfs_manifest(Path(la)) == rootfs_manifest(Path(lb))
    assert rec.cmd == ["sh"] and rec.env == ["A=1"]
    assert [h.created_by for h in rec.history] == ["step 0", "step 1"]


@pytest.mark.root
def test_whiteouts_round_trip_through_layer_tar(tmp_path: Path) -> None:
    src = make_tar([entry("d", "dir"), entry("d/.wh.gone", data=b""), entry("o", "dir"),
                    entry("o/.wh..wh..opq", data=b""), entry("o/f", data=b"1"),
                    entry("x", data=b"x", pax={"SCHILY.xattr.user.k": "v"})])
    (tmp_path / "a").mkdir()
    extract_layer(io.BytesIO(src), tmp_path / "a")
    with open(tmp_path / "t.tar", "wb") as f:
        first = write_layer_tar(tmp_path / "a", f)
    (tmp_path / "b").mkdir()
    with open(tmp_path / "t.tar", "rb") as f:
        res = extract_layer(f, tmp_path / "b")
    assert res.diff_id == first.diff_id
    assert stat.S_ISCHR(os.lstat(tmp_path / "b/d/gone").st_mode)
    assert os.getxattr(tmp_path / "b/o", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(tmp_path / "b/x", "user.k") == b"v"
    assert write_layer_tar(tmp_path / "b", None).diff_id == first.diff_id


def test_busybox_is_a_store_image(root: Path) -> None:
    if not any(os.path.exists(p) for p in ("/bin/busybox", "/usr/bin/busybox")):
        pytest.skip("needs busybox-static")
    img = resolve("busybox", root)
    again = resolve("busybox:latest", root)
    assert img.layers == again.layers and len(img.layers) == 1
    fs = Path(img.layers[0])
    assert (fs / "bin" / "busybox").is_file() and os.readlink(fs / "bin" / "sh") == "/bin/busybox"
    assert ImageStore(root).get_image("busybox").history[0].size > 100_000


def _cli(root: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    args.root = str(root)
    return args.func(args)


def test_cli_commands(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = _layout(tmp_path, "src", [BASE, TOP])
    assert _cli(root, "import", str(layout), "app:1") == 0
    assert capsys.readouterr().out.startswith("sha256:")
    import_image(_layout(tmp_path, "base", [BASE]), "base", root)
    assert _cli(root, "images") == 0
    out = capsys.readouterr().out
    assert "app" in out and "SHARED" in out and "UNIQUE" in out
    assert _cli(root, "history", "app:1") == 0
    out = capsys.readouterr().out
    assert "step 1" in out and "6B" in out
    assert _cli(root, "save", "app:1", "-o", str(tmp_path / "s.tar")) == 0
    assert (tmp_path / "s.tar").is_file()
    assert _cli(root, "rmi", "app:1") == 0
    assert "Deleted:" in capsys.readouterr().out
    with pytest.raises(ImageNotFoundError, match="^image 'app:1' not found"):
        _cli(root, "history", "app:1")


def test_human_size() -> None:
    assert human_size(12) == "12B" and human_size(4200) == "4.2kB"
