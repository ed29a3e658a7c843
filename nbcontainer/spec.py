"""What a container should be, as plain data, and the parsers for the option syntax.

Pure code: no I/O (but reading a seccomp profile the user names), nothing imported from the rest
of the package but errors, capability names and the profile checker. The CLI, the
magics and the kernel all turn their options into a :class:`ContainerSpec` through the parsers
here, so the syntax (Docker's) is the same everywhere and every bad value gets the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nbcontainer._records import field, fields, record, replace
from nbcontainer.capnames import ALL_CAPS, DEFAULT_CAPS
from nbcontainer.errors import UsageError

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any

NAMESPACES = ("uts", "ipc", "pid", "mount", "net", "user", "cgroup")
DEFAULT_NAMESPACES = frozenset({"uts", "ipc", "pid", "mount", "cgroup"})
NET_MODES = ("host", "none")
#: Image names that are never registry references (built-ins and ``none``).
BUILTIN_IMAGES = ("host", "scratch", "none", "busybox")
PULL_POLICIES = ("missing", "always", "never")
#: The network ``--net bridge`` joins; any other name is a user-defined network.
DEFAULT_NETWORK = "bridge"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_size(text: str | int, option: str = "--memory") -> int:
    """Parse a Docker size (``512``, ``100k``, ``100m``, ``1g``; binary units) into bytes."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{option}: size must not be negative, got {text}")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise UsageError(
            f"{option}: invalid size {text!r}; use a number with an optional unit "
            "b, k, m or g (binary units), e.g. 512, 100k, 100m, 1g"
        )
    number, unit = match.groups()
    value = int(float(number) * _SIZE_UNITS[unit.lower()])
    return value


def parse_memory(text: str | int, option: str = "--memory") -> int:
    """Parse a memory limit; Docker refuses limits below 6 MiB, and so do we."""
    value = parse_size(text, option)
    if value < 6 * 1024 * 1024:
        raise UsageError(
            f"{option}: {format_size(value)} is too small; the minimum memory limit is 6m"
        )
    return value


def parse_memory_swap(text: str | int) -> int:
    """Parse ``--memory-swap``: a size, or ``-1`` for unlimited swap."""
    if str(text).strip() == "-1":
        return -1
    return parse_size(text, "--memory-swap")


def parse_cpus(text: str | float) -> float:
    """Parse ``--cpus``: a positive number of CPUs, e.g. ``0.5``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(
            f"--cpus: invalid value {text!r}; use a positive number of CPUs, e.g. 0.5 or 2"
        ) from None
    if not value > 0 or value != value or value > 1024:
        raise UsageError(f"--cpus: {text!r} is out of range; use a number above 0, e.g. 0.5")
    if value < 0.01:
        raise UsageError(f"--cpus: {text!r} is too small; the minimum is 0.01")
    available = available_cpus()
    if value > available:
        # Docker's check and words: a quota above the CPUs there are would never bind.
        raise UsageError(f"--cpus: {text!r} is out of range: the range of CPUs is from 0.01 "
                         f"to {available}.00, as there are only {available} CPUs available")
    return value


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as Go's runtime.NumCPU counts)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_int(text: str | int, option: str, minimum: int, maximum: int | None = None) -> int:
    """Parse an integer option within bounds, naming the option in the error."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{option}: invalid value {text!r}; use a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise UsageError(f"{option}: {value} is out of range; use a number {bounds}")
    return value


def parse_cpuset(text: str) -> str:
    """Validate a CPU list such as ``0``, ``0-1`` or ``0,2-3``; return it normalised."""
    text = str(text).strip()
    parts = text.split(",") if text else []
    if not parts:
        raise UsageError("--cpuset-cpus: empty CPU list; use e.g. 0 or 0-1 or 0,2")
    for part in parts:
        bounds = part.split("-")
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            raise UsageError(
                f"--cpuset-cpus: invalid CPU list {text!r}; use numbers and ranges, e.g. 0-1 or 0,2"
            )
        if len(bounds) == 2 and int(bounds[0]) > int(bounds[1]):
            raise UsageError(f"--cpuset-cpus: range {part!r} runs backwards; write it low-high")
    return text


