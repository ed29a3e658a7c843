"""The pure parts of networking: resolv.conf, hosts, the route table, subnets, netlink bytes."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from nbcontainer import _netlink
from nbcontainer.errors import UsageError
from nbcontainer.net import files, networks


def test_resolv_conf_drops_loopback_servers_for_the_upstream_ones(tmp_path):
    host = tmp_path / "resolv.conf"
    upstream = tmp_path / "upstream"
    host.write_text("# stub\nnameserver 127.0.0.53\noptions edns0\nsearch lan\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver ::1\n")
    assert files.resolv_conf(str(host), str(upstream)) == (
        "options edns0\nsearch lan\nnameserver 192.0.2.53\n")


def test_resolv_conf_falls_back_to_dockers_servers(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.1\n")
    text = files.resolv_conf(str(host), str(tmp_path / "missing"))
    assert text == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_hosts_lists_loopback_itself_and_the_others():
    text = files.hosts(("10.88.0.3", ["web", "w1"]), [("10.88.0.2", ["db"])])
    assert text.splitlines() == ["127.0.0.1\tlocalhost",
                                 "::1\tlocalhost ip6-localhost ip6-loopback",
                                 "10.88.0.3\tweb w1", "10.88.0.2\tdb"]


def test_rewrite_hosts_keeps_the_inode(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("old and long " * 10)
    inode = path.stat().st_ino
    files.rewrite_hosts(path, ("10.0.0.2", ["a"]), [])
    assert path.stat().st_ino == inode and path.read_text().endswith("10.0.0.2\ta\n")


def test_host_routes_parses_proc_net_route(tmp_path):
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert networks.host_routes(str(table)) == [
        ("eth0", ipaddress.IPv4Network("192.0.2.0/24"))]


@pytest.mark.parametrize("text, fragment", [
    ("10.1.2.3/24", "invalid"), ("nonsense", "invalid"), ("fd00::/64", "invalid"),
    ("10.1.2.0/30", "too small"),
])
def test_parse_subnet_refuses_in_words(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        networks.parse_subnet(text)


class CountingSet(set):
    """A set that counts the membership tests made of it."""

    asked = 0

    def __contains__(self, item):
        self.asked += 1
        return super().__contains__(item)


def test_next_free_address_follows_the_last_given_and_wraps():
    subnet = ipaddress.IPv4Network("10.88.0.0/16")
    taken = {"10.88.0.1", "10.88.0.6", "10.88.0.7"}
    assert networks.next_free(subnet, ipaddress.ip_address("10.88.0.5"), taken) == "10.88.0.8"
    # From the last host address it wraps around to the first free one.
    assert networks.next_free(subnet, ipaddress.ip_address("10.88.255.254"), taken) \
        == "10.88.0.2"
    small = ipaddress.IPv4Network("10.89.1.0/29")  # hosts .1 to .6
    full = {f"10.89.1.{i}" for i in range(1, 7)}
    assert networks.next_free(small, ipaddress.ip_address("10.89.1.1"), full) is None


def test_next_free_address_stops_at_the_first_free_one():
    """A lease on a /8 looks at a handful of addresses, not at 16 million of them (listing a
    /16's first cost every container about 60 ms)."""
    taken = CountingSet({"10.0.0.1", "10.0.0.2", "10.0.0.3"})
    got = networks.next_free(ipaddress.IPv4Network("10.0.0.0/8"),
                             ipaddress.ip_address("10.0.0.1"), taken)
    assert got == "10.0.0.4"
    assert taken.asked == 3  # .2, .3 and .4


def test_bridge_names_fit_ifnamsiz():
    assert networks.bridge_name("bridge") == "nbc0"
    assert len(networks.bridge_name("a-very-long-network-name-indeed")) <= 15


def test_netlink_attributes_are_padded_and_nested():
    attr = _netlink._name(_netlink.IFLA_IFNAME, "eth0")
    assert attr == struct.pack("=HH", 9, _netlink.IFLA_IFNAME) + b"eth0\0" + b"\0" * 3
    info = _netlink._ifinfo(index=7, up=True)
    assert _netlink._IFINFOMSG.unpack(info) == (socket.AF_UNSPEC, 0, 7, 1, 1)
