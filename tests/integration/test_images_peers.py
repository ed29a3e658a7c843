"""Our import/save checked against independent tools: umoci builds and unpacks, skopeo converts.

An image umoci builds (files deleted, a directory replaced by a file, a file by a directory,
hardlinks, symlinks) must give, once imported and mounted as overlay (lowerdirs, in a private
mount namespace via unshare(1)), the same tree as umoci's own unpack. skopeo's docker-archive
must import to the same layers; what ``save`` writes must pass ``skopeo inspect`` and unpack with
umoci to the same tree. No network: every image is built here from local directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_images_helpers import rootfs_manifest  # noqa: E402

from nbcontainer.images import resolve  # noqa: E402
from nbcontainer.images.oci import import_image, save_image  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not shutil.which("umoci"), reason="needs umoci (apt-get install umoci)"),
]
needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")


def run(*cmd: str | Path) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def umoci_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-layer image made by umoci, plus umoci's own unpack of it."""
    tmp = tmp_path_factory.mktemp("umoci")
    layout, bundle = tmp / "layout", tmp / "bundle"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:t")
    run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    r = bundle / "rootfs"
    for d in ("etc/conf.d", "data/sub", "opt/app", "tmp"):
        (r / d).mkdir(parents=True, exist_ok=True)
    os.chmod(r / "tmp", 0o1777)
    (r / "etc/hello").write_text("hello\n")
    (r / "etc/conf.d/a.conf").write_text("a\n")
    (r / "etc/conf.d/b.conf").write_text("b\n")
    (r / "data/sub/file").write_text("deep\n")
    (r / "opt/app/run").write_text("#!/bin/sh\n")
    os.chmod(r / "opt/app/run", 0o755)
    os.chown(r / "opt/app/run", 1000, 1000)
    (r / "replaced-by-dir").write_text("file\n")
    os.link(r / "etc/hello", r / "etc/hello.hard")
    os.symlink("/etc/hello", r / "abs-link")
    run("umoci", "repack", "--image", f"{layout}:t", bundle)
    shutil.rmtree(bundle)
    run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    (r / "etc/conf.d/b.conf").unlink()                       # deleted file
    shutil.rmtree(r / "data")                                # replaced directory...
    (r / "data").mkdir()
    (r / "data/new").write_text("new\n")
    (r / "replaced-by-dir").unlink()                          # file -> directory
    (r / "replaced-by-dir").mkdir()
    (r / "replaced-by-dir/x").write_text("x\n")
    shutil.rmtree(r / "opt/app")                             # directory -> file
    (r / "opt/app").write_text("now a file\n")
    (r / "etc/hello").write_text("changed\n")
    run("umoci", "repack", "--image", f"{layout}:t", bundle)
    run("umoci", "config", "--image", f"{layout}:t", "--config.env", "FOO=bar",
        "--config.cmd", "sh")
    shutil.rmtree(bundle)
    run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    return {"layout": layout, "rootfs": bundle / "rootfs", "tmp": tmp}


def merged_view(layers: tuple[str, ...], tmp: Path) -> dict[str, tuple]:
    """Mount the layers as overlay in a throwaway mount namespace and describe the tree."""
    mnt = tmp / "mnt"
    mnt.mkdir(exist_ok=True)
    lower = ":".join(reversed(layers))
    code = ("import json,sys; sys.path.insert(0, sys.argv[2]); "
            "from test_images_helpers import rootfs_manifest as m; "
            "print(json.dumps(m(__import__('pathlib').Path(sys.argv[1]))))")
    unit = str(Path(__file__).resolve().parent.parent / "unit")
    script = (f"mount -t overlay overlay -o lowerdir={lower} {mnt} && "
              f"{sys.executable} -c \"{code}\" {mnt} {unit}")
    out = run("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
    return {k: tuple(v) for k, v in json.loads(out).items()}


def _jsonable(m: dict[str, tuple]) -> dict[str, tuple]:
    return {k: tuple(json.loads(json.dumps(list(v)))) for k, v in m.items()}


def test_umoci_image_imports_to_the_same_tree(umoci_image, tmp_path: Path) -> None:
    root = tmp_path / "store"
    rec = import_image(umoci_image["layout"], "peer:t", root)
    assert rec.env == ["FOO=bar"] and rec.cmd == ["sh"]
    img = resolve("peer:t", root)
    assert len(img.layers) == 2
    view = merged_view(img.layers, tmp_path)
    assert "etc/conf.d/b.conf" not in view and "data/sub" not in view and "data/new" in view
    assert "replaced-by-dir/x" in view and view["opt/app"][4] is not None
    assert view["etc/hello"][4] == view["etc/hello.hard"][4]
    assert view == _jsonable(rootfs_manifest(umoci_image["rootfs"]))


@needs_skopeo
def test_skopeo_docker_archive_imports(umoci_image, tmp_path: Path) -> None:
    archive = tmp_path / "d.tar"
    run("skopeo", "copy", "-q", f"oci:{umoci_image['layout']}:t",
        f"docker-archive:{archive}:peer:t")
    root = tmp_path / "store"
    via_oci = import_image(umoci_image["layout"], "a", root)
    via_docker = import_image(archive, "b", root)
    assert via_docker.layers == via_oci.layers
    assert via_docker.env == ["FOO=bar"]
    assert merged_view(resolve("b", root).layers, tmp_path) == _jsonable(
        rootfs_manifest(umoci_image["rootfs"]))


@needs_skopeo
def test_skopeo_oci_archive_imports(umoci_image, tmp_path: Path) -> None:
    archive = tmp_path / "o.tar"
    run("skopeo", "copy", "-q", f"oci:{umoci_image['layout']}:t", f"oci-archive:{archive}:t")
    rec = import_image(archive, "o:t", tmp_path / "store")
    assert len(rec.layers) == 2


@needs_skopeo
@pytest.mark.parametrize("compress", [True, False])
def test_save_is_accepted_by_skopeo_and_umoci(umoci_image, tmp_path: Path,
                                               compress: bool) -> None:
    root = tmp_path / "store"
    import_image(umoci_image["layout"], "peer:t", root)
    out = save_image("peer:t", tmp_path / "saved.tar", root, compress=compress)
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}"))
    assert len(info["Layers"]) == 2 and info["Env"] == ["FOO=bar"]
    layout = tmp_path / "saved-layout"
    layout.mkdir()
    run("tar", "-xf", out, "-C", layout)
    run("umoci", "unpack", "--image", f"{layout}:t", tmp_path / "bundle")
    assert rootfs_manifest(tmp_path / "bundle" / "rootfs") == rootfs_manifest(
        umoci_image["rootfs"])


@needs_skopeo
def test_busybox_saves_and_skopeo_reads_it(tmp_path: Path) -> None:
    if not any(os.path.exists(p) for p in ("/bin/busybox", "/usr/bin/busybox")):
        pytest.skip("needs busybox-static")
    root = tmp_path / "store"
    out = save_image("busybox", tmp_path / "bb.tar", root)
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}"))
    assert len(info["Layers"]) == 1
