"""Image references against the cases of Docker's distribution/reference (normalize_test.go,
reference_test.go): the grammar, Docker Hub's defaults and the familiar form."""

from __future__ import annotations

import pytest

from nbcontainer.errors import UsageError
from nbcontainer.reference import is_loopback, parse, parse_registry

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "full", "familiar", "api"), [
    ("python", "docker.io/library/python:latest", "python:latest", "registry-1.docker.io"),
    ("python:3.12", "docker.io/library/python:3.12", "python:3.12", "registry-1.docker.io"),
    ("library/python", "docker.io/library/python:latest", "python:latest",
     "registry-1.docker.io"),
    ("docker.io/python", "docker.io/library/python:latest", "python:latest",
     "registry-1.docker.io"),
    ("index.docker.io/library/ubuntu:22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04",
     "registry-1.docker.io"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest", "registry-1.docker.io"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest",
     "registry-1.docker.io"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest", "localhost"),
    ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1",
     "localhost:5000/team/app:v1", "localhost:5000"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest",
     "127.0.0.1:5000"),
    ("registry.example.org/x/y:1.0", "registry.example.org/x/y:1.0",
     "registry.example.org/x/y:1.0", "registry.example.org"),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest", "Registry"),
    ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest", "[::1]:5000"),
    (f"python@{D}", f"docker.io/library/python@{D}", f"python@{D}", "registry-1.docker.io"),
    (f"python:3.12@{D}", f"docker.io/library/python:3.12@{D}", f"python:3.12@{D}",
     "registry-1.docker.io"),
    ("a__b-c---e/f_g.h", "docker.io/a__b-c---e/f_g.h:latest", "a__b-c---e/f_g.h:latest",
     "registry-1.docker.io"),
    # A first component with a dot is a registry, whatever follows (splitDockerDomain).
    ("a.b/c", "a.b/c:latest", "a.b/c:latest", "a.b"),
    ("foo:Tag_1.x-Y", "docker.io/library/foo:Tag_1.x-Y", "foo:Tag_1.x-Y",
     "registry-1.docker.io"),
])
def test_normalised_like_docker(text: str, full: str, familiar: str, api: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert ref.api_host == api


def test_parts() -> None:
    ref = parse(f"localhost:5000/a/b:t@{D}")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("localhost:5000", "a/b", "t", D)
    assert ref.pull_target == D
    assert parse("x").pull_target == "latest"
    assert parse(f"x@{D}").tag is None


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty"),
    ("Python", "lowercase"),
    ("localhost:5000/App", "lowercase"),
    ("a" * 64, "image id"),
    ("python:", "expected [REGISTRY"),
    (":tag", "expected [REGISTRY"),
    ("a//b", "expected [REGISTRY"),
    ("a/", "expected [REGISTRY"),
    ("-a", "expected [REGISTRY"),
    ("a-", "expected [REGISTRY"),
    ("a..b", "expected [REGISTRY"),
    ("a:" + "t" * 129, "expected [REGISTRY"),
    ("a:-tag", "expected [REGISTRY"),
    ("a@sha256:abc", "expected [REGISTRY"),
    ("a@sha512:" + "a" * 128, "unsupported digest"),
    (f"a@{D.upper().replace('SHA', 'sha')}", "unsupported digest"),
    ("localhost:port/a", "expected [REGISTRY"),
    ("a/" * 130 + "a", "255"),
])
def test_refused_in_words(text: str, words: str) -> None:
    with pytest.raises(UsageError, match="invalid image reference") as info:
        parse(text)
    assert words in str(info.value)


def test_loopback_and_registry_names() -> None:
    assert is_loopback("localhost") and is_loopback("localhost:5000")
    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.org") and not is_loopback("10.0.0.1:5000")
    assert not is_loopback("localhost.example.org")
    assert parse_registry("https://index.docker.io/v1/") == "docker.io"
    assert parse_registry("registry-1.docker.io") == "docker.io"
    assert parse_registry("localhost:5000") == "localhost:5000"
    with pytest.raises(UsageError, match="invalid registry"):
        parse_registry("not a host")
