"""Published ports (``-p``): a small relay in the supervisor, as Docker's ``docker-proxy``.

Why a relay rather than DNAT rules: a port published on the host's ``127.0.0.1`` (the
default) is reached by the host's own programs, and DNAT of loopback traffic to a bridge
needs ``route_localnet``, a setting that lets any interface accept 127.0.0.0/8 as source, plus
an ``iptables`` process per container on the start path. A relay needs neither, the kernel
refuses a taken port at ``bind`` (before anything of the container exists), and it cannot
outlive its container: the sockets belong to the supervisor (the notebook kernel, the CLI, the
detached monitor) and close with the container or with it. The cost is a copy through user
space, measured in bench/bench_network.py.

One daemon thread per container waits on every listening socket (``selectors``); each TCP
connection gets two threads copying one direction each with blocking sockets (few
connections, simple and fair); each UDP client gets a connected socket to the container,
dropped after :data:`UDP_IDLE` seconds without traffic.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Sequence

from nbcontainer.errors import UsageError
from nbcontainer.spec import Port

CHUNK = 1 << 16
UDP_IDLE = 60.0
UDP_CLIENTS = 256


def _bind(port: Port) -> socket.socket:
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        if kind == socket.SOCK_STREAM:
            # Only TIME_WAIT leftovers are reused; a listening socket still refuses.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((port.host_ip, port.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as err:
        sock.close()
        where = f"{port.host_ip}:{port.host_port}/{port.protocol}"
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"-p {port.host_port}:{port.container_port}: {where} is already "
                             "in use on the host; choose another host port") from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"-p: {port.host_ip} is not an address of this machine; use "
                             "127.0.0.1, 0.0.0.0 or one of its own addresses") from None
        raise UsageError(f"-p: cannot listen on {where}: {err.strerror}") from None
    return sock


class Publisher:
    """The published ports of one container: bound at once, relayed from :meth:`start`."""

    def __init__(self, ports: Sequence[Port]) -> None:
        self.ports = tuple(ports)
        self._listeners: list[tuple[socket.socket, Port]] = []
        try:
            for port in self.ports:
                self._listeners.append((_bind(port), port))
        except BaseException:
            for sock, _ in self._listeners:
                sock.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, address: str) -> None:
        """Relay every published port to ``address`` (the container's) from now on."""
        self._thread = threading.Thread(target=self._serve, args=(address,), daemon=True,
                                        name="nbcontainer-ports")
        self._thread.start()

    def close(self) -> None:
        """Stop listening and cut every relayed connection. Idempotent."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()
        self._wake_r.close()
        self._wake_w.close()
        for sock, _ in self._listeners:
            sock.close()
        self._listeners.clear()

    def _serve(self, address: str) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        for listening, port in self._listeners:
            sel.register(listening, selectors.EVENT_READ, ("listen", port))
        udp: dict[tuple[socket.socket, tuple[str, int]], tuple[socket.socket, float]] = {}
        try:
            while not self._closed:
                for key, _ in sel.select(timeout=UDP_IDLE / 4 if udp else None):
                    if key.data is None:
                        return
                    kind, port = key.data[0], key.data[1]
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if kind == "listen" and port.protocol == "tcp":
                        self._accept(sock, address, port)
                    elif kind == "listen":
                        self._udp_in(sel, udp, sock, address, port)
                    else:  # a container's reply to a UDP client
                        listener, client = key.data[1], key.data[2]
                        with contextlib.suppress(OSError):
                            data = sock.recv(CHUNK)
                            listener.sendto(data, client)
                            udp[(listener, client)] = (sock, time.monotonic())
                now = time.monotonic()
                for flow, (upstream, seen) in list(udp.items()):
                    if now - seen > UDP_IDLE:
                        sel.unregister(upstream)
                        upstream.close()
                        del udp[flow]
        finally:
            for upstream, _ in udp.values():
                upstream.close()
            sel.close()

    def _accept(self, listener: socket.socket, address: str, port: Port) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=self._connect, args=(client, address, port), daemon=True,
                         name="nbcontainer-port").start()

    def _connect(self, client: socket.socket, address: str, port: Port) -> None:
        try:
            upstream = socket.create_connection((address, port.container_port), timeout=5)
        except OSError:
            client.close()  # nothing listens inside (yet): the client sees the connection end
            return
        upstream.settimeout(None)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._conns |= {client, upstream}
        other = threading.Thread(target=self._copy, args=(upstream, client), daemon=True,
                                 name="nbcontainer-port")
        other.start()
        self._copy(client, upstream)
        other.join()
        with self._lock:
            self._conns -= {client, upstream}
        client.close()
        upstream.close()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        """One direction of a TCP connection, until its end (then half-close the other)."""
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _udp_in(self, sel: selectors.BaseSelector,
                udp: dict[tuple[socket.socket, tuple[str, int]], tuple[socket.socket, float]],
                listener: socket.socket, address: str, port: Port) -> None:
        try:
            data, client = listener.recvfrom(CHUNK)
        except OSError:
            return
        flow = (listener, client)
        if flow in udp:
            upstream = udp[flow][0]
        else:
            if len(udp) >= UDP_CLIENTS:
                return  # a flood of clients: drop, as a full conntrack table would
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            upstream.connect((address, port.container_port))
            sel.register(upstream, selectors.EVENT_READ, ("reply", listener, client))
        udp[flow] = (upstream, time.monotonic())
        with contextlib.suppress(OSError):
            upstream.send(data)