def cpuset_members(text: str) -> set[int]:
    """Return the CPU numbers of a CPU list."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def parse_namespaces(text: str | list[str] | frozenset[str]) -> frozenset[str]:
    """Parse ``--ns``: a comma list of namespace names, ``all`` or ``none``."""
    if isinstance(text, (list, tuple, set, frozenset)):
        items = [str(x) for x in text]
    else:
        items = [x for x in str(text).replace(" ", "").split(",") if x]
    if not items:
        raise UsageError(f"--ns: empty list; use a comma list of {', '.join(NAMESPACES)}, "
                         "or all, or none")
    if items == ["all"]:
        return frozenset(NAMESPACES)
    if items == ["none"]:
        return frozenset()
    aliases = {"mnt": "mount", "network": "net", "hostname": "uts"}
    result = set()
    for item in items:
        name = aliases.get(item.lower(), item.lower())
        if name not in NAMESPACES:
            raise UsageError(
                f"--ns: unknown namespace {item!r}; use a comma list of "
                f"{', '.join(NAMESPACES)}, or all, or none"
            )
        result.add(name)
    return frozenset(result)


@record(frozen=True)
class Volume:
    """A bind mount of a host path into the container."""

    host: str
    container: str
    readonly: bool = False


@record(frozen=True)
class Device:
    """A host device node made available inside (``--device``)."""

    host: str
    container: str
    permissions: str = "rwm"


def parse_device(text: str) -> Device:
    """Parse ``--device HOST[:CTR][:PERMS]`` (Docker's syntax; PERMS from ``rwm``)."""
    parts = str(text).split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"--device: invalid device {text!r}; use HOST[:CONTAINER][:PERMS], "
                         "e.g. /dev/fuse or /dev/sdb:/dev/xvdc:r")
    host = parts[0]
    container, perms = host, "rwm"
    if len(parts) == 2:
        if set(parts[1]) <= set("rwm") and parts[1] and not parts[1].startswith("/"):
            perms = parts[1]
        else:
            container = parts[1]
    elif len(parts) == 3:
        container, perms = parts[1], parts[2]
    if not host.startswith("/") or not container.startswith("/"):
        raise UsageError(f"--device: paths must be absolute in {text!r}, e.g. /dev/fuse")
    if not perms or not set(perms) <= set("rwm") or len(set(perms)) != len(perms):
        raise UsageError(f"--device: invalid permissions {perms!r} in {text!r}; use a "
                         "combination of r (read), w (write) and m (mknod), e.g. rw")
    if any(p == ".." for p in container.split("/")):
        raise UsageError(f"--device: container path {container!r} must not contain '..'")
    return Device(host, container, perms)


@record(frozen=True)
class Port:
    """A published port (``-p``): the host's address and port, the container's port."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


#: ``-p`` without HOSTIP publishes on the host's loopback only (docs/network.md says why).
DEFAULT_PUBLISH_IP = "127.0.0.1"


def _port_number(text: str, what: str, spec_text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"-p {spec_text}: invalid {what} {text!r}; give a number from 1 to "
                         "65535, e.g. -p 8080:80")
    return int(text)


def parse_publish(text: str) -> Port:
    """Parse ``-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]`` (Docker's syntax, HOSTIP default
    127.0.0.1: a notebook's container is not meant to be reachable from the LAN)."""
    import ipaddress

    body, _, proto = str(text).partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"-p {text}: invalid protocol {proto!r}; use tcp or udp, "
                         "e.g. -p 5353:53/udp")
    parts = body.rsplit(":", 2)
    if len(parts) == 2:
        host_ip, (host_port, ctr_port) = DEFAULT_PUBLISH_IP, parts
    elif len(parts) == 3:
        host_ip, host_port, ctr_port = parts
        host_ip = host_ip.strip("[]") or "0.0.0.0"
        try:
            if ipaddress.ip_address(host_ip).version != 4:
                raise ValueError
        except ValueError:
            raise UsageError(f"-p {text}: invalid host address {host_ip!r}; give an IPv4 "
                             "address, e.g. 127.0.0.1:8080:80 or 0.0.0.0:8080:80") from None
    else:
        raise UsageError(f"-p {text}: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp], "
                         "e.g. -p 8080:80")
    return Port(host_ip, _port_number(host_port, "host port", text),
                _port_number(ctr_port, "container port", text), proto)


