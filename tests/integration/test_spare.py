"""Spares (runtime/spare.py): a cgroup and a waiting first process made ahead of time.

What must hold, on the real kernel: a container that adopts a spare has its limits and its
namespaces, only its own process is ever in its cgroup, a container that wants other
namespaces takes the normal path and the next spare follows it, nothing is left after
shutdown, and a supervisor killed with SIGKILL leaves no spare cgroup or process behind.
On cgroup v1 the helper enters the spare's cgroup, forks and leaves; on v2 the first process is
cloned into it (clone3 with CLONE_INTO_CGROUP) and the cgroup keeps its name when adopted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbcontainer import Container, make_spec
from nbcontainer.cgroups import Cgroup
from nbcontainer.paths import store_root
from nbcontainer.runtime.manage import gc
from nbcontainer.runtime.spare import SPARE_PREFIX, spares
from nbcontainer.runtime.state import SPARE_DIR_PREFIX
from nbcontainer.runtime.zygote import Zygote

pytestmark = [pytest.mark.root]


def _limit(cgroup: Cgroup, v1: tuple[str, str], v2: str) -> str:
    """A limit file's content: ``v1`` = (hierarchy, file), ``v2`` = the unified file."""
    path = (f"{cgroup.paths['unified']}/{v2}" if "unified" in cgroup.paths
            else f"{cgroup.paths[v1[0]]}/{v1[1]}")
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    z = Zygote.get()
    spares(z).enable()
    yield z
    spares(z).close()
    Zygote.shutdown()


def _ready(z: Zygote, timeout: float = 60.0) -> None:
    """Wait for the spare (a bound for a hang: making the first one, root included, takes
    seconds in the emulated v2 VM)."""
    deadline = time.monotonic() + timeout
    while spares(z)._spare is None and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert spares(z)._spare is not None, "no spare was made"  # noqa: SLF001


def _spare_dirs(supervisor: int | None = None) -> list[str]:
    """The spare cgroups of this process (or of ``supervisor``): other processes on the
    machine may keep their own."""
    mine = f"{SPARE_PREFIX}{supervisor or os.getpid()}-"
    found = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(dirpath, d) for d in dirnames if d.startswith(mine)]
        if dirpath.count("/") > 8:
            dirnames.clear()
    return found


def _run(spec_kwargs: dict[str, str], code: str) -> tuple[Container, str]:
    r, w = os.pipe()
    c = Container(make_spec([], **spec_kwargs), python=code, zygote=True, stdout=w,
                  stdin=subprocess.DEVNULL)
    try:
        c.start()
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    c.wait(30)
    return c, out


def test_adopted_spare_has_the_limits_and_only_the_container(zygote: Zygote) -> None:
    _ready(zygote)
    code = ("import os, time\n"
            "print(open('/proc/self/cgroup').read().count('spare-'), flush=True)\n"
            "time.sleep(0.3)\n")
    r, w = os.pipe()
    c = Container(make_spec([], memory="64m", pids_limit="7"), python=code, zygote=True,
                  stdout=w, stdin=subprocess.DEVNULL)
    try:
        c.start()
        os.close(w)
        assert c._spare is not None, "the container did not adopt the spare"  # noqa: SLF001
        assert c.cgroup is not None and c.state is not None
        if "unified" in c.cgroup.paths:
            # v2 cannot rename a cgroup: the record names the spare's, and it was only ever
            # the first process's (cloned into it; the helper never entered).
            assert c.cgroup.name.startswith(SPARE_PREFIX) and c.state.cgroup == c.cgroup.name
            assert c.state.cgroup_paths == c.cgroup.paths
            assert c.cgroup.procs() == [c.pid]
        else:
            assert all(os.path.basename(p) == c.state.id for p in c.cgroup.paths.values())
        assert int(_limit(c.cgroup, ("memory", "memory.limit_in_bytes"), "memory.max")) \
            == 64 << 20
        assert _limit(c.cgroup, ("pids", "pids.max"), "pids.max") == "7"
        # The helper moves itself out of the container's cgroup right after the fork (v1).
        deadline = time.monotonic() + 5
        while c.cgroup.procs() != [c.pid] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.cgroup.procs() == [c.pid]
        # The helper went back to where it came from (this process's cgroups), not into the
        # shared parent, which must stay removable.
        assert c._helper is not None  # noqa: SLF001
        with open(f"/proc/{c._helper.pid}/cgroup") as f:  # noqa: SLF001
            helper_cgroups = f.read()
        with open("/proc/self/cgroup") as f:
            assert helper_cgroups == f.read()
        with os.fdopen(r) as f:
            assert f.read().strip() == "0", "the payload saw a spare- cgroup name"
        assert c.wait(30).exit_code == 0
    finally:
        c.cleanup()
    # The next spare is made in the background for the next container.
    _ready(zygote)


