"""Networks on a real kernel: ``--net bridge`` and user-defined networks, names, leases, gc.

Traffic goes only to loopback and to the namespaces these tests make. The default bridge
``nbc0`` and the NAT chain are kept between tests (like docker0) and removed at the end of the
session, so the machine is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbcontainer.net import nat, networks

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "nbcontainer"]


def nbc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI and capture its output."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def store() -> Path:
    return Path(os.environ["NBCONTAINER_ROOT"])


def leases(name: str = "bridge") -> dict:
    """This test session's leases of network ``name`` (the records are the machine's, and
    another store may be using the same bridge meanwhile)."""
    path = networks.networks_dir() / f"{name}.json"
    found = json.loads(path.read_text())["leases"] if path.exists() else {}
    return {a: lease for a, lease in found.items() if lease.get("root") == str(store())}


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module", autouse=True)
def remove_networks_at_the_end():
    """Leave the machine as before: no nbc0, no NBCONTAINER-POSTROUTING chain."""
    had_bridge = "nbc0" in links()
    yield
    assert leases() == {}
    for network in networks.list_networks():
        if network["name"].startswith("nbct-"):
            networks.remove(network["name"])
    if not had_bridge and not network_in_use("bridge"):
        networks.remove("bridge")
        assert "nbc0" not in links()
        assert nat.CHAIN not in nat_rules()


def network_in_use(name: str) -> bool:
    """Whether any store's container (another test run's, say) holds an address of it."""
    path = networks.networks_dir() / f"{name}.json"
    return path.exists() and bool(json.loads(path.read_text())["leases"])


def _wait_running(name: str) -> None:
    for _ in range(100):
        if "Up" in nbc("ps").stdout and name in nbc("ps").stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not start")


# A client that retries while the server is not listening yet (bounded: 50 x 0.1 s).
RETRY = 'try() { for i in $(seq 50); do "$@" && return 0; sleep 0.1; done; return 1; }; '


def test_two_containers_reach_each_other_by_name_and_address():
    # busybox nc sends nothing when its client closes first: clients retry until they read.
    srv = nbc("run", "-d", "--name", "nbct-srv", "--net", "bridge", "busybox", "sh", "-c",
              "for i in $(seq 20); do echo pong | nc -l -p 8080; done")
    assert srv.returncode == 0, srv.stderr
    try:
        _wait_running("nbct-srv")
        address = next(a for a, lease in leases().items() if "nbct-srv" in lease["names"])
        client = nbc("run", "--net", "bridge", "busybox", "sh", "-c",
                     RETRY + "try sh -c 'nc nbct-srv 8080 | grep pong' && "
                     f"try sh -c 'nc {address} 8080 | grep pong'")
        assert client.stdout == "pong\npong\n", client.stderr
        nbc("stop", "-t", "0.5", "nbct-srv")
        # The server has ended: its lease goes although its record is kept (named).
        for _ in range(100):
            if all("nbct-srv" not in lease["names"] for lease in leases().values()):
                break
            time.sleep(0.05)
        assert all("nbct-srv" not in lease["names"] for lease in leases().values())
        assert "Exited" in nbc("ps", "-a").stdout
    finally:
        nbc("rm", "-f", "nbct-srv")
    assert leases() == {}


def test_hosts_lists_the_network_and_hostname_resolv_conf_are_written():
    p = nbc("run", "--net", "bridge", "--hostname", "box", "busybox", "sh", "-c",
            "cat /etc/hostname; grep -c box /etc/hosts; grep -c nameserver /etc/resolv.conf; "
            "ip route")
    lines = p.stdout.splitlines()
    assert lines[0] == "box" and lines[1] == "1" and int(lines[2]) >= 1, p.stderr
    assert "default via 10.88.0.1 dev eth0" in p.stdout


def test_host_reaches_a_container_but_a_container_not_the_hosts_loopback():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[object] = []
    listener.settimeout(5)

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(listener.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        p = nbc("run", "--net", "bridge", "busybox", "sh", "-c",
                f"nc -w 1 127.0.0.1 {port} </dev/null && echo reached-lo; "
                f"nc -w 1 10.88.0.1 {port} </dev/null && echo reached-gw; echo done")
        assert p.stdout == "done\n", p.stdout
    finally:
        listener.close()
        thread.join()
    assert not accepted
    srv = nbc("run", "-d", "--name", "nbct-web", "--net", "bridge", "busybox", "sh", "-c",
              "echo hi | nc -l -p 8081")
    assert srv.returncode == 0, srv.stderr
    try:
        _wait_running("nbct-web")
        address = next(a for a, lease in leases().items() if "nbct-web" in lease["names"])
        data = b""
        for _ in range(50):
            try:
                with socket.create_connection((address, 8081), timeout=2) as conn:
                    data = conn.recv(16)
                break
            except OSError:
                time.sleep(0.1)
        assert data == b"hi\n"
    finally:
        nbc("rm", "-f", "nbct-web")


@pytest.mark.skipif(nat.forwarding(), reason="IPv4 forwarding is on here")
def test_forwarding_off_is_said_in_words_and_not_changed():
    p = nbc("run", "--net", "bridge", "busybox", "true")
    assert p.returncode == 0
    assert "IPv4 forwarding is off" in p.stderr and "sysctl net.ipv4.ip_forward=1" in p.stderr
    assert not nat.forwarding()


def test_network_create_ls_run_rm():
    before = links()
    assert nbc("network", "create", "nbct-a", "--subnet", "10.89.77.0/24").returncode == 0
    try:
        ls = nbc("network", "ls").stdout
        assert "nbct-a" in ls and "10.89.77.0/24" in ls and "bridge" in ls
        bridge = networks.bridge_name("nbct-a")
        assert bridge in links() and "10.89.77.0/24" in nat_rules()
        p = nbc("run", "--net", "nbct-a", "busybox", "sh", "-c", "ip -4 addr show eth0")
        assert "inet 10.89.77.2/24" in p.stdout, p.stderr
        held = subprocess.Popen([*CLI, "run", "--net", "nbct-a", "busybox", "sleep", "30"],
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if leases("nbct-a"):
                    break
                time.sleep(0.05)
            busy = nbc("network", "rm", "nbct-a")
            assert busy.returncode == 125 and "in use" in busy.stderr
        finally:
            held.send_signal(signal.SIGKILL)
            held.wait()
            nbc("gc")
    finally:
        rm = nbc("network", "rm", "nbct-a")
    assert rm.returncode == 0, rm.stderr
    assert links() - before == set() and "10.89.77.0/24" not in nat_rules()
    assert "nbct-a" not in nbc("network", "ls").stdout


def _host_subnet() -> str:
    """A subnet the host routes to, not through a bridge of ours (e.g. eth0's); the test is
    skipped on a machine with none (the v2 VM has only loopback)."""
    routes = [str(route) for iface, route in networks.host_routes()
              if not iface.startswith("nbc")]
    if not routes:
        pytest.skip("this machine routes no subnet of its own (only loopback)")
    return routes[0]


@pytest.mark.parametrize("args, fragment", [
    (["network", "create", "nbct-b", "--subnet", "10.88.5.0/24"], "overlaps network 'bridge'"),
    (["network", "create", "nbct-b", "--subnet", "HOST"], "overlaps the host's route"),
    (["network", "create", "nbct-b", "--subnet", "10.89.1.1/24"], "--subnet: invalid"),
    (["network", "create", "bridge"], "reserved"),
    (["network", "rm", "nbct-nope"], "no such network: nbct-nope"),
    (["run", "--net", "nbct-nope", "busybox", "true"], "no such network: nbct-nope"),
    (["run", "--net", "bad/name", "busybox", "true"], "--net: invalid mode"),
])
def test_bad_input_is_one_sentence_exit_125_and_creates_nothing(args, fragment):
    args = [_host_subnet() if a == "HOST" else a for a in args]
    before_links, before_ls = links(), nbc("network", "ls").stdout
    p = nbc(*args)
    assert p.returncode == 125
    assert fragment in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert links() == before_links and nbc("network", "ls").stdout == before_ls


def test_kill_9_of_the_supervisor_then_gc_leaves_no_veth_and_no_lease():
    # A detached container outlives its monitor (the supervisor): its veth stays until gc.
    started = nbc("run", "-d", "--net", "bridge", "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    record = json.loads((store() / "containers" / cid / "state.json").read_text())
    for _ in range(100):
        record = json.loads((store() / "containers" / cid / "state.json").read_text())
        if record.get("status") == "running":
            break
        time.sleep(0.05)
    veth = record["network"]["veth"]
    assert veth in links() and leases()
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    for _ in range(100):
        if not os.path.exists(f"/proc/{record['supervisor_pid']}"):
            break
        time.sleep(0.05)
    gc = nbc("gc")
    assert gc.returncode == 0, gc.stderr
    assert veth not in links()
    assert leases() == {}
    assert nbc("rm", cid).returncode == 0  # gc keeps the record of a container without --rm


def test_gc_releases_a_lease_whose_container_is_gone_and_keeps_one_being_made():
    from nbcontainer.runtime import manage

    # A container being made right now (its directory is there, its record not yet): kept.
    young = store() / "containers" / "deadbeef0000"
    young.mkdir(parents=True)
    try:
        attachment, _ = networks.attach(store(), "bridge", "deadbeef0000", ["ghost"], None)
        manage.gc(store())
        assert attachment["address"] in leases()
    finally:
        young.rmdir()
    # Its directory gone (a crash before the record was saved): released.
    actions = manage.gc(store())
    assert leases() == {} and any("deadbeef0000" in a for a in actions)


def _record(name: str) -> dict:
    """The state record of a named container of this session."""
    for entry in (store() / "containers").iterdir():
        path = entry / "state.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("name") == name:
                return record
    raise AssertionError(f"no record of {name}")


def _connect_and_read(host: str, port: int, tries: int = 50) -> bytes:
    """Connect (retrying while the server inside starts: bounded) and read a line."""
    for _ in range(tries):
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                data = conn.recv(64)
            if data:
                return data
        except OSError:
            pass
        time.sleep(0.1)
    return b""


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_is_the_bridge_and_an_explicit_ns_list_stays_literal():
    default = nbc("run", "busybox", "sh", "-c", "ip -4 -o addr show eth0; ip route")
    assert "inet 10.88." in default.stdout and "default via 10.88.0.1" in default.stdout, \
        default.stderr
    bare = nbc("run", "--ns", "uts,mount,net", "busybox", "sh", "-c",
               "ip -o link | grep -c 'eth0' || true; ip -4 -o addr | grep -v ' lo ' | wc -l")
    assert bare.stdout.split() == ["0", "0"], bare.stdout  # a bare namespace: no eth0
    host_links = {link for link in links() if not link.startswith(("nbc", "nbs"))}
    hosted = nbc("run", "--ns", "uts,mount", "busybox", "sh", "-c", "ls /sys/class/net")
    assert host_links <= set(hosted.stdout.split()), hosted.stdout  # the host's network


def test_published_tcp_and_udp_ports_reach_the_container_from_the_host():
    tcp, udp = _free_port(), _free_port(socket.SOCK_DGRAM)
    srv = nbc("run", "-d", "--name", "nbct-pub", "-p", f"{tcp}:80", "-p", f"{udp}:5353/udp",
              "host", "python3", "-c",
              "import socket, threading\n"
              "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('', 5353))\n"
              "def echo():\n"
              "    while True:\n"
              "        data, peer = u.recvfrom(64); u.sendto(data.upper(), peer)\n"
              "threading.Thread(target=echo, daemon=True).start()\n"
              "t = socket.create_server(('', 80))\n"
              "while True:\n"
              "    c, _ = t.accept(); c.sendall(b'hello over tcp\\n'); c.close()\n")
    assert srv.returncode == 0, srv.stderr
    try:
        _wait_running("nbct-pub")
        assert _connect_and_read("127.0.0.1", tcp) == b"hello over tcp\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.5)
            reply = b""
            for _ in range(20):  # bounded: the server may not be bound yet
                client.sendto(b"ping", ("127.0.0.1", udp))
                try:
                    reply = client.recv(64)
                    break
                except TimeoutError:
                    continue
        assert reply == b"PING"
        ps = nbc("ps").stdout
        row = next(line for line in ps.splitlines() if "nbct-pub" in line)
        assert f"127.0.0.1:{tcp}->80/tcp" in row and f"127.0.0.1:{udp}->5353/udp" in row
        assert _record("nbct-pub")["network"]["address"] in row
        # A taken port: refused before anything is made (no record, lease or link).
        before_links, before_leases = links(), leases()
        before_records = set(os.listdir(store() / "containers"))
        taken = nbc("run", "-p", f"{tcp}:81", "busybox", "true")
        assert taken.returncode == 125
        assert f"127.0.0.1:{tcp}/tcp is already in use" in taken.stderr
        assert len(taken.stderr.strip().splitlines()) == 1, taken.stderr
        assert links() == before_links and leases() == before_leases
        assert set(os.listdir(store() / "containers")) == before_records
    finally:
        nbc("rm", "-f", "nbct-pub")
    # The port is free again: nothing listens after the container ended.
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", tcp))


def test_net_container_shares_the_other_containers_network_namespace():
    srv = nbc("run", "-d", "--name", "nbct-pod", "busybox", "sh", "-c",
              "while true; do echo from-the-pod | nc -l -p 7070; done")
    assert srv.returncode == 0, srv.stderr
    try:
        _wait_running("nbct-pod")
        address = _record("nbct-pod")["network"]["address"]
        side = nbc("run", "--net", "container:nbct-pod", "busybox", "sh", "-c",
                   RETRY + "ip -4 -o addr show eth0; grep -c nbct-pod /etc/hosts; "
                   "try sh -c 'nc 127.0.0.1 7070 | grep from-the-pod'")
        assert f"inet {address}/" in side.stdout, side.stderr
        assert side.stdout.splitlines()[1:] == ["1", "from-the-pod"], side.stdout
        # The side container joined the pod's namespace: no address of its own was leased.
        assert [lease["names"] for lease in leases().values()] == [["nbct-pod"]]
    finally:
        nbc("rm", "-f", "nbct-pod")


@pytest.mark.parametrize("args, fragment", [
    (["run", "--net", "container:nbct-absent", "busybox", "true"],
     "--net container:nbct-absent: no such container"),
    (["run", "-p", "80", "busybox", "true"], "expected [HOSTIP:]HOSTPORT:CTRPORT"),
    (["run", "-p", "8080:80/sctp", "busybox", "true"], "invalid protocol 'sctp'"),
    (["run", "--net", "none", "-p", "8080:80", "busybox", "true"], "-p needs a network"),
    (["run", "-p", "10.255.255.254:8080:80", "busybox", "true"],
     "10.255.255.254 is not an address of this machine"),
])
def test_bad_network_options_are_one_sentence_and_create_nothing(args, fragment):
    before = (links(), leases(), set(os.listdir(store() / "containers"))
              if (store() / "containers").is_dir() else set())
    p = nbc(*args)
    assert p.returncode == 125 and fragment in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    after = (links(), leases(), set(os.listdir(store() / "containers"))
             if (store() / "containers").is_dir() else set())
    assert after == before


def test_net_container_of_a_stopped_container_is_refused():
    assert nbc("run", "--name", "nbct-gone", "busybox", "true").returncode == 0
    try:
        p = nbc("run", "--net", "container:nbct-gone", "busybox", "true")
        assert p.returncode == 125 and "nbct-gone is not running" in p.stderr, p.stderr
    finally:
        nbc("rm", "nbct-gone")


def test_a_container_on_another_network_does_not_resolve_the_first_ones_names():
    assert nbc("network", "create", "nbct-other", "--subnet", "10.89.78.0/24").returncode == 0
    srv = nbc("run", "-d", "--name", "nbct-private", "busybox", "sleep", "30")
    try:
        _wait_running("nbct-private")
        same = nbc("run", "busybox", "grep", "-c", "nbct-private", "/etc/hosts")
        other = nbc("run", "--net", "nbct-other", "busybox", "sh", "-c",
                    "grep -c nbct-private /etc/hosts; ping -c 1 -W 1 nbct-private")
        assert same.stdout.strip() == "1", same.stderr
        assert other.stdout.splitlines()[0] == "0" and other.returncode != 0, other.stdout
    finally:
        nbc("rm", "-f", "nbct-private")
        nbc("network", "rm", "nbct-other")
    assert srv.returncode == 0


def test_info_reports_the_bridge_nat_backend_and_forwarding():
    out = nbc("info").stdout
    assert "network bridge: nbc0 10.88.0.0/16 gateway 10.88.0.1" in out
    assert "outbound NAT: iptables" in out and nat.CHAIN in out
    assert "IPv4 forwarding: " + ("on" if nat.forwarding() else "off") in out
