"""A default container cannot reach the host's loopback services (the default network is the
private bridge, see docs/network.md); ``--net host`` gives that up on purpose.

Each attempt connects to a TCP server the test starts on the host's 127.0.0.1 (a stand-in for
Jupyter's own server, a database, a metadata proxy): from a default container by 127.0.0.1, by
the bridge's gateway address, and by the host's own other addresses; from a Python body (as a
``%%container`` cell runs); and, for contrast, from ``--net host``, which must reach it. The
server counts what it accepted, so a failure to connect is told from a server that is down.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from conftest import capture

from nbcontainer.net import networks

pytestmark = pytest.mark.root


@contextlib.contextmanager
def loopback_server():
    """A TCP server on the host's 127.0.0.1 that says ``secret`` to whoever connects;
    yields (port, list of accepted peers)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(peer[0])
            with conn:
                conn.sendall(b"secret\n")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback's (from its routes' interfaces)."""
    found = []
    for iface, _ in networks.host_routes():
        with contextlib.suppress(OSError):
            import fcntl
            import struct

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", iface[:15].encode()))
            found.append(socket.inet_ntoa(packed[20:24]))
    return sorted(set(found))


def test_a_default_container_cannot_reach_the_hosts_loopback_services():
    with loopback_server() as (port, accepted):
        # Sanity: the server answers on the host.
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            assert conn.recv(16) == b"secret\n"
        targets = ["127.0.0.1", networks.DEFAULT_SUBNET.replace("0.0/16", "0.1")]
        targets += host_addresses()
        script = "; ".join(f"nc -w 1 {t} {port} </dev/null && echo REACHED {t}"
                           for t in targets) + "; echo done"
        code, out, err = capture(["sh", "-c", script], image="busybox")
        assert out == "done\n", (out, err)
        assert accepted == ["127.0.0.1"]  # only the sanity check got through


def test_a_python_cell_body_cannot_reach_them_either():
    with loopback_server() as (port, accepted):
        body = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), "
                "timeout=1)\n    print('REACHED')\nexcept OSError as err:\n"
                "    print('refused', type(err).__name__)\n")
        code, out, err = capture([], image="host", container={"python": body})
        assert out.startswith("refused"), (out, err)
        assert accepted == []


def test_net_host_gives_the_loopback_services_away_as_documented():
    with loopback_server() as (port, accepted):
        code, out, err = capture(["sh", "-c", f"nc -w 2 127.0.0.1 {port} </dev/null"],
                                 image="busybox", net="host")
        assert out == "secret\n", err
        assert accepted == ["127.0.0.1"]
