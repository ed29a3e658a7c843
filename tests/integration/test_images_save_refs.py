"""`save` and `import` keep an image's name, registry reference and manifest digest.

A real pull from Debian's docker-registry on 127.0.0.1 (filled by skopeo, as in
test_registry.py), then `save`, `rmi`, `import FILE` without a NAME through the CLI against a
real store: the same name, tag, reference, digest and layer trees come back, and `images` shows
them as for the pulled image. Without a registry the record's fields are written through the
store API. docker-save archives name themselves by their single RepoTags entry; archives that
name nothing (or only a tag, or several names) are one sentence, exit 125, nothing stored.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import capture
from oci_registry import Layer, LocalRegistry, busybox_layer, skopeo_copy, write_image, write_layout

from nbcontainer._records import replace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_images_helpers import (  # noqa: E402
    entry,
    make_docker_archive,
    make_oci_layout,
    make_tar,
    rootfs_manifest,
    sha,
)

from nbcontainer.images.oci import import_image  # noqa: E402
from nbcontainer.images.store import ImageRecord, ImageStore  # noqa: E402

pytestmark = pytest.mark.root
needs_registry = pytest.mark.skipif(
    not shutil.which("docker-registry") or not shutil.which("skopeo"),
    reason="needs docker-registry and skopeo (scripts/setup installs them)")

CLI = [sys.executable, "-m", "nbcontainer"]
FILES = [entry("etc", "dir"), entry("etc/name", data=b"app\n"), entry("bin", "dir"),
         entry("bin/tool", data=b"#!/bin/sh\n", mode=0o755)]


def nbc(*args: str | Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NBCONTAINER_ROOT": str(root)}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=env)


def stored(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(image records, layers, staging leftovers): what a refused import must not change."""
    def names(d: Path) -> list[str]:
        return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.is_dir() else []

    return names(root / "images"), names(root / "layers"), names(root / "tmp")


def trees(root: Path, record: ImageRecord) -> list[dict[str, tuple]]:
    store = ImageStore(root)
    return [rootfs_manifest(store.layer_fs(d)) for d in record.layers]


def annotations(archive: Path) -> dict[str, str]:
    with tarfile.open(archive) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        index = json.loads(f.read())
    assert len(index["manifests"]) == 1
    return dict(index["manifests"][0]["annotations"])


