"""Outbound NAT, proven against an "outside" the test makes: never a real external address.

The whole scene runs in a network namespace of the test's own (``unshare --net``), which plays
the host: there IPv4 forwarding may be switched on (the setting is per network namespace, so
the machine's own stays as it is), nbcontainer makes its bridge and NAT rule as it would on a
host, and a second namespace plays the outside world, joined by a veth pair on 192.0.2.0/24
(TEST-NET-1, documentation addresses). A server outside answers with the address it sees: a
container's connection must arrive from the "host"'s address, masqueraded, not from 10.88.x.
Everything dies with the two namespaces' processes; the test checks the machine's links.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None
                                 or shutil.which("iptables") is None,
                                 reason="needs unshare, ip and iptables")]

# Runs as the "host", inside its own network namespace.
SCENE = textwrap.dedent(r'''
    import json, os, subprocess, sys, time

    def sh(*args):
        subprocess.run(args, check=True, capture_output=True, text=True)

    sh("ip", "link", "set", "lo", "up")
    forward = sys.argv[1] == "on"
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this namespace's own setting
        f.write("1" if forward else "0")
    server = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c",
         "import socket, subprocess\n"
         "subprocess.run(['ip', 'link', 'set', 'lo', 'up'])\n"
         "s = socket.create_server(('0.0.0.0', 9000)); s.settimeout(20)\n"
         "print('listening', flush=True)\n"
         "c, peer = s.accept(); c.sendall(('seen-from ' + peer[0] + '\\n').encode()); c.close()\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0",
           "netns", str(server.pid))
        sh("ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
        sh("ip", "link", "set", "up0", "up")
        for cmd in (["ip", "addr", "add", "192.0.2.2/24", "dev", "out0"],
                    ["ip", "link", "set", "out0", "up"]):
            sh("nsenter", "-t", str(server.pid), "-n", *cmd)
        run = subprocess.run(
            [sys.executable, "-m", "nbcontainer", "run", "busybox", "sh", "-c",
             "for i in 1 2 3; do nc -w 2 192.0.2.2 9000 && exit 0; sleep 0.2; done; exit 1"],
            capture_output=True, text=True, timeout=60)
        rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True,
                               text=True).stdout
        print(json.dumps({"stdout": run.stdout, "stderr": run.stderr, "code": run.returncode,
                          "rules": rules}))
    finally:
        server.kill()
        server.wait()
''')


def _scene(forwarding: str, tmp_path: Path) -> dict:
    env = {**os.environ, "NBCONTAINER_NETWORKS": str(tmp_path / "networks")}
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", SCENE, forwarding],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_outbound_traffic_is_masqueraded_behind_the_hosts_address(tmp_path):
    seen = _scene("on", tmp_path)
    assert seen["code"] == 0, seen["stderr"]
    assert seen["stdout"] == "seen-from 192.0.2.1\n"  # the "host"'s address, not 10.88.x
    assert "-A NBCONTAINER-POSTROUTING -s 10.88.0.0/16 ! -o nbc0 -j MASQUERADE" in seen["rules"]
    assert not {"up0", "out0"} & _machine_links()  # it all lived in the scene's namespaces


def test_without_forwarding_a_container_reaches_nothing_outside(tmp_path):
    seen = _scene("off", tmp_path)
    assert seen["code"] != 0 and "seen-from" not in seen["stdout"]


def _in_own_netns(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A shell script in a network namespace of its own, with its own network records."""
    return subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up; " + script],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NBCONTAINER_NETWORKS": str(tmp_path / "networks"),
                               **env})


def test_the_default_subnet_is_configurable_and_an_overlap_is_refused(tmp_path):
    nbc = f"{sys.executable} -m nbcontainer"
    done = _in_own_netns(f"{nbc} run busybox ip -4 -o addr show eth0", tmp_path,
                         NBCONTAINER_BRIDGE_SUBNET="10.77.3.0/24")
    assert "inet 10.77.3.2/24" in done.stdout, done.stderr
    # A host route over the subnet: refused in words, nothing made (no bridge in the scene).
    done = _in_own_netns("ip link add nbct-d0 type veth peer name nbct-d1 && "
                         "ip addr add 10.77.4.1/24 dev nbct-d0 && ip link set nbct-d0 up && "
                         f"{nbc} run busybox true; echo rc=$?; ip -o link", tmp_path / "second",
                         NBCONTAINER_BRIDGE_SUBNET="10.77.4.0/25")
    assert "rc=125" in done.stdout, done.stderr
    assert "overlaps the host's route to 10.77.4.0/24" in done.stderr
    assert "NBCONTAINER_BRIDGE_SUBNET" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nbc0" not in done.stdout
