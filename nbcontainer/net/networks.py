"""Networks: a bridge, a subnet, the addresses leased to containers.

A bridge and its addresses belong to the machine (its network namespace), not to one store:
two stores (a user's and a test's) on one machine share ``nbc0``, so they must share its
leases too. Each network is ``/var/lib/nbcontainer/networks/<name>.json`` (or under
``$NBCONTAINER_NETWORKS``, for a test that runs in a network namespace of its own), written
atomically under the lock ``networks/.lock``::

    {"name": "bridge", "bridge": "nbc0", "subnet": "10.88.0.0/16", "gateway": "10.88.0.1",
     "leases": {"10.88.0.2": {"container": ID, "root": STORE, "names": [...],
                              "veth": "nbcID", "user": USER}}}

A container's names reach only the hosts files of its own user's containers (USER: see
``runtime/state.py``; on a JupyterHub, ``$JUPYTERHUB_USER``).

The default network ``bridge`` (bridge ``nbc0``, podman's 10.88.0.0/16) is made on first use;
others by ``nbcontainer network create``. A bridge is created with its gateway address and its
outbound NAT rule (:mod:`nbcontainer.net.nat`) when a network is created or first used, and kept
(like ``docker0``) until the network is removed. Per container: a lease (:func:`attach`), a veth
pair into its network namespace (:func:`plug`, one netlink request), and on every way out
:func:`release` (the teardown, or :func:`collect` for a crashed supervisor's containers).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import json
import os
from collections.abc import Callable, Container, Iterator
from pathlib import Path

from nbcontainer import _netlink
from nbcontainer.errors import NetworkError, UsageError
from nbcontainer.net import files, nat
from nbcontainer.paths import containers_dir, directory_lock, machine_records
from nbcontainer.spec import DEFAULT_NETWORK, NET_MODES

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any

DEFAULT_BRIDGE = "nbc0"
DEFAULT_SUBNET = "10.88.0.0/16"
#: Where ``network create`` without ``--subnet`` looks for a free /24 (podman's habit).
USER_SUBNETS = ipaddress.IPv4Network("10.89.0.0/16")
#: The container's end of its veth pair.
IFNAME = "eth0"

Network = dict[str, "Any"]
Attachment = dict[str, "Any"]


def networks_dir() -> Path:
    """Where the machine's network records live."""
    return machine_records("networks")


def _locked() -> contextlib.AbstractContextManager[None]:
    """The lock over every network record (leases are taken under it)."""
    return directory_lock(networks_dir())


def _path(name: str) -> Path:
    return networks_dir() / f"{name}.json"


def _load(name: str) -> Network | None:
    try:
        with open(_path(name)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise NetworkError(f"the record of network {name!r} cannot be read: {err}") from err
    return data if isinstance(data, dict) else None


def _save(network: Network) -> None:
    path = _path(network["name"])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(network))  # compact: the C encoder (indent takes the Python one)
    os.replace(tmp, path)


def list_networks() -> list[Network]:
    """Every network of the machine, by name (the default one even before its first use)."""
    names = {DEFAULT_NETWORK}
    base = networks_dir()
    if base.is_dir():
        names |= {e[:-5] for e in os.listdir(base) if e.endswith(".json")}
    found = []
    for name in sorted(names):
        network = _load(name)
        if network is None and name == DEFAULT_NETWORK:
            network = _default_record()
        if network is not None:
            found.append(network)
    return found


def host_routes(path: str = "/proc/net/route") -> list[tuple[str, ipaddress.IPv4Network]]:
    """The host's IPv4 routes of the main table, as (interface, destination), default aside."""
    routes = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = int(fields[1], 16).to_bytes(4, "little")
        mask = int(fields[7], 16).to_bytes(4, "little")
        prefix = bin(int.from_bytes(mask, "big")).count("1")
        if prefix == 0:
            continue  # the default route overlaps everything by design
        net = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(dest)}/{prefix}", strict=False)
        routes.append((fields[0], net))
    return routes