def parse_volume(text: str) -> Volume:
    """Parse ``-v HOST:CTR[:ro|rw]``; both paths must be absolute."""
    parts = str(text).split(":")
    mode = "rw"
    if len(parts) == 3:
        host, ctr, mode = parts
    elif len(parts) == 2:
        host, ctr = parts
    else:
        raise UsageError(f"-v: invalid volume {text!r}; use HOST_PATH:CONTAINER_PATH[:ro]")
    if mode not in ("ro", "rw"):
        raise UsageError(f"-v: invalid mode {mode!r} in {text!r}; use ro or rw")
    if not host.startswith("/") or not ctr.startswith("/"):
        raise UsageError(
            f"-v: both paths must be absolute in {text!r}; use e.g. /home/me/data:/data:ro"
        )
    if ctr.rstrip("/") == "" or any(p == ".." for p in ctr.split("/")):
        raise UsageError(f"-v: container path {ctr!r} must be a directory below / without '..'")
    return Volume(host=host, container=ctr, readonly=mode == "ro")


def parse_env(text: str) -> tuple[str, str]:
    """Parse ``-e K=V``; a bare ``K`` (Docker copies it from the caller) is refused."""
    key, sep, value = str(text).partition("=")
    if not sep:
        raise UsageError(f"-e: invalid {text!r}; use KEY=VALUE")
    if not _ENV_KEY_RE.match(key):
        raise UsageError(
            f"-e: invalid variable name {key!r}; use letters, digits and _, "
            "not starting with a digit"
        )
    return key, value


_ACCOUNT_RE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_.-]{0,31}\$?|\d+)$")


def parse_user(text: str) -> str:
    """Validate ``-u NAME|UID[:GROUP|GID]`` (Docker's syntax); names are resolved in the image
    when the container starts (:mod:`nbcontainer.runtime.users`)."""
    user, sep, group = str(text).partition(":")
    if not _ACCOUNT_RE.match(user) or (sep and not _ACCOUNT_RE.match(group)):
        raise UsageError(f"-u: invalid user {text!r}; use NAME, UID, NAME:GROUP or UID:GID, "
                         "e.g. 1000:1000 or nobody")
    for part in (user, group):
        if part.isdigit() and int(part) > 2**32 - 2:
            raise UsageError(f"-u: user {text!r} is out of range; use ids from 0 to 4294967294")
    return str(text)


def parse_cap(text: str, option: str) -> str:
    """Parse a capability name (``NET_ADMIN``, ``CAP_NET_ADMIN`` or ``ALL``)."""
    name = str(text).strip().upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if name != "ALL" and name not in ALL_CAPS:
        raise UsageError(
            f"{option}: unknown capability {text!r}; use a name from capabilities(7) such as "
            "NET_ADMIN or SYS_PTRACE, or ALL"
        )
    return name


def parse_name(text: str) -> str:
    """Validate a container name: Docker's rule, letters, digits, ``_ . -``."""
    if not _NAME_RE.match(str(text)):
        raise UsageError(
            f"--name: invalid name {text!r}; use letters, digits, _, . and -, starting with a "
            "letter or digit, at most 63 characters"
        )
    return str(text)


def parse_hostname(text: str) -> str:
    """Validate a hostname (one DNS label)."""
    if not _HOSTNAME_RE.match(str(text)):
        raise UsageError(
            f"--hostname: invalid hostname {text!r}; use letters, digits and -, at most 63"
        )
    return str(text)


