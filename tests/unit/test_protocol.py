"""The runtime's message codec: typed records, round trips, and every way a packet can be bad."""

from __future__ import annotations

import array
import contextlib
import os
import socket

import pytest

from nbcontainer.protocol import (
    Channel,
    ChannelClosed,
    Config,
    Exit,
    Go,
    Pid,
    ProtocolError,
    Spawn,
    Stdio,
    decode,
    encode,
)


def test_messages_round_trip_through_the_codec() -> None:
    config = Config(mode="run", namespaces=["pid", "uts"], argv=["sh"], env={"A": "1"},
                    caps=["CHOWN"], user=[1000, 1000], rootfs={"dir": "/x", "layers": ["/"]},
                    volumes=[["/a", "/b", True]])
    for message in (config, Pid(pid=42), Go(), Exit(status=9), Spawn(targets=[5, 6])):
        assert decode(encode(message)) == message
    assert config.workdir is None and config.join == [] and config.python is None


def test_defaults_are_not_shared_between_messages() -> None:
    first = Config(mode="run", namespaces=[], argv=[], env={}, caps=[])
    first.join.append("pid")
    assert Config(mode="run", namespaces=[], argv=[], env={}, caps=[]).join == []


@pytest.mark.parametrize("packet, reason", [
    (b"not json{", "not a message"),
    (b"\xff\xfe", "not a message"),
    (b"[1, 2]", "not a message"),
    (b'{"pid": 3}', "not a message"),
    (b'{"op": "launch-missiles"}', "unknown message"),
    (b'{"op": "pid"}', "field 'pid' should be int, got None"),
    (b'{"op": "pid", "pid": "3"}', "field 'pid' should be int, got '3'"),
    (b'{"op": "pid", "pid": true}', "field 'pid' should be int, got True"),
    (b'{"op": "pid", "pid": 3, "extra": 1}', "has no field 'extra'"),
    (b'{"op": "exit", "status": 99999999}', "is not a wait status"),
    (b'{"op": "config", "mode": "run", "namespaces": ["pid", 7], "argv": [], "env": {}, '
     b'"caps": []}', "field 'namespaces' should be list[str]"),
])
def test_a_bad_packet_is_a_protocol_error_in_words(packet: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode(packet)


def test_a_channel_passes_fds_and_closes_unexpected_ones() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a, b = Channel(left), Channel(right)
    r, w = os.pipe()
    try:
        a.send(Stdio(targets=[7]), [w])
        message, fds = b.recv_with_fds()
        assert message == Stdio(targets=[7]) and len(fds) == 1
        os.write(fds[0], b"x")
        os.close(fds[0])
        assert os.read(r, 1) == b"x"
        # recv() (no fds expected) closes what came attached instead of leaking it.
        # Counted by what they point at: other threads of this process (a spare being made,
        # a background cleanup) may open and close fds meanwhile.
        pipe = os.readlink(f"/proc/self/fd/{w}")

        def copies() -> int:
            found = 0
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    found += os.readlink(f"/proc/self/fd/{fd}") == pipe
            return found

        before = copies()
        a.send(Go(), [w, w, w])
        assert b.recv(Go) == Go()
        assert copies() == before
        a.send(Pid(pid=1))
        with pytest.raises(ProtocolError, match="got 'pid' where go or attached was expected"):
            from nbcontainer.protocol import Attached

            b.recv(Go, Attached)
        right.send(b"garbage{")
        with pytest.raises(ProtocolError, match="not a message"):
            a.recv()
        a.close()
        with pytest.raises(ChannelClosed):
            b.recv()
    finally:
        b.close()
        os.close(r)
        os.close(w)


def test_a_channel_reads_each_message_whole_and_refuses_an_oversized_one() -> None:
    """recv_with_fds peeks at a message's length and reads exactly that: small and large
    messages come back whole, one at a time; one above MAX_MESSAGE is a ProtocolError in words
    (its fds closed), and the next message still reads."""
    from nbcontainer.protocol import MAX_MESSAGE

    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    a, b = Channel(left), Channel(right)
    r, w = os.pipe()
    try:
        big = Spawn(targets=list(range(100_000, 200_000)))  # about 700 KB of JSON
        assert MAX_MESSAGE // 2 < len(encode(big)) < MAX_MESSAGE
        a.send(Pid(pid=1))
        a.send(big)
        a.send(Pid(pid=2))
        assert b.recv(Pid) == Pid(pid=1)
        assert b.recv(Spawn) == big
        assert b.recv(Pid) == Pid(pid=2)
        left.sendmsg([b"{" + b" " * MAX_MESSAGE + b"}"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        with pytest.raises(ProtocolError, match=f"more than the {MAX_MESSAGE}"):
            b.recv_with_fds()
        a.send(Pid(pid=3))
        assert b.recv(Pid) == Pid(pid=3)
        os.close(w)
        w = -1
        assert os.read(r, 1) == b"", "the oversized message's fd was closed"
    finally:
        a.close()
        b.close()
        os.close(r)
        if w >= 0:
            os.close(w)
