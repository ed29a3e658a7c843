"""``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/hostname`` for a container on a network.

Written in the container's directory and bind-mounted over the image's files, as Docker does.
The mount points come from a small *init layer* (``<container>/init/etc/...``, empty files,
Docker's ``-init`` layer) on top of the image's layers: without it overlayfs would create them
in the container's upper layer, and ``commit`` would record them as the container's changes.
``hosts`` lists the container itself and the other containers of its network; when one joins
or leaves, the others' files are rewritten in place (same inode), so their bind mounts see it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

#: Docker's fallback when the host has only loopback nameservers and no upstream ones.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
#: systemd-resolved's list of upstream servers, behind its 127.0.0.53 stub.
_UPSTREAM = "/run/systemd/resolve/resolv.conf"
FILES = ("hosts", "hostname", "resolv.conf")


def _nameservers(text: str) -> tuple[list[str], list[str]]:
    """(nameserver addresses, other lines worth keeping: search, options)."""
    servers, other = [], []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain", "options"):
            other.append(" ".join(words))
    return servers, other


def _not_loopback(address: str) -> bool:
    try:
        return not ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(host_file: str = "/etc/resolv.conf", upstream: str = _UPSTREAM) -> str:
    """The host's resolver configuration without loopback servers (unreachable from a
    network namespace): systemd-resolved's upstream servers instead, else Docker's fallback."""
    try:
        text = Path(host_file).read_text()
    except OSError:
        text = ""
    servers, other = _nameservers(text)
    usable = [s for s in servers if _not_loopback(s)]
    if not usable:
        with contextlib.suppress(OSError):
            usable = [s for s in _nameservers(Path(upstream).read_text())[0] if _not_loopback(s)]
    if not usable:
        usable = list(FALLBACK_NAMESERVERS)
    return "".join(f"{line}\n" for line in other) + "".join(f"nameserver {s}\n" for s in usable)


def hosts(own: tuple[str, list[str]], others: list[tuple[str, list[str]]]) -> str:
    """An /etc/hosts: loopback, the container's (address, names), then the others'."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{own[0]}\t{' '.join(own[1])}"]
    lines += [f"{address}\t{' '.join(names)}" for address, names in others]
    return "\n".join(lines) + "\n"


def write(directory: Path, hostname: str, own: tuple[str, list[str]],
          others: list[tuple[str, list[str]]]) -> list[list[object]]:
    """Write the three files; return them as volumes ``[host path, container path, ro]``."""
    (directory / "hostname").write_text(hostname + "\n")
    (directory / "resolv.conf").write_text(resolv_conf())
    (directory / "hosts").write_text(hosts(own, others))
    return [[str(directory / name), f"/etc/{name}", False] for name in FILES]


def rewrite_hosts(path: Path, own: tuple[str, list[str]],
                  others: list[tuple[str, list[str]]]) -> None:
    """Rewrite a running container's hosts file in place (its bind mount pins the inode)."""
    with contextlib.suppress(FileNotFoundError), open(path, "r+") as f:
        f.truncate(0)
        f.write(hosts(own, others))


def init_layer(directory: Path) -> str:
    """Make the container's init layer (empty mount points for the three files); its path."""
    etc = directory / "init" / "etc"
    etc.mkdir(parents=True, mode=0o755, exist_ok=True)
    for name in FILES:
        (etc / name).touch(0o644)
    return str(directory / "init")
