"""Image references, ``[REGISTRY[:PORT]/]REPO[:TAG|@sha256:DIGEST]``, with Docker's defaults.

The grammar and the normalisation rules are those of Docker's ``distribution/reference``
package (``reference.go``'s grammar, ``normalize.go``'s ``ParseNormalizedNamed`` and
``FamiliarName``):

- the first path component is a registry when it contains ``.`` or ``:``, is ``localhost``, or
  has an upper-case letter; otherwise the registry is ``docker.io`` (``index.docker.io`` is an
  alias of it);
- on ``docker.io`` a one-component repository gets ``library/`` (``python`` is
  ``docker.io/library/python``);
- no tag and no digest means ``:latest``; a tag and a digest may both be given (the digest
  wins when pulling, as in Docker);
- the repository must be lower case, and a bare 64-hex string is refused (it would be an id).

Docker Hub's API is not served at ``docker.io`` itself but at ``registry-1.docker.io``
(:func:`Reference.api_host`). The *familiar* form (``python:3.12``,
``localhost:5000/team/app:v1``) is what the store records and ``images`` shows.

Pure: imports only :mod:`nbcontainer.errors`.
"""

from __future__ import annotations

import re

from nbcontainer._records import record
from nbcontainer.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

PATH_RE = re.compile(_PATH)
DOMAIN_RE = re.compile(_DOMAIN)
TAG_RE = re.compile(_TAG)
_ANCHORED = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[a-f0-9]{64}")

_HINT = ("expected [REGISTRY[:PORT]/]REPO[:TAG|@sha256:DIGEST], e.g. python:3.12 or "
         "localhost:5000/team/app:v1")


@record(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    Attributes
    ----------
    domain
        The registry as written (``docker.io`` for Docker Hub, ``localhost:5000``).
    path
        The repository inside it (``library/python``).
    tag
        The tag; ``latest`` when neither a tag nor a digest was given; None with a digest only.
    digest
        ``sha256:<64 hex>`` when the reference pins one.
    """

    domain: str
    path: str
    tag: str | None = "latest"
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/python``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The short name Docker shows: ``python``, ``user/app``, ``localhost:5000/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            path = path[len(OFFICIAL_PREFIX):]
        return path

    @property
    def familiar(self) -> str:
        """``python:3.12`` / ``app@sha256:...``: how the store and ``images`` name it."""
        return self.familiar_name + self._suffix()

    def __str__(self) -> str:
        """The fully qualified form: ``docker.io/library/python:3.12``."""
        return self.name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def api_host(self) -> str:
        """Where the registry's HTTP API is: Docker Hub serves it at ``registry-1.docker.io``."""
        return DOCKER_HUB_API if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def is_local(self) -> bool:
        """True for ``localhost``/loopback registries, which Docker reaches over plain HTTP."""
        return is_loopback(self.domain)

    def with_tag(self, tag: str | None, digest: str | None = None) -> Reference:
        """The same repository with another tag/digest."""
        return Reference(self.domain, self.path, tag, digest)

    @property
    def pull_target(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"


def is_loopback(domain: str) -> bool:
    """True for ``localhost``, ``127.x.y.z`` and ``[::1]``, with or without a port."""
    host = domain
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host == "localhost" or host == "::1" or bool(
        re.fullmatch(r"127(?:\.[0-9]{1,3}){3}", host))


def split_domain(name: str) -> tuple[str, str]:
    """Docker's ``splitDockerDomain``: (registry, repository) with Docker Hub's defaults."""
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost"
                     and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """Parse and normalise a reference as ``docker pull`` does, or raise UsageError in words."""
    if not isinstance(text, str) or not text:
        raise UsageError(f"invalid image reference {text!r}: it is empty; {_HINT}")
    if _HEX64.fullmatch(text):
        raise UsageError(f"invalid image reference {text!r}: a 64-hex string is an image id, "
                         "not a repository name; write sha256:<id> to name an image by its id")
    m = _ANCHORED.match(text)
    if m is None:
        lowered = text.lower()
        if lowered != text and _ANCHORED.match(_lower_path(text)):
            raise UsageError(f"invalid image reference {text!r}: the repository name must be "
                             "lowercase (only the registry host may have capitals)")
        raise UsageError(f"invalid image reference {text!r}: {_HINT}")
    name, tag, digest = m.group("name"), m.group("tag"), m.group("digest")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise UsageError(f"invalid image reference: the repository name is {len(name)} "
                         f"characters long, at most {NAME_TOTAL_LENGTH_MAX} are allowed")
    domain, path = split_domain(name)
    if path.lower() != path:
        raise UsageError(f"invalid image reference {text!r}: the repository name must be "
                         "lowercase")
    if digest is not None and not _SHA256.fullmatch(digest):
        raise UsageError(f"invalid image reference {text!r}: unsupported digest {digest!r}; "
                         "use sha256:<64 lowercase hex>")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def _lower_path(text: str) -> str:
    """``text`` with its repository part lower-cased, to tell a case error from a syntax one."""
    domain, slash, rest = text.partition("/")
    if slash and (any(c in domain for c in ".:") or domain == "localhost"):
        return domain + "/" + rest.lower()
    return text.lower()


def parse_registry(text: str) -> str:
    """A ``REGISTRY[:PORT]`` for login/logout; Docker Hub's spellings become ``docker.io``."""
    host = text.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    host = host.rstrip("/")
    if host.endswith("/v1") or host.endswith("/v2"):
        host = host[:-3]
    if host in (LEGACY_DOMAIN, DOCKER_HUB_API, DEFAULT_DOMAIN):
        return DEFAULT_DOMAIN
    if not DOMAIN_RE.fullmatch(host):
        raise UsageError(f"invalid registry {text!r}: expected a host with an optional port, "
                         "e.g. localhost:5000 or registry.example.org")
    return host


# ----------------------------------------------------------------------------- platforms
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386", "i686": "386"}
_PLATFORM_PART = re.compile(r"[a-z0-9_.-]+")


@record(frozen=True)
class Platform:
    """An OCI platform: ``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: Platform) -> bool:
        """``other`` (an index entry's platform) satisfies this one; no variant = any."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or self.variant == other.variant or (
            # arm64's only variant is v8, and indexes often leave it out.
            self.architecture == "arm64" and {self.variant, other.variant} <= {"v8", ""})


def parse_platform(text: str) -> Platform:
    """``OS/ARCH[/VARIANT]`` as ``--platform`` takes it (architecture aliases normalised)."""
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
        raise UsageError(f"--platform: invalid platform {text!r}; use OS/ARCH[/VARIANT], e.g. "
                         "linux/amd64 or linux/arm64/v8")
    arch = _ARCH_ALIASES.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else "")


def host_platform() -> Platform:
    """This machine's platform, the default choice in a multi-platform image."""
    import platform as _platform

    machine = _platform.machine()
    arch = _ARCH_ALIASES.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}.get(machine, "")
    if machine.startswith("armv"):
        arch = "arm"
    return Platform("linux", arch, variant if arch != "arm64" else "")