def parse_timeout(text: str | float) -> float:
    """Parse ``--timeout SECONDS`` (positive)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--timeout: invalid value {text!r}; use seconds, e.g. 10 or 0.5")\
            from None
    if not value > 0:
        raise UsageError(f"--timeout: {text!r} must be above 0 seconds")
    return value


@record(frozen=True)
class Security:
    """``--security-opt``: the seccomp profile and no_new_privs."""

    #: ``default`` (Docker's default profile), ``unconfined``, or a profile's JSON text (read
    #: and checked when the spec is made: the container keeps the profile it was created with).
    seccomp: str = "default"
    #: None: on, unless ``--privileged``; True/False: as given.
    no_new_privileges: bool | None = None


_SECURITY_OPT_HELP = ("use seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges or "
                      "no-new-privileges=true|false")


def parse_security_opts(items: list[str] | tuple[str, ...] | None) -> Security:
    """Parse ``--security-opt`` items (Docker's syntax; a later item wins over an earlier)."""
    seccomp, nnp = "default", None
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep and ":" in key:  # Docker's old spelling, seccomp:unconfined
            key, sep, value = key.partition(":")
        if key == "seccomp" and value and value != "unconfined":
            from nbcontainer.seccomp_profile import load_profile_file

            seccomp = load_profile_file(value)
        elif key == "seccomp" and value:
            seccomp = "unconfined"
        elif key == "no-new-privileges":
            if value.lower() not in ("", "true", "false"):
                raise UsageError(f"--security-opt: invalid {item!r}: no-new-privileges takes "
                                 "true or false")
            nnp = value.lower() != "false"
        else:
            raise UsageError(f"--security-opt: unsupported option {item!r}; "
                             f"{_SECURITY_OPT_HELP}")
    return Security(seccomp=seccomp, no_new_privileges=nnp)


def format_size(n: int | float | None) -> str:
    """Format bytes the way a person reads them: ``100 MiB``, ``1.5 GiB``."""
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} TiB"  # pragma: no cover


@record(frozen=True)
class Limits:
    """The cgroup limits of a container; ``None`` means not set."""

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None


@record(frozen=True)
class ContainerSpec:
    """Everything that defines a container, validated. Build it with :func:`make_spec`."""

    command: tuple[str, ...] = ()
    image: str = "host"
    namespaces: frozenset[str] = DEFAULT_NAMESPACES
    limits: Limits = field(default_factory=Limits)
    hostname: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    volumes: tuple[Volume, ...] = ()
    devices: tuple[Device, ...] = ()
    workdir: str | None = None
    user: str | None = None  # -u NAME|UID[:GROUP|GID], resolved in the image at start
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    timeout: float | None = None
    name: str | None = None
    init: bool = False
    tty: bool = False
    security: Security = field(default_factory=Security)
    #: The network joined (``bridge`` or a user-defined one); None: ``none``, ``host`` or
    #: another container's network namespace.
    network: str | None = None
    #: ``--net container:NAME``: the container whose network namespace this one joins.
    net_container: str | None = None
    #: ``-p``: ports published on the host (only on a network).
    publish: tuple[Port, ...] = ()
    #: When to pull a registry image: ``missing`` (default), ``always`` or ``never``.
    pull: str = "missing"
    #: ``OS/ARCH[/VARIANT]`` to pick from a multi-platform image; None: this machine's.
    platform: str | None = None

    @property
    def net(self) -> str:
        """The ``--net`` mode: a network's name, ``container:NAME``, ``none`` or ``host``."""
        if self.network is not None:
            return self.network
        if self.net_container is not None:
            return f"container:{self.net_container}"
        return "none" if "net" in self.namespaces else "host"

    @property
    def has_rootfs(self) -> bool:
        """True when the container gets its own root filesystem (any image but ``none``)."""
        return self.image != "none"

    def effective_namespaces(self) -> frozenset[str]:
        """The namespaces actually created: a rootfs always brings its own mount namespace."""
        ns = set(self.namespaces)
        if self.has_rootfs or self.volumes:
            ns.add("mount")
        return frozenset(ns)

    def capabilities(self) -> frozenset[str]:
        """The capability set the payload gets (Docker's rules for add/drop/privileged)."""
        if self.privileged:
            return frozenset(ALL_CAPS)
        caps = set(DEFAULT_CAPS)
        if "ALL" in self.cap_drop:
            caps.clear()
        else:
            caps.difference_update(self.cap_drop)
        if "ALL" in self.cap_add:
            caps.update(ALL_CAPS)
        else:
            caps.update(self.cap_add)
        return frozenset(caps)

    def seccomp_profile(self) -> str | None:
        """``default``, a profile's JSON text, or None (unconfined; also with --privileged)."""
        if self.privileged or self.security.seccomp == "unconfined":
            return None
        return self.security.seccomp

    def no_new_privs(self) -> bool:
        """Whether the payload runs with no_new_privs (default: unless --privileged)."""
        nnp = self.security.no_new_privileges
        return not self.privileged if nnp is None else nnp

    def with_(self, **changes: object) -> ContainerSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