def test_memory_limit_of_an_adopted_spare_oom_kills(zygote: Zygote) -> None:
    _ready(zygote)
    c, _ = _run({"memory": "48m", "memory_swap": "48m"}, "x = bytearray(200 << 20)")
    try:
        assert c._spare is not None  # noqa: SLF001
        result = c.wait()
        assert result.oom_killed and result.exit_code == 137
    finally:
        c.cleanup()


def test_other_namespaces_take_the_normal_path_and_the_next_spare_follows(
        zygote: Zygote) -> None:
    _ready(zygote)
    code = "import os; print(os.getpid(), flush=True)"
    c, out = _run({"ns": "uts,pid"}, code)
    wanted = c.spec.effective_namespaces()
    try:
        assert c._spare is None  # noqa: SLF001
        assert out.strip() == "1", "the payload is PID 1 of its own PID namespace"
    finally:
        c.cleanup()
    assert "net" not in wanted
    _ready(zygote)
    assert spares(zygote)._spare.namespaces == wanted  # noqa: SLF001
    c, out = _run({"ns": "uts,pid"}, code)
    try:
        assert c._spare is not None and out.strip() == "1"  # noqa: SLF001
    finally:
        c.cleanup()


@pytest.mark.cgroup_v1
def test_limits_needing_another_hierarchy_take_the_normal_path(zygote: Zygote) -> None:
    _ready(zygote)
    c, out = _run({"cpus": "0.5"}, "print('ok')")
    try:
        assert c._spare is None  # noqa: SLF001 - cpu is not among the spare's hierarchies
        assert out.strip() == "ok"
    finally:
        c.cleanup()
    assert spares(zygote)._spare is not None  # noqa: SLF001 - the spare is still there


@pytest.mark.cgroup_v2
def test_v2_spare_takes_a_cpu_limit(zygote: Zygote) -> None:
    """v2 has every controller in one directory: --cpus adopts the spare, writing cpu.max."""
    _ready(zygote)
    c, out = _run({"cpus": "0.5"}, "print('ok')")
    try:
        assert c._spare is not None and out.strip() == "ok"  # noqa: SLF001
        assert c.cgroup is not None
        assert _limit(c.cgroup, ("cpu", "cpu.cfs_quota_us"), "cpu.max") == "50000 100000"
    finally:
        c.cleanup()


@pytest.mark.cgroup_v2
def test_v2_spare_is_not_taken_with_other_devices(zygote: Zygote) -> None:
    """v2's device allowlist is an eBPF program that a second one cannot widen: a container
    with --device takes the normal path, and its device works."""
    _ready(zygote)
    c, out = _run({"devices": ["/dev/zero:/dev/zeroes"]},
                  "print(len(open('/dev/zeroes', 'rb').read(3)))")
    try:
        assert c._spare is None and out.strip() == "3"  # noqa: SLF001
    finally:
        c.cleanup()
    assert spares(zygote)._spare is not None  # noqa: SLF001 - kept for the next cell


def test_close_removes_the_spare(zygote: Zygote) -> None:
    _ready(zygote)
    assert _spare_dirs()
    assert _spare_roots(), "a default container's spare builds the host image's root ahead"
    spares(zygote).close()
    assert _spare_dirs() == []
    assert _spare_roots() == []


def _spare_roots() -> list[str]:
    """This session's spare directories (roots built ahead) in the store."""
    base = store_root() / "containers"
    return sorted(e for e in os.listdir(base) if e.startswith(SPARE_DIR_PREFIX)) \
        if base.is_dir() else []


