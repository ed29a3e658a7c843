"""rtnetlink(7) over a raw ``AF_NETLINK`` socket: links, bridges, veth pairs, addresses, routes.

The one place that speaks netlink. Written here with ``socket`` and ``struct`` rather than
taken from pyroute2, because:

- both sides use it: the supervisor (bridge, veth pair into the container's namespace) and the
  container's first process, which configures its own ``eth0`` (address, default route) in its
  network namespace before it drops its capabilities. That process is the helper, which must
  start fast and imports nothing but the bottom of the package: pyroute2 costs tens of
  milliseconds and thousands of lines to import, these few messages cost nothing;
- a handful of requests is all a bridge network needs (about as many as ``ip link add``
  sends), each one request and one acknowledgement;
- no ``ip`` process per container: one exec of ``ip`` costs more than all of this.

Every call opens its own socket (in the network namespace of the calling thread), sends one
request with ``NLM_F_ACK`` and reads the answer. A failure is an :class:`OSError` whose text
names the operation and the errno, e.g. ``cannot create veth nbc1234 (File exists)``.

Cheap to import (the helper loads it): no ``typing``, no ``dataclasses``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1

IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO = 3, 10, 18
IFLA_NET_NS_PID, IFLA_NET_NS_FD = 19, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_GATEWAY, RTA_OIF = 5, 4
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_NLMSGHDR = struct.Struct("=LHHLL")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope,
#                                       type, flags


def _attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length & 3)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0,
                           IFF_UP if up else 0)


def _request(kind: int, flags: int, body: bytes, what: str) -> bytes:
    """Send one request, return the first answer's payload (b'' for a bare acknowledgement).

    Raises OSError ``cannot <what> (<strerror>)`` when the kernel says no.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind,
                                   NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0) + body, (0, 0))
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, f"cannot {what} (a malformed netlink answer)")
                payload = data[offset + _NLMSGHDR.size: offset + length]
                offset += (length + 3) & ~3
                if seq != 1:
                    continue
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, f"cannot {what} ({os.strerror(code)})")
                    return b""
                return payload


def link_index(name: str) -> int | None:
    """The ifindex of link ``name`` in this network namespace, or None if there is none."""
    try:
        payload = _request(RTM_GETLINK, 0, _ifinfo() + _name(IFLA_IFNAME, name),
                           f"look up link {name}")
    except OSError as err:
        if err.errno == errno.ENODEV:
            return None
        raise
    return int(_IFINFOMSG.unpack_from(payload)[2]) if payload else None


def create_bridge(name: str) -> int:
    """``ip link add NAME type bridge && ip link set NAME up``; returns its ifindex."""
    info = _attr(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "bridge"))
    _request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
             _ifinfo(up=True) + _name(IFLA_IFNAME, name) + info, f"create bridge {name}")
    index = link_index(name)
    if index is None:
        raise OSError(errno.ENODEV, f"cannot create bridge {name} (it vanished)")
    return index


def create_veth(host: str, peer: str, *, netns_pid: int | None = None,
                netns_fd: int | None = None, master: int | None = None) -> None:
    """A veth pair: ``host`` here, up (enslaved to bridge ifindex ``master``), ``peer`` down,
    created directly in the network namespace of ``netns_pid`` (IFLA_NET_NS_PID) or
    ``netns_fd`` (IFLA_NET_NS_FD, an open /proc/PID/ns/net), so its name cannot clash with
    ours. The peer cannot be created up: the kernel opens it before the pair is linked
    (ENOTCONN); the namespace's owner sets it up (:func:`configure_inside`)."""
    where = b""
    if netns_pid is not None:
        where = _u32(IFLA_NET_NS_PID, netns_pid)
    elif netns_fd is not None:
        where = _u32(IFLA_NET_NS_FD, netns_fd)
    peer_msg = _ifinfo() + _name(IFLA_IFNAME, peer) + where
    info = _attr(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "veth")
                 + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_msg)))
    body = _ifinfo(up=True) + _name(IFLA_IFNAME, host) + info
    if master is not None:
        body += _u32(IFLA_MASTER, master)
    _request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {host}")


def set_up(name: str) -> None:
    """``ip link set NAME up``."""
    _request(RTM_NEWLINK, 0, _ifinfo(up=True) + _name(IFLA_IFNAME, name),
             f"set link {name} up")


def delete_link(name: str) -> bool:
    """``ip link del NAME`` (a veth takes its peer along); False if there was none."""
    try:
        _request(RTM_DELLINK, 0, _ifinfo() + _name(IFLA_IFNAME, name), f"delete link {name}")
    except OSError as err:
        if err.errno == errno.ENODEV:
            return False
        raise
    return True


def add_address(name: str, address: str, prefixlen: int) -> None:
    """``ip addr add ADDRESS/PREFIXLEN dev NAME`` (IPv4, with its broadcast address)."""
    index = link_index(name)
    if index is None:
        raise OSError(errno.ENODEV, f"cannot add address {address} to {name} (no such link)")
    packed = socket.inet_aton(address)
    host_bits = (1 << (32 - prefixlen)) - 1
    broadcast = struct.pack("!I", struct.unpack("!I", packed)[0] | host_bits)
    body = (_IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, index)
            + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
            + _attr(IFA_BROADCAST, broadcast))
    _request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body,
             f"add address {address}/{prefixlen} to {name}")


def add_default_route(gateway: str, name: str) -> None:
    """``ip route add default via GATEWAY dev NAME`` in the main table."""
    index = link_index(name)
    if index is None:
        raise OSError(errno.ENODEV, f"cannot add a route via {name} (no such link)")
    body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                        RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
            + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _u32(RTA_OIF, index))
    _request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body,
             f"add the default route via {gateway}")


def configure_inside(ifname: str, address: str, prefixlen: int, gateway: str | None) -> None:
    """What a container's first process does in its own network namespace: ``ifname`` up,
    the address, the default route via the gateway."""
    set_up(ifname)
    add_address(ifname, address, prefixlen)
    if gateway:
        add_default_route(gateway, ifname)
