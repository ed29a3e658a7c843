"""The environment doctor behind ``nbcontainer info``: each check says what to do if it fails."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One fact about this machine."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
    #: Advice worth reading even when the check passed.
    note: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _root_propagation() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                tags = fields[6:fields.index("-")]
                return ",".join(tags) or "private"
    return "unknown"


def _network_checks() -> list[Check]:
    """The default bridge, the NAT backend and IPv4 forwarding (``--net bridge``)."""
    from nbcontainer.net import nat, networks

    default = next(n for n in networks.list_networks() if n["name"] == "bridge")
    made = os.path.exists(f"/sys/class/net/{default['bridge']}")
    checks = [
        Check("network bridge", True,
              f"{default['bridge']} {default['subnet']} gateway {default['gateway']}, "
              + ("up" if made else "made on first use")
              + f"; {len(networks.list_networks())} network(s), records in "
              f"{networks.networks_dir()}", required=False),
    ]
    backend = nat.backend()
    checks.append(Check("outbound NAT", backend != "none",
                        f"{backend}, chain {nat.CHAIN} of the nat table",
                        "apt-get install iptables; without it containers reach only their "
                        "network", required=False))
    on = nat.forwarding()
    checks.append(Check("IPv4 forwarding", on, "on" if on else
                        "off: containers reach each other and the host, not beyond",
                        "sysctl net.ipv4.ip_forward=1 (a machine-wide setting nbcontainer "
                        "never changes)", required=False))
    return checks


def report(store: Path) -> list[Check]:
    """Every check, in the order a person would fix them."""
    from nbcontainer import cgroups

    checks = [
        Check("root", os.geteuid() == 0, f"running as uid {os.geteuid()}",
              "run nbcontainer as root (sudo); namespaces, mounts and cgroups need it"),
        Check("kernel", True, f"Linux {platform.release()} ({platform.machine()})",
              required=False),
    ]
    try:
        layout = cgroups.detect()
        checks.append(Check("cgroups", "memory" in layout.controllers,
                            layout.describe().replace("\n", "; "),
                            "enable the memory controller (cgroup_enable=memory) for --memory"))
    except Exception as err:  # noqa: BLE001 - the doctor reports, never crashes
        checks.append(Check("cgroups", False, f"cannot read the cgroup layout: {err}",
                            "mount cgroup2 at /sys/fs/cgroup (or the v1 controllers)"))
    filesystems = _read("/proc/filesystems") or ""
    has_overlay = "overlay" in filesystems
    checks.append(Check("overlayfs", has_overlay,
                        "available" if has_overlay else "not in /proc/filesystems",
                        "load it with `modprobe overlay`; images need it"))
    max_userns = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    userns_ok = max_userns not in (None, "0")
    checks.append(Check(
        "user namespaces", userns_ok,
        f"max_user_namespaces={max_userns}"
        + (f", unprivileged_userns_clone={clone}" if clone is not None else ""),
        "set user.max_user_namespaces above 0 (sysctl) to use --ns user", required=False))
    for ns in ("uts", "ipc", "pid", "mnt", "net", "user", "cgroup"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            checks.append(Check(f"{ns} namespace", False, "missing in /proc/self/ns",
                                f"a kernel built with CONFIG_{ns.upper()}_NS"))
    prop = _root_propagation()
    checks.append(Check("mount propagation of /", True,
                        f"{prop}; every container makes its own mounts private first",
                        required=False))
    busybox = shutil.which("busybox") or next(
        (p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    checks.append(Check("busybox", busybox is not None,
                        busybox or "not found: the busybox image is unavailable",
                        "apt-get install busybox-static", required=False))
    checks += _network_checks()
    checks.append(_store_check(store))
    checks.append(_user_check())
    return checks


def _store_check(configured: Path) -> Check:
    """Where the store is, how much room it has, and whether it had to move off overlayfs."""
    from nbcontainer.paths import placement

    place = placement(configured)
    store = place.root if place.mounted else configured
    existing = store if store.exists() else store.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError as err:
        return Check("store", False, f"{store}: {err.strerror}",
                     "set NBCONTAINER_ROOT to a writable directory")
    if not place.on_overlay:
        return Check("store", True, f"{store} ({free / 2**30:.1f} GiB free)", required=False)
    where = "kept" if place.mounted else "to be kept (mounted on first use)"
    return Check(
        "store", True,
        f"{configured} is on overlayfs (as in a Docker container or a pod), which cannot "
        "hold an overlay's upper layer or a layer's whiteouts: images and containers are "
        f"{where} in a tmpfs of nbcontainer's own at {place.root} (in memory: gone when "
        f"this container or machine stops; {free / 2**30:.1f} GiB free)",
        note=f"to keep them on disk, mount a volume at {configured} (as Docker-in-Docker needs "
        "for /var/lib/docker) or set NBCONTAINER_ROOT to a directory on one",
        required=False)


def _user_check() -> Check:
    """Whose containers ``ps``/``rm`` see here (runtime/state.py: per JupyterHub user)."""
    from nbcontainer.runtime.state import current_user

    user = current_user()
    if user is None:
        return Check("containers of", True, "no user: the containers made outside any hub "
                     "(JUPYTERHUB_USER and NBCONTAINER_USER are unset); images are shared",
                     required=False)
    source = "NBCONTAINER_USER" if os.environ.get("NBCONTAINER_USER") else "JUPYTERHUB_USER"
    return Check("containers of", True, f"user {user} ({source}): ps, rm and names see only "
                 "this user's containers; images are shared", required=False)