def test_a_root_built_ahead_is_the_containers_own(zygote: Zygote, tmp_path: Path) -> None:
    """The adopted spare's root: its directory becomes the container's, its hostname,
    volumes and /proc are the container's, the host's secrets stay hidden (also under
    a volume mounted above one of them: /etc here), /proc's masks hold."""
    _ready(zygote)
    roots = _spare_roots()
    assert len(roots) == 1
    (tmp_path / "data").write_text("from the host")
    code = ("import os\n"
            "print(os.uname().nodename)\n"
            "print(open('/srv/data').read())\n"
            "print(repr(open('/etc/shadow').read()))\n"
            "print(os.getpid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
            "try:\n"
            "    open('/proc/sys/kernel/hostname', 'w').write('x')\n"
            "except OSError as err:\n"
            "    print('read-only', err.errno)\n")
    c, out = _run({"volumes": [f"{tmp_path}:/srv", "/etc:/etc:ro"]}, code)
    try:
        assert c._spare is not None and c._spare.root is not None  # noqa: SLF001
        assert c.state is not None
        assert roots[0] == SPARE_DIR_PREFIX + c.state.id, "the spare's directory is the container's"
        assert (c.dir / "state.json").exists() and not (c.dir / "spare.json").exists()
        lines = out.splitlines()
        assert lines[0] == c.state.id and lines[1] == "from the host"
        assert lines[2] == "''", "/etc/shadow under the /etc volume must stay hidden"
        assert lines[3] == "1 ['1']"
        assert lines[4].startswith("read-only")
        assert c.wait(30).exit_code == 0
    finally:
        c.cleanup()
    _ready(zygote)  # the next one, in a directory of its own
    assert len(_spare_roots()) == 1 and _spare_roots() != roots


def test_a_volume_over_what_the_root_has_mounted_takes_the_normal_path(
        zygote: Zygote, tmp_path: Path) -> None:
    _ready(zygote)
    c, out = _run({"volumes": [f"{tmp_path}:/dev/extra"]}, "print('ok')")
    try:
        assert c._spare is None  # noqa: SLF001 - its mount point would be in the spare's /dev
        assert out.strip() == "ok"
    finally:
        c.cleanup()
    assert spares(zygote)._spare is not None  # noqa: SLF001 - kept for the next cell


def test_gc_keeps_a_live_spares_directory_and_removes_a_dead_ones(zygote: Zygote) -> None:
    _ready(zygote)
    live = _spare_roots()
    dead = store_root() / "containers" / f"{SPARE_DIR_PREFIX}0123456789ab"
    (dead / "upper").mkdir(parents=True)
    (dead / "spare.json").write_text('{"supervisor_pid": 999999999, "supervisor_start": 1}')
    unmarked = store_root() / "containers" / f"{SPARE_DIR_PREFIX}ba9876543210"
    (unmarked / "work").mkdir(parents=True)
    old = time.time() - 120  # a crash between its mkdir and its marker, two minutes ago
    os.utime(unmarked, (old, old))
    actions = gc()
    assert any(dead.name in a for a in actions), actions
    assert not dead.exists()
    assert not unmarked.exists(), "an old spare directory without its marker stays"
    assert _spare_roots() == live


def test_a_killed_supervisor_leaves_no_spare_cgroup() -> None:
    code = ("import sys, time\n"
            "from nbcontainer.runtime.spare import spares\n"
            "from nbcontainer.runtime.zygote import Zygote\n"
            "z = Zygote.get(); spares(z).enable()\n"
            "while spares(z)._spare is None: time.sleep(0.01)\n"
            "s = spares(z)._spare\n"
            "print(s.cgroup.name, s.helper.pid, s.pid, flush=True)\n"
            "time.sleep(100)\n")
    sup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert sup.stdout is not None
    name, helper, first = sup.stdout.readline().split()
    spare_dirs = [d for d in _spare_dirs(sup.pid) if d.endswith("/" + name)]
    assert spare_dirs
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    sup.stdout.close()
    deadline = time.monotonic() + 10
    while (_spare_dirs(sup.pid) or os.path.exists(f"/proc/{helper}")
           or os.path.exists(f"/proc/{first}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _spare_dirs(sup.pid) == [], "the spare's first process did not remove its cgroup"
    assert _spare_roots() == [], "the spare's first process did not remove its directory"
    assert not os.path.exists(f"/proc/{helper}") and not os.path.exists(f"/proc/{first}")
    for parent in {os.path.dirname(d) for d in spare_dirs}:
        others = [e for e in os.scandir(parent) if e.is_dir()] if os.path.isdir(parent) else []
        assert others or not os.path.isdir(parent), f"the empty parent {parent} was left"
