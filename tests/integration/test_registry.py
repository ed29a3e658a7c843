"""Pull, run, push, login against a real registry (Debian's docker-registry, distribution 2.8)
on 127.0.0.1, filled by skopeo from OCI layouts written here, behind a counting proxy.

See tests/oci_registry.py for the registry, the proxy (request counts, injected 503s and a cut
blob transfer) and the token server. No test contacts anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import capture
from oci_registry import (
    CountingProxy,
    Layer,
    LocalRegistry,
    TokenServer,
    busybox_layer,
    skopeo_copy,
    write_image,
    write_layout,
)
from test_magics_kernel import Kernel, kernel  # noqa: F401 (the fixture)

from nbcontainer.errors import ImageNotFoundError, RegistryError
from nbcontainer.images.store import ImageStore
from nbcontainer.registry.pull import pull

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not shutil.which("docker-registry") or not shutil.which("skopeo"),
    reason="needs docker-registry and skopeo (scripts/setup installs them)")]

CLI = [sys.executable, "-m", "nbcontainer"]


@dataclass
class World:
    registry: LocalRegistry
    proxy: CountingProxy
    work: Path
    digests: dict[str, str]

    def ref(self, name: str) -> str:
        return f"{self.proxy.address}/{name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("registry")
    registry = LocalRegistry(work / "registry")
    proxy = CountingProxy(registry.port)
    try:
        lay = work / "layouts"
        base = busybox_layer("gzip")
        amd = write_image(lay / "multi", [base, Layer({"etc/platform": b"amd64\n"}, "zstd")])
        arm = write_image(lay / "multi", [Layer({"etc/platform": b"arm64\n"}, "gzip")], "arm64")
        digests = {"multi": write_layout(lay / "multi", "v1", [amd, arm], multi=True)}
        # Two images sharing the busybox layer; one with an uncompressed layer.
        one = write_image(lay / "one", [base, Layer({"etc/name": b"one\n"}, "none")])
        digests["one"] = write_layout(lay / "one", "v1", [one])
        two = write_image(lay / "two", [base, Layer({"etc/name": b"two\n"}, "gzip")])
        digests["two"] = write_layout(lay / "two", "v1", [two])
        three = write_image(lay / "three", [base, Layer({"etc/name": b"three\n"}, "zstd")])
        digests["three"] = write_layout(lay / "three", "v1", [three])
        for name in ("multi", "one", "two", "three"):
            skopeo_copy(lay / name, "v1", f"{registry.address}/test/{name}:v1")
        yield World(registry, proxy, work, digests)
    finally:
        proxy.stop()
        registry.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


def nbc(*args: str, root: Path, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NBCONTAINER_ROOT": str(root), **(env or {})}
    return subprocess.run([*CLI, *args], input=input, capture_output=True, text=True,
                          timeout=120, env=full_env)


def stored(root: Path) -> tuple[set[str], set[str], list[str]]:
    """(image record files, layer dirs, leftovers in tmp): what a failed pull must not change."""
    def names(d: Path) -> set[str]:
        return set(os.listdir(d)) if d.is_dir() else set()

    tmp = [n for n in names(root / "tmp") if not n.startswith(".")]
    return names(root / "images"), names(root / "layers"), tmp


def test_pull_then_run_then_images_and_rmi_by_digest(world: World, store: Path) -> None:
    ref = world.ref("test/multi:v1")
    p = nbc("pull", ref, root=store)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith(f"{world.proxy.address}/test/multi:v1")
    assert "Pull complete" in p.stdout and "linux/amd64 is sha256:" in p.stdout
    code, out, err = capture(["cat", "/etc/platform"], container={"root": str(store)},
                             image=ref, pull="never", ns="mount,pid")
    assert (code, out) == (0, "amd64\n"), err
    record = ImageStore(store).get_image(ref)
    assert record.digest.startswith("sha256:") and record.reference == ref
    images = nbc("images", "--digests", root=store).stdout.splitlines()
    assert images[0].split()[:4] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE"]
    assert any(line.split()[:3] == [f"{world.proxy.address}/test/multi", "v1", record.digest]
               for line in images), images
    # By manifest digest, in Docker's spelling name@digest, then rmi by digest.
    code, out, _ = capture(["cat", "/etc/platform"], container={"root": str(store)},
                           image=f"{world.proxy.address}/test/multi@{record.digest}",
                           pull="never", ns="mount,pid")
    assert (code, out) == (0, "amd64\n")
    p = nbc("rmi", record.digest, root=store)
    assert p.returncode == 0, p.stderr
    assert f"Untagged: {world.proxy.address}/test/multi:v1" in p.stdout
    assert stored(store)[:2] == (set(), set())


def test_second_pull_fetches_no_blob_and_shared_layers_are_fetched_once(
        world: World, store: Path) -> None:
    world.proxy.reset()
    first = pull(world.ref("test/one:v1"), root=store)
    assert len(first.fetched) == 2 and world.proxy.count("blobs") == 3  # 2 layers + config
    world.proxy.reset()
    again = pull(world.ref("test/one:v1"), root=store)
    assert again.fetched == [] and world.proxy.count("blobs") == 0
    assert world.proxy.count("manifests") == 1
    assert again.record.id == first.record.id
    world.proxy.reset()
    two = pull(world.ref("test/two:v1"), root=store)
    assert len(two.fetched) == 1 and world.proxy.count("blobs") == 2  # its own layer + config
    assert two.record.layers[0] == first.record.layers[0]


def test_run_pulls_a_missing_image_and_never_refuses_one(world: World, store: Path) -> None:
    ref = world.ref("test/three:v1")
    with pytest.raises(ImageNotFoundError, match="--pull never forbids pulling it"):
        capture(["true"], container={"root": str(store)}, image=ref, pull="never")
    assert stored(store)[:2] == (set(), set())
    p = nbc("run", "--pull", "never", ref, "true", root=store)
    assert p.returncode == 125 and "--pull never" in p.stderr and "Traceback" not in p.stderr
    p = nbc("run", "--ns", "mount,pid", ref, "cat", "/etc/name", root=store)
    assert (p.returncode, p.stdout) == (0, "three\n"), p.stderr
    assert "Pull complete" in p.stderr
    world.proxy.reset()
    p = nbc("run", "--pull", "always", "--ns", "mount,pid", ref, "cat", "/etc/name", root=store)
    assert (p.returncode, p.stdout) == (0, "three\n") and world.proxy.count("blobs") == 0


def test_platform_selection(world: World, store: Path) -> None:
    result = pull(world.ref("test/multi:v1"), platform="linux/arm64", root=store)
    assert result.record.architecture == "arm64"
    fs = ImageStore(store).layer_fs(result.record.layers[0])
    assert (fs / "etc/platform").read_text() == "arm64\n"
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x; it offers "
                                            r"linux/amd64, linux/arm64"):
        pull(world.ref("test/multi:v1"), platform="linux/s390x", root=store)
    p = nbc("pull", "--platform", "linux/s390x", world.ref("test/multi:v1"), root=store)
    assert p.returncode == 125 and "choose one with --platform" in p.stderr
    p = nbc("run", "--platform", "nonsense", "busybox", "true", root=store)
    assert p.returncode == 125 and "OS/ARCH" in p.stderr


def test_missing_tag_and_repository_in_words(world: World, store: Path) -> None:
    p = nbc("pull", world.ref("test/one:nope"), root=store)
    assert p.returncode == 125 and "manifest unknown" in p.stderr and "MANIFEST_UNKNOWN" in p.stderr
    p = nbc("pull", world.ref("test/nothing"), root=store)
    assert p.returncode == 125 and "manifest unknown" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert stored(store) == (set(), set(), [])


def test_external_registries_are_refused_in_tests(store: Path) -> None:
    p = nbc("pull", "python:3.12", root=store)
    assert p.returncode == 125 and "NBCONTAINER_REGISTRY_ALLOW" in p.stderr


def test_retries_on_503_and_resumes_a_cut_blob(world: World, store: Path) -> None:
    world.proxy.reset()
    world.proxy.faults.fail_next = 2
    result = pull(world.ref("test/one:v1"), root=store)
    assert result.requests["manifest"] == 3  # two 503s, then the answer
    shutil.rmtree(store)
    store.mkdir()
    world.proxy.reset()
    world.proxy.faults.cut_blob_after = 300_000  # the busybox layer is ~1 MB
    result = pull(world.ref("test/one:v1"), root=store)
    assert world.proxy.faults.cuts == 1 and result.requests.get("resume") == 1
    ranges = [h.get("Range") for m, p, h in world.proxy.requests if "/blobs/" in p]
    assert "bytes=300000-" in ranges, ranges
    code, out, _ = capture(["cat", "/etc/name"], container={"root": str(store)},
                           image=world.ref("test/one:v1"), pull="never", ns="mount,pid")
    assert (code, out) == (0, "one\n")


def test_corrupt_blob_in_registry_storage_stores_nothing(
        world: World, store: Path, tmp_path: Path) -> None:
    lay = tmp_path / "corrupt"
    desc = write_image(lay, [Layer({"etc/x": os.urandom(5000)}, "gzip")])
    write_layout(lay, "v1", [desc])
    skopeo_copy(lay, "v1", f"{world.registry.address}/test/corrupt:v1")
    manifest = json.loads((lay / "blobs/sha256" / desc["digest"][7:]).read_bytes())
    blob = world.registry.blob_path(manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, one bit flipped
    blob.write_bytes(bytes(data))
    before = stored(store)
    p = nbc("pull", world.ref("test/corrupt:v1"), root=store)
    assert p.returncode == 125 and "digest mismatch" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert stored(store) == before


def test_unsupported_media_type_in_words(world: World, store: Path, tmp_path: Path) -> None:
    lay = tmp_path / "artifact"
    desc = write_image(lay, [Layer({"x": b"x"}, "gzip")])
    manifest_path = lay / "blobs/sha256" / desc["digest"][7:]
    manifest = json.loads(manifest_path.read_bytes())
    manifest["config"]["mediaType"] = "application/vnd.example.thing.config.v1+json"
    data = json.dumps(manifest).encode()
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (lay / "blobs/sha256" / digest[7:]).write_bytes(data)
    write_layout(lay, "v1", [{**desc, "digest": digest, "size": len(data)}])
    skopeo_copy(lay, "v1", f"{world.registry.address}/test/artifact:v1")
    p = nbc("pull", world.ref("test/artifact:v1"), root=store)
    assert p.returncode == 125 and "unsupported media type" in p.stderr
    assert "not a container image" in p.stderr and stored(store) == (set(), set(), [])


# -- authentication ----------------------------------------------------------------------------
@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def _seed(registry_address: str, tmp: Path, name: str, creds: str | None = None) -> None:
    lay = tmp / f"seed-{name}"
    write_image(lay, [busybox_layer("gzip")])
    desc = write_image(lay, [busybox_layer("gzip"), Layer({"etc/name": name.encode()}, "gzip")])
    write_layout(lay, "v1", [desc])
    skopeo_copy(lay, "v1", f"{registry_address}/{name}:v1", creds=creds)


@pytest.mark.skipif(not shutil.which("htpasswd"), reason="needs htpasswd (apache2-utils)")
def test_basic_auth_login_pull_logout(tmp_path: Path, store: Path, docker_config: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "alice", "s3cret"], check=True,
                   capture_output=True)
    registry = LocalRegistry(tmp_path / "reg", auth={"htpasswd": str(htpasswd)})
    try:
        _seed(registry.address, tmp_path, "team/app", creds="alice:s3cret")
        ref = f"{registry.address}/team/app:v1"
        p = nbc("pull", ref, root=store)
        assert p.returncode == 125 and "unauthorized" in p.stderr
        assert "nbcontainer login" in p.stderr
        p = nbc("login", "-u", "alice", "--password-stdin", registry.address, input="wrong\n",
                root=store)
        assert p.returncode == 125 and "login to" in p.stderr and "unauthorized" in p.stderr
        assert not (docker_config / "config.json").exists()
        p = nbc("login", "-u", "alice", "--password-stdin", registry.address, input="s3cret\n",
                root=store)
        assert p.returncode == 0 and "Login Succeeded" in p.stdout, p.stderr
        config = json.loads((docker_config / "config.json").read_text())
        assert registry.address in config["auths"]
        assert oct((docker_config / "config.json").stat().st_mode & 0o777) == "0o600"
        p = nbc("pull", ref, root=store)
        assert p.returncode == 0, p.stderr
        p = nbc("logout", registry.address, root=store)
        assert p.returncode == 0 and "Removing login credentials" in p.stdout
        assert registry.address not in json.loads(
            (docker_config / "config.json").read_text())["auths"]
    finally:
        registry.stop()


def test_bearer_token_flow_and_push_with_cross_repository_mount(
        tmp_path: Path, store: Path, docker_config: Path) -> None:
    tokens = TokenServer(tmp_path, {"bob": "pw"})
    registry = LocalRegistry(tmp_path / "reg", auth={"token": {
        "realm": tokens.realm, "service": tokens.service, "issuer": tokens.issuer,
        "cert": str(tokens.cert)}})
    try:
        ref = f"{registry.address}/team/app:v1"
        # Anonymous: the token grants nothing, the registry says 401 again.
        with pytest.raises(RegistryError, match="unauthorized.*refused anonymous access"):
            pull(ref, root=store)
        p = nbc("login", "-u", "bob", "--password-stdin", registry.address, input="bad\n",
                root=store)
        assert p.returncode == 125 and "unauthorized" in p.stderr
        p = nbc("login", "-u", "bob", "--password-stdin", registry.address, input="pw\n",
                root=store)
        assert p.returncode == 0, p.stderr
        # Push a built-in-derived image (busybox) and pull it back, all through tokens.
        p = nbc("push", "busybox", ref, root=store)
        assert p.returncode == 0, p.stderr
        assert "digest: sha256:" in p.stdout
        assert any(scopes == ["repository:team/app:pull,push"] and user == "bob"
                   for user, scopes in tokens.requests), tokens.requests
        p = nbc("push", "busybox", f"{registry.address}/team/other:v1", root=store)
        assert p.returncode == 0 and "Mounted from team/app" in p.stdout, p.stdout + p.stderr
        result = pull(f"{registry.address}/team/other:v1", root=store)
        assert result.fetched == []  # every layer is the one pushed from this store
        inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds",
             "bob:pw", f"docker://{registry.address}/team/other:v1"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "HOME": str(tmp_path)})
        # skopeo speaks the token protocol too: it must see what we pushed.
        assert inspect.returncode == 0, inspect.stderr
        assert json.loads(inspect.stdout)["Digest"] == result.manifest_digest
    finally:
        registry.stop()
        tokens.stop()


def test_push_then_skopeo_inspect(world: World, store: Path, tmp_path: Path) -> None:
    p = nbc("push", "busybox", world.ref("test/pushed:v2"), root=store)
    assert p.returncode == 0, p.stderr
    digest = p.stdout.split("digest: ")[1].split()[0]
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                              f"docker://{world.registry.address}/test/pushed:v2"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "HOME": str(tmp_path)})
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Digest"] == digest
    world.proxy.reset()
    p = nbc("push", "busybox", world.ref("test/pushed:v2"), root=store)
    assert p.returncode == 0 and world.proxy.count("uploads", "POST") == 0


def test_pull_by_digest_alone_is_kept_under_its_digest(world: World, store: Path) -> None:
    name = world.ref("test/two")
    result = pull(f"{name}@{world.digests['two']}", root=store)
    assert result.record.tag == "" and result.record.ref == f"{name}@{world.digests['two']}"
    assert ImageStore(store).find_image(f"{name}:v1") is None
    line = [x for x in nbc("images", root=store).stdout.splitlines() if x.startswith(name)]
    assert line and line[0].split()[1:3] == ["<none>", world.digests["two"][:19]]
    code, out, _ = capture(["cat", "/etc/name"], container={"root": str(store)},
                           image=f"{name}@{world.digests['two']}", pull="never", ns="mount,pid")
    assert (code, out) == (0, "two\n")
    with pytest.raises(RegistryError, match="manifest unknown: .* has no manifest test/two@"):
        pull(f"{name}@sha256:{'0' * 64}", root=store)
    p = nbc("rmi", f"{name}@{world.digests['two']}", root=store)
    assert p.returncode == 0 and stored(store)[:2] == (set(), set()), p.stderr


def test_notebook_pull_one_display_updated_in_place_then_a_cell_in_the_image(
        world: World, kernel: Kernel) -> None:  # noqa: F811 (the imported fixture)
    ref = world.ref("test/three:v1")
    cell = kernel.run(f"%container pull {ref}", timeout=120)
    assert cell.reply["status"] == "ok", cell.stream("stderr")
    first = [m["content"] for _, m in cell.of("display_data")]
    updates = [m["content"] for _, m in cell.of("update_display_data")]
    assert len(first) == 1 and updates
    assert {c["transient"]["display_id"] for c in first + updates} == {
        first[0]["transient"]["display_id"]}
    final = updates[-1]["data"]["text/plain"]
    assert "Pull complete" in final and "Digest: sha256:" in final
    assert cell.stream().strip() == f"{world.proxy.address}/test/three:v1"
    cell = kernel.run(f"%%container --image {ref} --pull never --ns mount,pid sh\ncat /etc/name",
                      timeout=120)
    assert cell.reply["status"] == "ok" and cell.stream() == "three\n", cell.stream("stderr")
    assert not cell.of("display_data")  # nothing pulled, nothing shown
    cell = kernel.run(f"%%container --image {world.ref('test/nope:v1')} sh\ntrue", timeout=120)
    assert cell.error is not None and "manifest unknown" in cell.error["evalue"]


def test_build_from_a_registry_reference_pulls_it(world: World, store: Path,
                                                  tmp_path: Path) -> None:
    ref = world.ref("test/two:v1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {ref}\nRUN cp /etc/name /etc/seen\n")
    p = nbc("build", "-t", "derived", str(context), root=store)
    assert p.returncode == 0, p.stderr
    assert "Pull complete" in p.stderr  # pulled: it was not in the store
    p = nbc("run", "--ns", "mount,pid", "derived", "cat", "/etc/seen", root=store)
    assert (p.returncode, p.stdout) == (0, "two\n"), p.stderr
    p = nbc("build", "-t", "never", str(context), root=store,
            env={"NBCONTAINER_REGISTRY_ALLOW": "example.invalid"})
    assert p.returncode == 0, p.stderr  # in the store now: no registry is asked
