"""OOM kills classified per run or exec, from the counters taken when it started: its own
limit, or a parent cgroup's (or the machine's) OOM killer; an earlier kill in a named container
never makes a later exec's failure read as one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nbcontainer import Container, make_spec
from nbcontainer.cgroups import detect

pytestmark = pytest.mark.root
ALLOCATE = [sys.executable, "-c", "b = bytearray(300 << 20)"]


def test_an_earlier_oom_kill_does_not_colour_a_later_exec() -> None:
    c = Container(make_spec([], memory="50m", memory_swap="50m", name=f"oom-{os.getpid()}",
                            init=True),
                  idle=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  keep=False).start()
    try:
        first = c.exec(ALLOCATE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = first.wait()
        first.cleanup()
        second = c.exec(["sh", "-c", "exit 3"])
        plain = second.wait()
        second.cleanup()
    finally:
        c.kill()
        c.cleanup()
    assert killed.oom_killed and killed.oom_cause == "limit" and killed.exit_code == 137
    assert "reached the memory limit of 50 MiB" in killed.describe()
    assert not plain.oom_killed and plain.oom_kills == 0 and plain.exit_code == 3
    assert plain.describe() == "exited with code 3"


def _parent_dirs(name: str) -> dict[str, str]:
    layout = detect()
    return layout.parent_dirs(f"/{name}")


def test_a_kill_by_a_parent_cgroups_oom_killer_says_so() -> None:
    """The container has no limit of its own; a parent cgroup the test makes has 64 MiB."""
    name = f"nbc-oomtest-{os.getpid()}"
    parents = _parent_dirs(name)
    memory_dir = parents.get("memory") or parents.get("unified")
    assert memory_dir is not None
    os.makedirs(memory_dir, exist_ok=True)
    limits = (("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
              if "memory" in parents else ("memory.max", "memory.swap.max"))
    if "unified" in parents:
        with open(os.path.join(os.path.dirname(memory_dir), "cgroup.subtree_control")) as f:
            assert "memory" in f.read()
    try:
        for filename, value in zip(limits, ("64M", "64M" if "memory" in parents else "0"),
                                   strict=True):
            path = os.path.join(memory_dir, filename)
            if os.path.exists(path):
                with open(path, "w") as f:
                    f.write(value)
        c = Container(make_spec(ALLOCATE), cgroup_parent=f"/{name}",
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c.start()
        try:
            result = c.wait(60)
        finally:
            c.cleanup()
    finally:
        for directory in set(parents.values()):
            if os.path.isdir(directory):
                os.rmdir(directory)
    assert result.oom_killed and result.oom_cause == "outside", result
    assert "not at its own memory limit" in result.describe()
    assert "parent cgroup" in result.describe()
