"""Escape attempts through device nodes: make a node of a device the host's root can open
(a loop device), open it; leave one in a host volume. The device allowlist (v1 devices
controller, v2 eBPF program) stops both; --device and --privileged open it on purpose."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nbcontainer.cgroups.devices import DEFAULT_RULES, DeviceRule, device_program, run_program

NBC = [sys.executable, "-m", "nbcontainer"]
LOOP = "/dev/loop0"


def nbc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBC, *args], capture_output=True, text=True, timeout=60)


def _host_can_open(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        return False
    return True


needs_loop = pytest.mark.skipif(not os.path.exists(LOOP) or os.geteuid() != 0
                                or not _host_can_open(LOOP),
                                reason=f"needs root and a {LOOP} the host can open")


@pytest.mark.root
@needs_loop
def test_a_device_the_host_can_open_cannot_be_made_or_opened_inside() -> None:
    """mknod of the host's loop device fails; its node reached through a volume of the host's
    /dev exists inside but cannot be opened."""
    rdev = os.stat(LOOP).st_rdev
    major, minor = os.major(rdev), os.minor(rdev)
    p = nbc("run", "-v", "/dev:/hostdev", "busybox", "sh", "-c",
            f"mknod /tmp/disk b {major} {minor}; echo mknod=$?; "
            f"test -b /hostdev/{os.path.basename(LOOP)} && echo node-visible; "
            f"( : < /hostdev/{os.path.basename(LOOP)} ) 2>/dev/null; echo open=$?; ls /dev")
    assert p.returncode == 0, p.stderr
    assert "mknod=1" in p.stdout and "node-visible" in p.stdout and "open=1" in p.stdout, \
        p.stdout
    assert "loop0" not in p.stdout.split("open=")[1]  # /dev has only the standard nodes
    assert _host_can_open(LOOP)  # and the host still can


@pytest.mark.root
def test_no_device_node_can_be_left_in_a_host_volume(tmp_path: Path) -> None:
    p = nbc("run", "-v", f"{tmp_path}:/vol", "busybox", "sh", "-c",
            "mknod /vol/sda b 8 0; mknod /vol/mem c 1 1; mknod /vol/null c 1 3; ls /vol")
    assert p.returncode == 0, p.stderr
    made = {e.name: e.stat(follow_symlinks=False).st_mode for e in os.scandir(tmp_path)}
    assert "sda" not in made and "mem" not in made
    # the harmless ones stay allowed, as in Docker
    assert "null" in made and stat.S_ISCHR(made["null"])


@pytest.mark.root
@needs_loop
def test_device_and_privileged_open_it_on_purpose() -> None:
    given = nbc("run", "--device", f"{LOOP}:/dev/xdisk:r", "busybox", "sh", "-c",
                ": < /dev/xdisk && echo read-ok; "
                "( : > /dev/xdisk ) 2>/dev/null || echo write-denied")
    assert given.returncode == 0, given.stderr
    assert given.stdout.split() == ["read-ok", "write-denied"]
    rdev = os.stat(LOOP).st_rdev
    privileged = nbc("run", "--privileged", "busybox", "sh", "-c",
                     f"mknod /tmp/d b {os.major(rdev)} {os.minor(rdev)} && : < /tmp/d && echo ok")
    assert privileged.stdout.strip() == "ok", privileged.stderr


def test_bad_device_options_are_refused_in_words() -> None:
    p = nbc("run", "--device", "/nonexistent", "busybox", "true")
    assert p.returncode == 125 and "cannot use /nonexistent" in p.stderr
    p = nbc("run", "--device", "/etc/hostname", "busybox", "true")
    assert p.returncode == 125 and "is not a device node" in p.stderr
    p = nbc("run", "--device", "/dev/null:/dev/x:q", "busybox", "true")
    assert p.returncode == 125 and "invalid permissions 'q'" in p.stderr


@pytest.mark.parametrize("request_, allowed", [
    (("c", 1, 3, "rw"), 1), (("c", 1, 3, "m"), 1), (("c", 136, 7, "rw"), 1),
    (("c", 5, 2, "rwm"), 1), (("b", 7, 0, "r"), 0), (("b", 7, 0, "m"), 0),
    (("c", 10, 200, "rw"), 0), (("c", 1, 1, "r"), 0), (("c", 4, 1, "w"), 0),
])
def test_the_v2_program_allows_exactly_the_default_rules(request_, allowed) -> None:
    assert run_program(device_program(DEFAULT_RULES), *request_) == allowed


def test_the_v2_program_honours_access_and_wildcards() -> None:
    rules = (DeviceRule("b", 7, -1, "r"), DeviceRule("a", 9, 9, "w"))
    program = device_program(rules)
    assert run_program(program, "b", 7, 3, "r") == 1
    assert run_program(program, "b", 7, 3, "rw") == 0   # w not allowed on 7:*
    assert run_program(program, "c", 7, 3, "r") == 0    # wrong type
    assert run_program(program, "c", 9, 9, "w") == 1 and run_program(program, "b", 9, 9, "w")
    assert run_program(device_program(()), "c", 1, 3, "r") == 0  # empty list: deny all