def _overlap(subnet: ipaddress.IPv4Network, bridge: str, name: str) -> str | None:
    """A sentence naming what ``subnet`` overlaps (a host route, another network), or None."""
    for other in list_networks():
        if other["name"] != name and subnet.overlaps(ipaddress.ip_network(other["subnet"])):
            return (f"subnet {subnet} overlaps network {other['name']!r} ({other['subnet']}); "
                    "choose another with --subnet")
    for iface, route in host_routes():
        if iface != bridge and subnet.overlaps(route):
            return (f"subnet {subnet} overlaps the host's route to {route} (dev {iface}); "
                    "choose another with --subnet, e.g. 10.89.1.0/24")
    return None


def _default_record() -> Network:
    """The default network as it would be made now: ``nbc0`` on ``$NBCONTAINER_BRIDGE_SUBNET``
    (like dockerd's ``bip``), else :data:`DEFAULT_SUBNET`. Read when the network is first
    made; a network's subnet is then kept in its record."""
    text = os.environ.get("NBCONTAINER_BRIDGE_SUBNET") or DEFAULT_SUBNET
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError as err:
        raise UsageError(f"NBCONTAINER_BRIDGE_SUBNET: invalid {text!r} ({err}); give an IPv4 "
                         "network in CIDR form, e.g. 10.89.255.0/24") from None
    return _new_record(DEFAULT_NETWORK, DEFAULT_BRIDGE, subnet)


def _new_record(name: str, bridge: str, subnet: ipaddress.IPv4Network) -> Network:
    return {"name": name, "bridge": bridge, "subnet": str(subnet),
            "gateway": str(subnet.network_address + 1), "leases": {}}


def bridge_name(name: str) -> str:
    """The bridge of network ``name``: ``nbc0`` for the default, else ``nbc-`` and a hash
    (interface names have 15 characters at most)."""
    if name == DEFAULT_NETWORK:
        return DEFAULT_BRIDGE
    import hashlib  # here: OpenSSL's libcrypto is 3 ms of a CLI start on the default network

    return "nbc-" + hashlib.sha256(name.encode()).hexdigest()[:10]


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """``--subnet CIDR``: an IPv4 network with room for a gateway and a container."""
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError as err:
        raise UsageError(f"--subnet: invalid {text!r} ({err}); give an IPv4 network in CIDR "
                         "form, e.g. 10.89.1.0/24") from None
    if subnet.prefixlen > 29:
        raise UsageError(f"--subnet: {text} is too small; use at most /29, e.g. 10.89.1.0/24")
    return subnet


def create(name: str, subnet: str | None = None) -> Network:
    """``network create NAME [--subnet CIDR]``: the record, the bridge and its NAT rule.

    Refuses (UsageError, nothing created) a reserved or taken name and a subnet that overlaps
    a host route or another network.
    """
    from nbcontainer.spec import parse_name

    name = parse_name(name)
    if name in NET_MODES or name == DEFAULT_NETWORK or name.startswith("container"):
        raise UsageError(f"network name {name!r} is reserved; choose another")
    with _locked():
        if _load(name) is not None:
            raise UsageError(f"network {name!r} already exists (see `nbcontainer network ls`)")
        bridge = bridge_name(name)
        if subnet is not None:
            net = parse_subnet(subnet)
            problem = _overlap(net, bridge, name)
            if problem:
                raise UsageError(problem)
        else:
            for candidate in USER_SUBNETS.subnets(new_prefix=24):
                if _overlap(candidate, bridge, name) is None:
                    net = candidate
                    break
            else:
                raise UsageError(f"no free /24 left in {USER_SUBNETS}; give one with --subnet")
        network = _new_record(name, bridge, net)
        _ensure_bridge(network)
        try:
            _save(network)
        except OSError:
            _remove_bridge(network)
            raise
    return network


