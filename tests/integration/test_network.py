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
    path = store() / "networks" / f"{name}.json"
    return json.loads(path.read_text())["leases"] if path.exists() else {}


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
    for network in networks.list_networks(store()):
        networks.remove(store(), network["name"], predefined=not had_bridge)
    assert had_bridge or "nbc0" not in links()
    assert had_bridge or nat.CHAIN not in nat_rules()


def _wait_running(name: str) -> None:
    for _ in range(100):
        if "Up" in nbc("ps").stdout and name in nbc("ps").stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not start")


# A client that retries while the server is not listening yet (bounded: 50 x 0.1 s).
RETRY = 'try() { for i in $(seq 50); do "$@" && return 0; sleep 0.1; done; return 1; }; '


def test_two_containers_reach_each_other_by_name_and_address():
    srv = nbc("run", "-d", "--name", "nbct-srv", "--net", "bridge", "busybox", "sh", "-c",
              "for i in 1 2; do echo pong | nc -l -p 8080; done")
    assert srv.returncode == 0, srv.stderr
    try:
        _wait_running("nbct-srv")
        address = next(a for a, lease in leases().items() if "nbct-srv" in lease["names"])
        client = nbc("run", "--net", "bridge", "busybox", "sh", "-c",
                     RETRY + f"try nc nbct-srv 8080 && try nc {address} 8080")
        assert client.stdout == "pong\npong\n", client.stderr
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
    (["network", "rm", "bridge"], "default network"),
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
