"""Outbound NAT for a network, in a chain of our own, and the state of IPv4 forwarding.

One ``iptables`` process per rule when a network's bridge is created or removed, never per
container (no ``nft`` binary here, and nftables over netlink is a lot of code for three rules).
The rules live in ``NBCONTAINER-POSTROUTING`` of the ``nat`` table, jumped to from
``POSTROUTING``; removing the last network removes the jump and the chain, so the host's own
rules are never touched.

IPv4 forwarding (``net.ipv4.ip_forward``) is a global setting of the machine: nbcontainer
reads it and never writes it. Traffic inside a network (container to container over the
bridge, host to container) needs no forwarding; outbound traffic does.
"""

from __future__ import annotations

import shutil
import subprocess

from nbcontainer.errors import NetworkError

CHAIN = "NBCONTAINER-POSTROUTING"
FORWARDING_OFF = ("IPv4 forwarding is off, so containers cannot reach outside their network; "
                  "enable it with sysctl net.ipv4.ip_forward=1")


def forwarding() -> bool:
    """True if the machine forwards IPv4 (``/proc/sys/net/ipv4/ip_forward`` is 1)."""
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def backend() -> str:
    """``iptables (nf_tables)``, ``iptables (legacy)``, or ``none`` when there is no iptables."""
    path = shutil.which("iptables")
    if path is None:
        return "none"
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return "iptables (nf_tables)" if "nf_tables" in out else "iptables (legacy)"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("iptables")
    if path is None:
        raise NetworkError("outbound NAT needs iptables, which is not installed; install it "
                           "(e.g. apt-get install iptables)")
    return subprocess.run([path, "-w", "-t", "nat", *args], capture_output=True, text=True)


def _rule(subnet: str, bridge: str) -> list[str]:
    return ["-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]


def add(subnet: str, bridge: str) -> None:
    """MASQUERADE what leaves ``subnet`` other than through its own bridge."""
    _iptables("-N", CHAIN)  # fails when it exists: fine
    if _iptables("-C", "POSTROUTING", "-j", CHAIN).returncode != 0:
        _check(_iptables("-I", "POSTROUTING", "-j", CHAIN), "jump to " + CHAIN)
    if _iptables("-C", CHAIN, *_rule(subnet, bridge)).returncode != 0:
        _check(_iptables("-A", CHAIN, *_rule(subnet, bridge)), f"masquerade {subnet}")


def remove(subnet: str, bridge: str) -> None:
    """Remove the network's rule; with the last one, the chain and the jump to it."""
    if shutil.which("iptables") is None:
        return
    while _iptables("-D", CHAIN, *_rule(subnet, bridge)).returncode == 0:
        pass
    listing = _iptables("-S", CHAIN)
    if listing.returncode == 0 and len(listing.stdout.strip().splitlines()) <= 1:
        while _iptables("-D", "POSTROUTING", "-j", CHAIN).returncode == 0:
            pass
        _iptables("-X", CHAIN)


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise NetworkError(f"cannot {what} with iptables: {done.stderr.strip()}")