def remove(name: str) -> None:
    """``network rm NAME``: refused while containers use it; the bridge and NAT rule go too.

    The default network too, when no container uses it: its record and ``nbc0`` go, and the
    next container makes them again (on ``$NBCONTAINER_BRIDGE_SUBNET`` if that is set now).
    """
    with _locked():
        network = _load(name)
        if network is None:
            if name == DEFAULT_NETWORK:
                network = _default_record()
            else:
                raise UsageError(f"no such network: {name} (see `nbcontainer network ls`)")
        users = sorted({lease["container"] for lease in network["leases"].values()})
        if users:
            raise UsageError(f"network {name!r} is in use by container(s) {', '.join(users)}; "
                             "stop them first")
        _remove_bridge(network)
        with contextlib.suppress(FileNotFoundError):
            _path(name).unlink()


def _ensure_bridge(network: Network) -> int:
    """The bridge's ifindex; the bridge (gateway address, NAT rule) is made when missing."""
    bridge = network["bridge"]
    index = _netlink.link_index(bridge)
    if index is not None:
        return index
    subnet = ipaddress.ip_network(network["subnet"])
    try:
        index = _netlink.create_bridge(bridge)
        _netlink.add_address(bridge, network["gateway"], subnet.prefixlen)
        nat.add(str(subnet), bridge)
    except OSError as err:
        _remove_bridge(network)
        raise NetworkError(f"network {network['name']!r}: {err.strerror or err}") from err
    except NetworkError:
        _remove_bridge(network)
        raise
    return index


def _remove_bridge(network: Network) -> None:
    nat.remove(network["subnet"], network["bridge"])
    with contextlib.suppress(OSError):
        _netlink.delete_link(network["bridge"])


def _hosts_entries(network: Network, but: str, user: str | None) -> list[tuple[str, list[str]]]:
    """(address, names) of the network's containers other than container ``but``, of the
    same user: names are per user (runtime/state.py), so another student's ``web`` is not
    this one's ``web`` (an address without a name stays reachable, as on any shared bridge)."""
    return [(address, [str(n) for n in lease.get("names", [])])
            for address, lease in sorted(network["leases"].items(),
                                         key=lambda item: ipaddress.ip_address(item[0]))
            if lease["container"] != but and lease.get("user") == user]


def _tell_neighbours(network: Network, but: str | None = None) -> None:
    """Rewrite the hosts file of every container of the network (one joined or left), but
    container ``but``'s (the one that joined has just written its own)."""
    for address, lease in network["leases"].items():
        if "root" not in lease or lease["container"] == but:
            continue
        path = containers_dir(Path(lease["root"])) / lease["container"] / "hosts"
        own = (address, [str(n) for n in lease.get("names", [])])
        files.rewrite_hosts(path, own, _hosts_entries(network, lease["container"],
                                                      lease.get("user")))