def make_spec(
    command: list[str] | tuple[str, ...] = (),
    *,
    image: str = "host",
    memory: str | int | None = None,
    memory_swap: str | int | None = None,
    cpus: str | float | None = None,
    cpu_shares: str | int | None = None,
    cpuset_cpus: str | None = None,
    pids_limit: str | int | None = None,
    ns: str | list[str] | frozenset[str] | None = None,
    net: str | None = None,
    hostname: str | None = None,
    env: list[str] | dict[str, str] | None = None,
    volumes: list[str] | None = None,
    devices: list[str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    cap_add: list[str] | None = None,
    cap_drop: list[str] | None = None,
    privileged: bool = False,
    timeout: str | float | None = None,
    name: str | None = None,
    init: bool = False,
    tty: bool = False,
    security_opt: list[str] | None = None,
    publish: list[str] | None = None,
    pull: str | None = None,
    platform: str | None = None,
) -> ContainerSpec:
    """Validate options given in the user's syntax and build a :class:`ContainerSpec`.

    Raises :class:`~nbcontainer.errors.UsageError` naming the option, what is wrong and what
    is allowed. Nothing outside this function is touched, so a bad option creates nothing.
    """
    namespaces = DEFAULT_NAMESPACES if ns is None else parse_namespaces(ns)
    if net is None and ns is None:
        net = DEFAULT_NETWORK  # an explicit --ns list stays literal: net in it = a bare netns
    network = net_container = None
    if net is not None:
        net = str(net)
        if net.startswith("container:"):
            net_container = net.partition(":")[2]
            if not _NAME_RE.match(net_container):
                raise UsageError("--net container:NAME needs the name or id of a running "
                                 "container, e.g. --net container:web")
        elif net not in NET_MODES and not _NAME_RE.match(net):
            raise UsageError(f"--net: invalid mode {net!r}; use bridge, none, host, "
                             "container:NAME or the name of a network (see `nbcontainer "
                             "network ls`)")
        if net == "host":
            namespaces = namespaces - {"net"}
        else:
            namespaces = namespaces | {"net"}
            network = None if net == "none" or net_container else net
    ports = tuple(parse_publish(p) for p in (publish or ()))
    if ports and network is None:
        raise UsageError(f"-p needs a network, and --net {net or 'host'} has none of its own "
                         "to publish from; use --net bridge (the default) or a network's name")
    seen = {(p.host_ip, p.host_port, p.protocol) for p in ports}
    if len(seen) < len(ports):
        raise UsageError("-p: the same host address and port is published twice; give each "
                         "published port its own host port")
    mem = None if memory in (None, "") else parse_memory(memory)
    swap = None if memory_swap in (None, "") else parse_memory_swap(memory_swap)
    if swap is not None and swap != -1:
        if mem is None:
            raise UsageError("--memory-swap needs --memory too; set both, e.g. -m 100m "
                             "--memory-swap 200m")
        if swap < mem:
            raise UsageError(
                f"--memory-swap ({format_size(swap)}) must be at least --memory "
                f"({format_size(mem)}): it is the total of memory and swap"
            )
    limits = Limits(
        memory=mem,
        memory_swap=swap,
        cpus=None if cpus in (None, "") else parse_cpus(cpus),
        cpu_shares=None if cpu_shares in (None, "") else parse_int(
            cpu_shares, "--cpu-shares", 2, 262144),
        cpuset_cpus=None if not cpuset_cpus else parse_cpuset(cpuset_cpus),
        pids_limit=None if pids_limit in (None, "") else parse_int(
            pids_limit, "--pids-limit", 1, 4194304),
    )
    if isinstance(env, dict):
        env_items = tuple((parse_env(f"{k}={v}")) for k, v in env.items())
    else:
        env_items = tuple(parse_env(e) for e in (env or ()))
    vols = tuple(parse_volume(v) for v in (volumes or ()))
    if workdir is not None and not str(workdir).startswith("/"):
        raise UsageError(f"-w: working directory {workdir!r} must be an absolute path, e.g. /tmp")
    if image == "none" and workdir is None:
        pass
    if hostname is not None and "uts" not in namespaces:
        raise UsageError("--hostname needs a uts namespace (the hostname would be the host's); "
                         "add uts to --ns")
    cmd = tuple(str(c) for c in command)
    if any("\0" in c for c in cmd):
        raise UsageError("command: arguments must not contain NUL bytes")
    # The reference grammar (regexes compiled at its import) only for a registry image:
    # a start of a built-in image does not pay for it.
    if image not in BUILTIN_IMAGES:
        from nbcontainer.reference import parse as parse_reference

        try:
            parse_reference(str(image))
        except UsageError as err:
            raise UsageError(f"image: {err}") from None
    if pull not in (None, "", *PULL_POLICIES):
        raise UsageError(f"--pull: invalid policy {pull!r}; use missing (the default), always "
                         "or never")
    plat = None
    if platform not in (None, ""):
        from nbcontainer.reference import parse_platform

        plat = str(parse_platform(str(platform)))
    return ContainerSpec(
        command=cmd,
        image=image,
        namespaces=namespaces,
        limits=limits,
        hostname=None if hostname is None else parse_hostname(hostname),
        env=env_items,
        volumes=vols,
        devices=tuple(parse_device(d) for d in (devices or ())),
        workdir=workdir,
        user=None if user in (None, "") else parse_user(user),
        cap_add=tuple(parse_cap(c, "--cap-add") for c in (cap_add or ())),
        cap_drop=tuple(parse_cap(c, "--cap-drop") for c in (cap_drop or ())),
        privileged=privileged,
        timeout=None if timeout in (None, "") else parse_timeout(timeout),
        name=None if name is None else parse_name(name),
        init=init,
        tty=tty,
        security=parse_security_opts(security_opt),
        network=network,
        net_container=net_container,
        publish=ports,
        pull=pull or "missing",
        platform=plat,
    )


def _to_json(value: object) -> object:
    """A spec value in JSON form: records as dicts, sets as sorted lists, tuples as lists."""
    if isinstance(value, (Limits, Volume, Device, Security, Port)):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


#: How a field's JSON form becomes its value again, for the fields that are not plain
#: JSON scalars; any other ``tuple[...]`` field is a tuple of its items.
_FROM_JSON: dict[str, Callable[[Any], object]] = {
    "namespaces": frozenset,
    "limits": lambda d: Limits(**d),
    "security": lambda d: Security(**d),
    "volumes": lambda items: tuple(Volume(**v) for v in items),
    "devices": lambda items: tuple(Device(**d) for d in items),
    "publish": lambda items: tuple(Port(**p) for p in items),
    "env": lambda items: tuple((k, v) for k, v in items),
}


def spec_to_dict(spec: ContainerSpec) -> dict[str, object]:
    """A JSON-ready form of a spec (for the detached monitor and kernelspecs), field by field."""
    return {f.name: _to_json(getattr(spec, f.name)) for f in fields(ContainerSpec)}


def spec_from_dict(data: dict) -> ContainerSpec:
    """The inverse of :func:`spec_to_dict`; absent fields take their defaults."""
    values: dict[str, object] = {}
    for f in fields(ContainerSpec):
        if f.name not in data:
            continue
        convert = _FROM_JSON.get(f.name) or (tuple if str(f.type).startswith("tuple[") else None)
        values[f.name] = convert(data[f.name]) if convert else data[f.name]
    return ContainerSpec(**values)  # type: ignore[arg-type]
