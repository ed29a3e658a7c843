"""The registry client's pure parts: challenges, platforms, Docker's config.json and
credential helpers (a real helper program on PATH), plain HTTP only where Docker allows it."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from nbcontainer.errors import RegistryError, UsageError
from nbcontainer.reference import Platform, parse, parse_platform
from nbcontainer.registry import credentials as cred
from nbcontainer.registry.client import RegistryClient, parse_challenge
from nbcontainer.registry.pull import choose_manifest


def test_bearer_challenge_with_commas_inside_quotes() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                        'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg",
                        "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"


def test_platforms() -> None:
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    for bad in ("linux", "a/b/c/d", "linux/ amd64", ""):
        with pytest.raises(UsageError, match="OS/ARCH"):
            parse_platform(bad)
    assert Platform("linux", "arm64").matches(Platform("linux", "arm64", "v8"))
    assert Platform("linux", "arm64", "v8").matches(Platform("linux", "arm64"))
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))


def test_choose_manifest_skips_attestations_and_names_what_is_offered() -> None:
    index = {"manifests": [
        {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:" + "2" * 64, "platform": {"os": "unknown",
                                                      "architecture": "unknown"}},
        {"digest": "sha256:" + "3" * 64, "platform": {"os": "linux", "architecture": "arm64",
                                                      "variant": "v8"}}]}
    ref = parse("x")
    assert choose_manifest(index, Platform("linux", "arm64"), ref)["digest"][7] == "3"
    with pytest.raises(RegistryError, match="offers linux/amd64, linux/arm64/v8$|offers "
                                            "linux/amd64, linux/arm64/v8 "):
        choose_manifest(index, Platform("linux", "riscv64"), ref)


def test_plain_http_only_for_loopback_or_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBCONTAINER_REGISTRY_ALLOW")
    assert RegistryClient("localhost:5000").base == "http://localhost:5000"
    assert RegistryClient("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert RegistryClient("registry.example.org").base == "https://registry.example.org"
    assert RegistryClient("docker.io", "registry-1.docker.io").base == (
        "https://registry-1.docker.io")
    monkeypatch.setenv("NBCONTAINER_INSECURE_REGISTRIES", "registry.lan:5000")
    assert RegistryClient("registry.lan:5000").base == "http://registry.lan:5000"
    monkeypatch.setenv("NBCONTAINER_REGISTRY_ALLOW", "127.0.0.1")
    with pytest.raises(RegistryError, match="not one this process may contact"):
        RegistryClient("registry.example.org")


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def test_config_json_round_trip_keeps_other_keys(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({
        "auths": {"https://index.docker.io/v1/": {
            "auth": base64.b64encode(b"hub:pw").decode()}},
        "detachKeys": "ctrl-q"}))
    assert cred.get_credentials("docker.io") == cred.Credentials("hub", "pw")
    assert cred.get_credentials("localhost:5000") is None
    cred.store_credentials("localhost:5000", cred.Credentials("u", "p:with:colons"))
    data = json.loads((config_dir / "config.json").read_text())
    assert data["detachKeys"] == "ctrl-q" and "https://index.docker.io/v1/" in data["auths"]
    assert cred.get_credentials("localhost:5000") == cred.Credentials("u", "p:with:colons")
    assert stat.S_IMODE((config_dir / "config.json").stat().st_mode) == 0o600
    assert cred.erase_credentials("localhost:5000")
    assert cred.get_credentials("localhost:5000") is None
    assert not cred.erase_credentials("localhost:5000")


def test_credential_helper_protocol(config_dir: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real docker-credential-* program: get/store/erase over stdin/stdout."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    db = tmp_path / "helper-db"
    helper = bindir / "docker-credential-testhelper"
    helper.write_text(f"""#!/bin/sh
case "$1" in
  store) cat > {db} ;;
  get) read url
       if [ -s {db} ]; then cat {db}
       else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) rm -f {db} ;;
esac
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps(
        {"credHelpers": {"registry.example.org": "testhelper"}}))
    assert cred.get_credentials("registry.example.org") is None
    where = cred.store_credentials("registry.example.org", cred.Credentials("h", "secret"))
    assert where == "docker-credential-testhelper"
    assert "secret" not in (config_dir / "config.json").read_text()
    assert json.loads(db.read_text())["Secret"] == "secret"
    assert cred.get_credentials("registry.example.org") == cred.Credentials("h", "secret")
    cred.erase_credentials("registry.example.org")
    assert not db.exists()
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "missing-helper"}))
    with pytest.raises(RegistryError, match="docker-credential-missing-helper is not on PATH"):
        cred.get_credentials("localhost:5000")


def test_a_registry_that_is_not_there_is_a_network_error_naming_it(tmp_path: Path) -> None:
    """Port 1 on the loopback: connection refused, retried, then one sentence."""
    from nbcontainer.registry.pull import pull

    client = RegistryClient("127.0.0.1:1", retries=2, backoff=0.01)
    with pytest.raises(RegistryError, match=r"network error talking to registry 127\.0\.0\.1:1 "
                                            r"\(127\.0\.0\.1:1\): .*[Rr]efused"):
        pull("127.0.0.1:1/x:y", root=tmp_path / "store", client=client)
    assert client.counters["manifest"] == 3  # the first try and two retries
    assert not (tmp_path / "store" / "images").exists() or not os.listdir(
        tmp_path / "store" / "images")