def _host_range(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
                after: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Iterator[Any]:
    """The subnet's host addresses starting after ``after``, wrapping around once."""
    first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    start = int(after) + 1 if first <= int(after) < last else first
    for value in itertools.chain(range(start, last + 1), range(first, start)):
        yield ipaddress.ip_address(value)


def next_free(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
              after: ipaddress.IPv4Address | ipaddress.IPv6Address,
              taken: Container[str]) -> str | None:
    """The first host address of ``subnet`` after ``after`` (wrapping around) not in ``taken``,
    or None. Stops at the first free one: listing a /16's 65534 addresses first cost every
    container about 60 ms (bench/bench_network.py found it)."""
    return next((str(a) for a in _host_range(subnet, after) if str(a) not in taken), None)


def _lease(name: str, lease: dict[str, Any]) -> tuple[Network, Attachment]:
    """Under the lock: take a free address of network ``name`` for ``lease`` (its bridge is
    made when missing); return the network and the attachment."""
    network = _load(name)
    if network is None:
        if name != DEFAULT_NETWORK:
            raise UsageError(f"--net: no such network: {name} (create it with `nbcontainer "
                             f"network create {name}`, or see `nbcontainer network ls`)")
        network = _default_record()
        problem = _overlap(ipaddress.IPv4Network(network["subnet"]), DEFAULT_BRIDGE, name)
        if problem:
            raise NetworkError(f"the default network cannot be made: {problem.split(';')[0]}; "
                               "set NBCONTAINER_BRIDGE_SUBNET to a free one, e.g. "
                               "10.89.255.0/24 (docs/network.md)")
    index = _ensure_bridge(network)
    subnet = ipaddress.ip_network(network["subnet"])
    taken = set(network["leases"]) | {network["gateway"]}
    # The next free address after the last one given, as Docker's IPAM does: an address just
    # released is not given again at once (its old namespace may still answer ARP while the
    # kernel tears it down).
    after = ipaddress.ip_address(str(network.get("last") or network["gateway"]))
    address = next_free(subnet, after, taken)
    if address is None:
        raise NetworkError(f"network {name!r} has no free address left in {subnet}")
    network["last"] = address
    network["leases"][address] = lease
    _save(network)
    return network, {"network": name, "address": address, "prefixlen": subnet.prefixlen,
                     "gateway": network["gateway"], "bridge": network["bridge"],
                     "bridge_index": index, "veth": lease["veth"], "ifname": IFNAME}


def attach(root: Path, name: str, container: str, names: list[str],
           directory: Path | None, user: str | None = None
           ) -> tuple[Attachment, list[list[object]]]:
    """Lease an address of network ``name`` to ``container`` and make sure its bridge exists.

    With ``directory`` (a container with a root filesystem), also write its hosts, hostname
    and resolv.conf there and return them as volumes to bind-mount over /etc's.
    Returns the attachment (what :func:`plug` and :func:`release` need, kept in the
    container's record) and those volumes. ``user``: whose container it is (its names are
    listed only in the same user's containers' hosts files).
    """
    veth = ("nbc" + container)[:15]
    with _locked():
        network, attachment = _lease(name, {"container": container, "root": str(root),
                                            "names": names, "veth": veth, "user": user})
        volumes = _files(network, attachment["address"], container, names, directory, user)
    return attachment, volumes


def _files(network: Network, address: str, container: str, names: list[str],
           directory: Path | None, user: str | None) -> list[list[object]]:
    """Under the lock: the container's /etc files (as volumes), and its neighbours told."""
    if directory is None:
        return []
    volumes = files.write(directory, names[0], (address, names),
                          _hosts_entries(network, container, user))
    _tell_neighbours(network, but=container)
    return volumes


def attach_spare(name: str, spare: str, supervisor: int, pid: int) -> Attachment:
    """A spare container (runtime/spare.py) on network ``name``: an address leased to it and
    its veth pair plugged into the network namespace of ``pid`` now, off a cell's path.

    The lease names the supervisor (``spare_of``), so gc keeps it while that process lives;
    :func:`adopt` hands it to the container that takes the spare.
    """
    veth = f"nbs{supervisor & 0xFFFFFF:06x}{pid & 0xFFFFFF:06x}"
    with _locked():
        _, attachment = _lease(name, {"container": spare, "spare_of": supervisor,
                                      "names": [], "veth": veth})
    attachment["spare"] = spare
    try:
        plug(attachment, pid)
        configure_from_host(pid, attachment)
    except BaseException:
        release(attachment, spare)
        raise
    return attachment


def adopt(root: Path, attachment: Attachment, spare: str, container: str, names: list[str],
          directory: Path | None, user: str | None = None) -> list[list[object]]:
    """The spare's lease becomes ``container``'s (of store ``root``), with its names and
    /etc files; returns those as volumes. NetworkError if the lease is not the spare's."""
    with _locked():
        network = _load(attachment["network"])
        lease = None if network is None else network["leases"].get(attachment["address"])
        if network is None or lease is None or lease["container"] != spare:
            raise NetworkError(f"the spare's address {attachment['address']} was released")
        network["leases"][attachment["address"]] = {
            "container": container, "root": str(root), "names": names, "veth": lease["veth"],
            "user": user}
        _save(network)
        return _files(network, attachment["address"], container, names, directory, user)


def configure_from_host(pid: int, attachment: Attachment) -> None:
    """What a container's first process does in its network namespace (``lo`` and ``eth0``
    up, the address, the default route), done for it from here: for a spare, ahead of its
    cell (half a millisecond of the first process's setup otherwise).

    From a thread of ours that joins that namespace and ends: a thread's network namespace
    is its own (setns(2)), so the process's other threads and sockets stay in theirs.
    """
    import threading

    from nbcontainer import _libc

    failed: list[BaseException] = []

    def configure() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _libc.setns(fd, _libc.CLONE_NEWNET)
            finally:
                os.close(fd)
            _netlink.set_up("lo")
            _netlink.configure_inside(attachment["ifname"], attachment["address"],
                                      attachment["prefixlen"], attachment.get("gateway"))
        except BaseException as err:  # re-raised in the caller's thread
            failed.append(err)

    worker = threading.Thread(target=configure, name="nbcontainer-netns", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise NetworkError(f"cannot configure the network of process {pid}: {failed[0]}")
    attachment["configured"] = True


def plug(attachment: Attachment, pid: int) -> None:
    """The veth pair: the host end on the bridge, ``eth0`` in the network namespace of
    ``pid`` (the container's first process configures its own side)."""
    try:
        _netlink.create_veth(attachment["veth"], attachment["ifname"], netns_pid=pid,
                             master=attachment["bridge_index"])
    except OSError as err:
        raise NetworkError(f"network {attachment['network']!r}: {err.strerror or err}") from err


def release(attachment: Attachment, container: str) -> None:
    """Remove the lease, tell the neighbours, and remove the veth pair. Idempotent.

    Nothing is done when the address is leased to another holder by now (a spare's lease
    adopted by a container, or the address given again after an earlier release): that
    veth is theirs. The veth goes after the lock is let go (deleting one takes the kernel
    some 15 ms; other containers need the lock meanwhile): addresses are given in turn, so
    this one is not given again before the whole subnet has been.
    """
    with _locked():
        network = _load(attachment["network"])
        lease = None if network is None else network["leases"].get(attachment["address"])
        if lease is not None and lease["container"] != container:
            return
        if network is not None and lease is not None:
            del network["leases"][attachment["address"]]
            _save(network)
            _tell_neighbours(network)
    try:
        _netlink.delete_link(attachment["veth"])
    except OSError as err:
        if err.errno != errno.ENODEV:
            raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(alive: Callable[[Path, str], bool]) -> list[str]:
    """gc: release the leases (and veths) of containers that are gone, of every store.

    ``alive(store, id)`` says whether container ``id`` of store ``store`` still has a
    supervisor (or is being made). It is asked afresh for each lease, so a container started
    while gc runs keeps its address. A lease of a store that no longer exists is released; a
    spare's lease is kept while the supervisor that made it lives.
    """
    actions: list[str] = []
    if not networks_dir().is_dir():
        return actions
    for network in list_networks():
        for address, lease in list(network["leases"].items()):
            if "spare_of" in lease:
                if _process_alive(lease["spare_of"]):
                    continue
                why = f"spare of the gone process {lease['spare_of']}"
            else:
                owner = Path(lease["root"]) if lease.get("root") else None
                if owner is not None and owner.is_dir() and alive(owner, lease["container"]):
                    continue
                why = f"container {lease['container']} is gone"
            release({"network": network["name"], "address": address,
                     "veth": lease["veth"]}, lease["container"])
            actions.append(f"released {address} of network {network['name']} ({why})")
    return actions