def refused(p: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 125, one line on stderr starting ``nbcontainer:`` and saying ``words``."""
    assert p.returncode == 125, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbcontainer: "), p.stderr
    assert "Traceback" not in p.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(repository at the local registry, manifest digest of its tag v1)."""
    if not shutil.which("docker-registry") or not shutil.which("skopeo"):
        pytest.skip("needs docker-registry and skopeo (scripts/setup installs them)")
    work = tmp_path_factory.mktemp("saverefs")
    reg = LocalRegistry(work / "registry")
    try:
        layout = work / "app"
        image = write_image(layout, [busybox_layer("gzip"),
                                     Layer({"etc/name": b"app\n"}, "zstd")])
        digest = write_layout(layout, "v1", [image])
        skopeo_copy(layout, "v1", f"{reg.address}/test/app:v1")
        yield f"{reg.address}/test/app", digest
    finally:
        reg.stop()


@needs_registry
def test_pulled_image_saved_removed_and_imported_without_name_comes_back(
        registry: tuple[str, str], store: Path, tmp_path: Path) -> None:
    repo, digest = registry
    assert nbc("pull", f"{repo}:v1", root=store).returncode == 0
    before = ImageStore(store).get_image(f"{repo}:v1")
    assert (before.digest, before.reference) == (digest, f"{repo}:v1")
    listing_before = nbc("images", "--digests", root=store).stdout.splitlines()[1].split()[:3]
    before_trees = trees(store, before)

    out = tmp_path / "app.tar"
    p = nbc("save", f"{repo}:v1", "-o", out, root=store)
    assert p.returncode == 0, p.stderr
    assert annotations(out) == {
        "io.containerd.image.name": f"{repo}:v1", "org.opencontainers.image.ref.name": "v1",
        "io.nbcontainer.image.reference": f"{repo}:v1", "io.nbcontainer.image.digest": digest}
    inspect = subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True,
                             text=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr  # an archive peers still read

    assert nbc("rmi", f"{repo}:v1", root=store).returncode == 0
    assert stored(store)[:2] == ([], [])
    p = nbc("import", out, root=store)
    assert p.returncode == 0, p.stderr
    assert f"Loaded image: {repo}:v1" in p.stderr
    after = ImageStore(store).get_image(f"{repo}:v1")
    assert p.stdout.strip() == after.id
    assert (after.name, after.tag, after.reference, after.digest) == (
        before.name, before.tag, before.reference, before.digest)
    assert trees(store, after) == before_trees
    listing = nbc("images", "--digests", root=store).stdout.splitlines()
    assert listing[1].split()[:3] == listing_before == [repo, "v1", digest]
    # Run by name@digest (no pull: the imported record answers to the digest), rmi by digest.
    code, text, err = capture(["cat", "/etc/name"], container={"root": str(store)},
                              image=f"{repo}@{digest}", pull="never", ns="mount,pid")
    assert (code, text) == (0, "app\n"), err
    # A second round trip is byte-identical: the layers came back exactly as saved.
    again = tmp_path / "again.tar"
    assert nbc("save", f"{repo}:v1", "-o", again, root=store).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    assert nbc("rmi", digest, root=store).returncode == 0
    assert stored(store) == ([], [], [])


@needs_registry
def test_image_pulled_by_digest_alone_round_trips_under_its_digest(
        registry: tuple[str, str], store: Path, tmp_path: Path) -> None:
    repo, digest = registry
    assert nbc("pull", f"{repo}@{digest}", root=store).returncode == 0
    out = tmp_path / "bydigest.tar"
    assert nbc("save", f"{repo}@{digest}", "-o", out, root=store).returncode == 0
    notes = annotations(out)
    assert "org.opencontainers.image.ref.name" not in notes  # no tag, and ref.name is no ""
    assert notes["io.containerd.image.name"] == f"{repo}@{digest}"
    assert nbc("rmi", f"{repo}@{digest}", root=store).returncode == 0
    p = nbc("import", out, root=store)
    assert p.returncode == 0, p.stderr
    (record,) = ImageStore(store).list_images()
    assert (record.name, record.tag, record.digest, record.reference) == (
        repo, "", digest, f"{repo}@{digest}")
    row = nbc("images", root=store).stdout.splitlines()[1].split()
    assert row[:3] == [repo, "<none>", digest[:19]]


def _pulled_looking(store: Path, tmp_path: Path) -> ImageRecord:
    """An image whose record says it was pulled: reference and digest written via the store."""
    record = import_image(make_oci_layout(tmp_path / "src", [make_tar(FILES)]), "team/app:v2",
                          store)
    record = replace(record, digest=sha(b"manifest"),
                                 reference="docker.io/team/app:v2")
    ImageStore(store).put_image(record)
    return record


def test_import_with_a_name_keeps_the_saved_reference_and_digest(store: Path,
                                                                  tmp_path: Path) -> None:
    before = _pulled_looking(store, tmp_path)
    before_trees = trees(store, before)
    out = tmp_path / "app.tar"
    assert nbc("save", "team/app:v2", "-o", out, root=store).returncode == 0
    assert nbc("rmi", "team/app:v2", root=store).returncode == 0
    p = nbc("import", out, "copy:1", root=store)
    assert p.returncode == 0, p.stderr
    assert "Loaded image" not in p.stderr  # the user named it
    (after,) = ImageStore(store).list_images()
    assert (after.name, after.tag, after.reference, after.digest) == (
        "copy", "1", before.reference, before.digest)
    assert trees(store, after) == before_trees


def test_import_without_name_restores_a_docker_hub_name_in_its_short_form(
        store: Path, tmp_path: Path) -> None:
    """containerd writes io.containerd.image.name fully qualified; the store keeps the short
    name a pull of it would (docker.io/library/python:3.12 is python:3.12)."""
    _pulled_looking(store, tmp_path)
    out = tmp_path / "app.tar"
    assert nbc("save", "team/app:v2", "-o", out, root=store).returncode == 0
    assert nbc("rmi", "team/app:v2", root=store).returncode == 0
    assert annotations(out)["io.containerd.image.name"] == "team/app:v2"
    p = nbc("import", out, root=store)
    assert p.returncode == 0, p.stderr
    (rec,) = ImageStore(store).list_images()
    assert (rec.name, rec.tag, rec.reference) == ("team/app", "v2", "docker.io/team/app:v2")
    layout = make_oci_layout(tmp_path / "ctr", [make_tar(FILES)])
    _annotate(layout, {"io.containerd.image.name": "docker.io/library/demo:3",
                       "org.opencontainers.image.ref.name": "3"})
    assert nbc("import", layout, root=store).returncode == 0
    assert ImageStore(store).find_image("demo:3") is not None


@pytest.mark.parametrize("repo_tag,expected", [
    ("demo:3", "demo:3"), ("docker.io/library/demo:3", "demo:3"),
    ("localhost:5000/team/demo", "localhost:5000/team/demo:latest")])
def test_docker_save_archive_with_one_repo_tag_imports_without_name(
        store: Path, tmp_path: Path, repo_tag: str, expected: str) -> None:
    archive = make_docker_archive(tmp_path / "d.tar", [make_tar(FILES)], repo_tag=repo_tag)
    p = nbc("import", archive, root=store)
    assert p.returncode == 0, p.stderr
    (rec,) = ImageStore(store).list_images()
    assert rec.ref == expected and (rec.digest, rec.reference) == ("", "")
    assert f"Loaded image: {expected}" in p.stderr


def _annotate(layout: Path, notes: dict[str, str] | None) -> Path:
    index = json.loads((layout / "index.json").read_text())
    if notes is None:
        index["manifests"][0].pop("annotations", None)
    else:
        index["manifests"][0]["annotations"] = notes
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def _docker_archive(path: Path, entries: list[list[str]]) -> Path:
    """A docker-save archive of one image listed once per RepoTags list in ``entries``."""
    base = make_docker_archive(path.with_suffix(".base.tar"), [make_tar(FILES)])
    with tarfile.open(base) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            data = f.read()
            if member.name == "manifest.json":
                first = json.loads(data)[0]
                data = json.dumps([{**first, "RepoTags": tags} for tags in entries]).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return path


def test_archives_that_name_no_single_image_need_a_name(store: Path, tmp_path: Path) -> None:
    cases = {
        "nothing": (_annotate(make_oci_layout(tmp_path / "a", [make_tar(FILES)]), None),
                    ["does not name its image", "give a NAME"]),
        "a tag only": (make_oci_layout(tmp_path / "b", [make_tar(FILES)], tag="v7"),
                       ["only by the tag 'v7'", "NAME:v7"]),
        "docker, no RepoTags": (_docker_archive(tmp_path / "c.tar", [[]]),
                                ["does not name its image"]),
        "docker, two names": (_docker_archive(tmp_path / "d.tar", [["x:1", "y:2"]]),
                              ["several times (x:1, y:2)", "import", "x:1`"]),
        "docker, two images": (_docker_archive(tmp_path / "e.tar", [["x:1"], ["y:2"]]),
                               ["holds several images (x:1, y:2)", "NAME"]),
        "a bad name": (_annotate(make_oci_layout(tmp_path / "f", [make_tar(FILES)]),
                                 {"io.containerd.image.name": "Bad Name"}),
                       ["'Bad Name', which is not a valid image name"]),
        "a built-in name": (_annotate(make_oci_layout(tmp_path / "g", [make_tar(FILES)]),
                                      {"io.containerd.image.name": "host:latest"}),
                            ["built-in image name"]),
    }
    for what, (archive, words) in cases.items():
        p = nbc("import", archive, root=store)
        refused(p, *words)
        assert stored(store) == ([], [], []), what
    # With a NAME each of them (but the one holding two images) imports.
    assert nbc("import", cases["a tag only"][0], "given:v7", root=store).returncode == 0
    assert nbc("import", cases["docker, two names"][0], "y:2", root=store).returncode == 0
    assert {r.ref for r in ImageStore(store).list_images()} == {"given:v7", "y:2"}


def test_damaged_reference_or_digest_annotation_is_refused_even_with_a_name(
        store: Path, tmp_path: Path) -> None:
    for key, value, words in [
            ("io.nbcontainer.image.digest", "md5:abc", "the annotation io.nbcontainer.image.digest"
             " is not a digest"),
            ("io.nbcontainer.image.reference", "NOT A REF", "the annotation "
             "io.nbcontainer.image.reference is not an image reference")]:
        layout = _annotate(make_oci_layout(tmp_path / key, [make_tar(FILES)]),
                           {"io.containerd.image.name": "ok:1", key: value})
        for args in ([layout], [layout, "named:1"]):
            refused(nbc("import", *args, root=store), words, "the archive is damaged")
            assert stored(store) == ([], [], [])


def test_the_magics_path_cli_main_in_process_imports_without_name(
        store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``%container import FILE`` is ``cli.main(["import", FILE], root=...)`` in the kernel."""
    from nbcontainer import cli

    archive = make_docker_archive(tmp_path / "d.tar", [make_tar(FILES)], repo_tag="nb:1")
    assert cli.main(["import", str(archive)], root=str(store)) == 0
    out, err = capsys.readouterr()
    (rec,) = ImageStore(store).list_images()
    assert out.strip() == rec.id and "Loaded image: nb:1" in err
    assert cli.main(["import", str(_annotate(make_oci_layout(tmp_path / "n", [make_tar(FILES)]),
                                             None))], root=str(store)) == 125
    assert "does not name its image" in capsys.readouterr().err
    assert [r.ref for r in ImageStore(store).list_images()] == ["nb:1"]
