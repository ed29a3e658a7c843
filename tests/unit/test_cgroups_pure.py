"""cgroups without root: parsing, detection on fake trees, limit -> file mapping, stats records.

Detection and the failure paths of create run against directory trees made in tmp_path, so the
placement rules (v1 per hierarchy, v2 walk-up to the delegating ancestor) are tested without
touching /sys/fs/cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbcontainer.cgroups import cgroup_from_paths, create_cgroup, list_cgroups, open_cgroup, v1, v2
from nbcontainer.cgroups.base import Sampler, check_name, make_child, parse_int, parse_keyed
from nbcontainer.cgroups.layout import (
    layout_from,
    parse_mountinfo,
    parse_proc_cgroup,
)
from nbcontainer.errors import CgroupError, FeatureMissingError, UsageError
from nbcontainer.spec import Limits

MiB = 1 << 20

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/83bac1186b7ee8ebebb04f01a5d09577
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


def _tree(base: Path, files: dict[str, str]) -> None:
    """Create files (and their directories) below base."""
    for rel, content in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _v1_fake(tmp_path: Path, controllers: tuple[str, ...] = ("memory", "cpu", "cpuset"),
             comount: bool = False) -> tuple[str, str, str]:
    """A fake v1 root (directories plus a few files) and matching mountinfo / proc texts."""
    root = tmp_path / "cg"
    lines, proc = [], []
    if comount:
        (root / "cpu,cpuacct").mkdir(parents=True)
        lines.append(f"32 31 0:29 / {root}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct")
        proc.append("2:cpu,cpuacct:/user.slice")
        (root / "cpu,cpuacct" / "user.slice").mkdir()
    for i, c in enumerate(controllers):
        (root / c).mkdir(parents=True)
        lines.append(f"{40 + i} 31 0:{40 + i} / {root}/{c} rw - cgroup cgroup rw,{c}")
        proc.append(f"{10 + i}:{c}:/")
    if "memory" in controllers:
        (root / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    if "cpuset" in controllers:
        _tree(root / "cpuset", {"cpuset.cpus": "0-3\n", "cpuset.mems": "0\n",
                                "cpuset.effective_cpus": "0-3\n"})
    return str(root), "\n".join(lines) + "\n", "\n".join(proc) + "\n"


# -- parsing ---------------------------------------------------------------------------------


def test_parse_mountinfo_hybrid() -> None:
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert [m.mountpoint.rsplit("/", 1)[1] for m in mounts] == [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
        "unified"]
    assert mounts[3].options >= {"memory"} and mounts[3].fstype == "cgroup"
    assert mounts[-1].fstype == "cgroup2"


def test_parse_mountinfo_escapes_and_optional_fields() -> None:
    text = ("50 1 0:40 /sub /mnt/my\\040cg rw shared:5 master:1 - cgroup2 cgroup2 rw\n"
            "51 1 0:41 / /proc rw - proc proc rw\n")
    (mount,) = parse_mountinfo(text)
    assert mount.mountpoint == "/mnt/my cg"
    assert mount.root == "/sub"


def test_parse_proc_cgroup() -> None:
    paths = parse_proc_cgroup(HYBRID_PROC_CGROUP + "3:cpu,cpuacct:/a/b\n")
    assert paths["memory"] == "/process_api/83bac1186b7ee8ebebb04f01a5d09577"
    assert paths["unified"] == "/"
    assert paths["name=systemd"] == "/"
    assert paths["cpu"] == paths["cpuacct"] == "/a/b"


def test_parse_helpers() -> None:
    assert parse_int("max\n") is None
    assert parse_int(None) is None
    assert parse_int("42\n") == 42
    assert parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")["oom_kill"] == 3
    assert parse_keyed(None) == {}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_check_name_refuses_paths(name: str) -> None:
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        check_name(name)


# -- detection ---------------------------------------------------------------------------------


def test_detect_hybrid_places_each_hierarchy_under_own_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "sys/fs/cgroup"
    own_mem = root / "memory/process_api/83bac1186b7ee8ebebb04f01a5d09577"
    own_mem.mkdir(parents=True)
    (own_mem / "memory.memsw.limit_in_bytes").write_text("1\n")
    info = HYBRID_MOUNTINFO.replace("/sys/fs/cgroup", str(root))
    layout = layout_from(str(root), info, HYBRID_PROC_CGROUP)
    assert layout.version == "hybrid"
    assert layout.controllers == {"memory", "cpu", "cpuacct", "cpuset", "pids", "freezer",
                                  "devices"}
    assert layout.parents["memory"] == "/process_api/83bac1186b7ee8ebebb04f01a5d09577/nbcontainer"
    assert layout.parents["cpu"] == "/nbcontainer"
    assert layout.parent_path == layout.parents["memory"]
    assert layout.swap_accounting
    dirs = layout.parent_dirs()
    assert dirs["memory"] == f"{own_mem}/nbcontainer"
    assert dirs["pids"] == f"{root}/pids/nbcontainer"
    assert any("hybrid" in p and "unified" in p for p in layout.problems)
    text = layout.describe()
    assert "hybrid" in text and f"{own_mem}/nbcontainer/<container>" in text


def test_detect_v1_comounted_and_missing(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path, ("memory",), comount=True)
    layout = layout_from(root, info, proc)
    assert layout.version == "v1"
    assert layout.hierarchies["cpu"] == layout.hierarchies["cpuacct"] == f"{root}/cpu,cpuacct"
    assert layout.parents["cpu"] == "/user.slice/nbcontainer"
    assert "pids" not in layout.controllers
    assert any(p.startswith("no pids controller") for p in layout.problems)
    assert any(p.startswith("no freezer controller") for p in layout.problems)


def test_detect_v1_without_swap_accounting(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path, ("memory",))
    os.unlink(f"{root}/memory/memory.memsw.limit_in_bytes")
    layout = layout_from(root, info, proc)
    assert not layout.swap_accounting
    assert any("swap accounting" in p for p in layout.problems)


def test_detect_v1_under_cgroup_namespace_mount_root(tmp_path: Path) -> None:
    """A mount that shows a subtree (mount root /lxc/x) translates /proc/self/cgroup paths."""
    root = tmp_path / "cg"
    (root / "memory" / "inner").mkdir(parents=True)
    info = f"35 31 0:32 /lxc/x {root}/memory rw - cgroup cgroup rw,memory\n"
    layout = layout_from(str(root), info, "4:memory:/lxc/x/inner\n")
    assert layout.parents["memory"] == "/inner/nbcontainer"


def _v2_fake(tmp_path: Path, delegate: dict[str, str]) -> str:
    """A fake v2 tree: each key a cgroup path with its subtree_control; non-root dirs get the
    files a 6.x kernel gives them."""
    root = tmp_path / "cg"
    root.mkdir()
    for rel, subtree in delegate.items():
        d = root / rel.strip("/") if rel != "/" else root
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.subtree_control").write_text(subtree + "\n")
        (d / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
        if rel != "/":
            for name in ("cgroup.freeze", "cgroup.kill", "memory.swap.max"):
                (d / name).write_text("0\n")
    return str(root)


V2_ALL = "cpuset cpu io memory hugetlb pids rdma misc"


def _v2_info(root: str) -> str:
    return f"30 23 0:26 / {root} rw - cgroup2 cgroup2 rw,nsdelegate\n"


def test_detect_v2_in_root_cgroup(tmp_path: Path) -> None:
    root = _v2_fake(tmp_path, {"/": V2_ALL, "/other": ""})
    layout = layout_from(root, _v2_info(root), "0::/\n")
    assert layout.version == "v2"
    assert layout.parent_path == "/nbcontainer"
    assert layout.parent_dirs() == {"unified": f"{root}/nbcontainer"}
    assert layout.controllers == {"memory", "cpu", "cpuset", "pids", "io", "freezer"}
    assert layout.has_kill and layout.swap_accounting
    assert "root cgroup" in layout.parent_note
    assert layout.problems == ()


def test_detect_v2_walks_up_to_delegating_ancestor(tmp_path: Path) -> None:
    """Own cgroup populated (empty subtree_control): use the parent that delegates."""
    root = _v2_fake(tmp_path, {"/": V2_ALL, "/v2vm.slice": "cpuset cpu io memory pids",
                               "/v2vm.slice/job": ""})
    layout = layout_from(root, _v2_info(root), "0::/v2vm.slice/job\n")
    assert layout.parent_path == "/v2vm.slice/nbcontainer"
    assert "/v2vm.slice" in layout.parent_note and "nearest ancestor" in layout.parent_note
    assert "/v2vm.slice/nbcontainer" in layout.describe()


def test_detect_v2_uses_own_cgroup_when_it_delegates(tmp_path: Path) -> None:
    root = _v2_fake(tmp_path, {"/": V2_ALL, "/a": V2_ALL, "/a/b": "cpu memory pids"})
    layout = layout_from(root, _v2_info(root), "0::/a/b\n")
    assert layout.parent_path == "/a/b/nbcontainer"
    assert layout.controllers == {"cpu", "memory", "pids", "freezer"}
    assert any(p.startswith("no cpuset controller") for p in layout.problems)


def test_detect_v2_partial_delegation_goes_higher(tmp_path: Path) -> None:
    """An ancestor delegating memory but not pids is skipped: all core controllers needed."""
    root = _v2_fake(tmp_path, {"/": V2_ALL, "/a": V2_ALL, "/a/b": "memory", "/a/b/c": ""})
    layout = layout_from(root, _v2_info(root), "0::/a/b/c\n")
    assert layout.parent_path == "/a/nbcontainer"


def test_detect_none(tmp_path: Path) -> None:
    layout = layout_from(str(tmp_path), "", "0::/\n")
    assert layout.version == "none"
    assert "no cgroup filesystem" in layout.problems[0]
    with pytest.raises(FeatureMissingError, match="no cgroup filesystem"):
        create_cgroup("abc", Limits(), layout=layout)
    assert list_cgroups(layout=layout) == []


def test_parent_dirs_explicit_and_invalid(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path)
    layout = layout_from(root, info, proc)
    assert layout.parent_dirs("/x/nbcontainer")["memory"] == f"{root}/memory/x/nbcontainer"
    for bad in ("relative", "/a/../b"):
        with pytest.raises(CgroupError, match="invalid cgroup parent"):
            layout.parent_dirs(bad)


# -- limits -> files ---------------------------------------------------------------------------


def test_v1_plan_memory_defaults_to_equal_swap() -> None:
    plan = v1.plan_limits(Limits(memory=100 * MiB), swap_accounting=True)
    assert plan == [("memory", "memory.limit_in_bytes", str(100 * MiB)),
                    ("memory", "memory.memsw.limit_in_bytes", str(200 * MiB))]


def test_v1_plan_swap_variants() -> None:
    explicit = v1.plan_limits(Limits(memory=100 * MiB, memory_swap=150 * MiB), True)
    assert explicit[1] == ("memory", "memory.memsw.limit_in_bytes", str(150 * MiB))
    unlimited = v1.plan_limits(Limits(memory=100 * MiB, memory_swap=-1), True)
    assert unlimited[1] == ("memory", "memory.memsw.limit_in_bytes", "-1")
    no_accounting = v1.plan_limits(Limits(memory=100 * MiB, memory_swap=150 * MiB), False)
    assert no_accounting == [("memory", "memory.limit_in_bytes", str(100 * MiB))]


def test_v1_plan_cpu_cpuset_pids() -> None:
    plan = v1.plan_limits(Limits(cpus=0.29, cpu_shares=512, cpuset_cpus="0-1", pids_limit=7),
                          True)
    assert plan == [("cpu", "cpu.cfs_period_us", "100000"),
                    ("cpu", "cpu.cfs_quota_us", "29000"),
                    ("cpu", "cpu.shares", "512"),
                    ("cpuset", "cpuset.cpus", "0-1"),
                    ("pids", "pids.max", "7")]


def test_v2_plan() -> None:
    assert v2.plan_limits(Limits(memory=100 * MiB), True) == [
        ("memory.max", str(100 * MiB)), ("memory.swap.max", str(100 * MiB))]
    assert v2.plan_limits(Limits(memory=100 * MiB, memory_swap=150 * MiB), True)[1] == (
        "memory.swap.max", str(50 * MiB))
    assert v2.plan_limits(Limits(memory=100 * MiB, memory_swap=100 * MiB), True)[1] == (
        "memory.swap.max", "0")
    assert v2.plan_limits(Limits(memory=100 * MiB, memory_swap=-1), True)[1] == (
        "memory.swap.max", "max")
    assert v2.plan_limits(Limits(memory=100 * MiB, memory_swap=-1), False) == [
        ("memory.max", str(100 * MiB))]
    assert v2.plan_limits(Limits(cpus=1.5, cpu_shares=1024, cpuset_cpus="0", pids_limit=3),
                          True) == [("cpu.max", "150000 100000"), ("cpu.weight", "39"),
                                    ("cpuset.cpus", "0"), ("pids.max", "3")]


@pytest.mark.parametrize("shares, weight", [(2, 1), (262144, 10000), (1024, 39), (512, 20)])
def test_cpu_weight_matches_runc(shares: int, weight: int) -> None:
    assert v2.cpu_weight(shares) == weight


# -- stats -------------------------------------------------------------------------------------


def test_v1_parse_stats_unlimited_and_oom() -> None:
    stats = v1.parse_stats({
        "memory_current": "1048576\n", "memory_peak": "52428800\n",
        "memory_limit": "9223372036854771712\n",
        "oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "cpu_usage": "123456789\n", "pids_current": "3\n", "pids_limit": "max\n"})
    assert stats.memory_limit is None and stats.pids_limit is None
    assert stats.oom_kills == 2 and stats.memory_peak == 50 * MiB
    assert stats.cpu_usage_ns == 123456789 and stats.pids_peak is None


def test_v1_parse_stats_missing_controllers() -> None:
    stats = v1.parse_stats({})
    assert stats.memory_current is None and stats.oom_kills == 0 and stats.pids_current is None


def test_v2_parse_stats() -> None:
    stats = v2.parse_stats({
        "memory_current": "4096\n", "memory_peak": None, "memory_limit": "52428800\n",
        "memory_events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        "cpu_stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        "pids_current": "2\n", "pids_peak": "9\n", "pids_limit": "max\n"})
    assert stats.memory_limit == 50 * MiB and stats.memory_peak is None
    assert stats.oom_kills == 1 and stats.cpu_usage_ns == 1_500_000
    assert stats.pids_peak == 9 and stats.pids_limit is None


def test_sampler_rereads_kept_fds(tmp_path: Path) -> None:
    f = tmp_path / "memory.current"
    f.write_text("10\n")
    sampler = Sampler({"memory_current": str(f), "memory_peak": str(tmp_path / "absent")},
                      v2.parse_stats)
    with sampler:
        assert sampler.read().memory_current == 10
        f.write_text("20\n")  # same inode: pread at 0 sees the new content
        assert sampler.read().memory_current == 20
        assert sampler.read().memory_peak is None
    sampler.close()


# -- create: refusals and failure cleanup on fake trees ---------------------------------------


def test_missing_controller_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path, ("memory",))
    layout = layout_from(root, info, proc)
    before = sorted(p for p, _, _ in os.walk(root))
    with pytest.raises(FeatureMissingError, match="--pids-limit needs the pids cgroup controller"):
        create_cgroup("abc", Limits(memory=64 * MiB, pids_limit=5), layout=layout)
    assert sorted(p for p, _, _ in os.walk(root)) == before


def test_memory_swap_without_swap_accounting_is_refused(tmp_path: Path) -> None:
    """Not silently unenforced: a --memory-swap the kernel cannot limit is a missing feature."""
    from nbcontainer._records import replace

    root, info, proc = _v1_fake(tmp_path, ("memory",))
    layout = replace(layout_from(root, info, proc), swap_accounting=False)
    before = sorted(p for p, _, _ in os.walk(root))
    with pytest.raises(FeatureMissingError, match="--memory-swap needs swap accounting"):
        create_cgroup("abc", Limits(memory=64 * MiB, memory_swap=128 * MiB), layout=layout)
    assert sorted(p for p, _, _ in os.walk(root)) == before


def test_unavailable_cpus_are_a_usage_error(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path)
    layout = layout_from(root, info, proc)
    with pytest.raises(UsageError, match=r"CPU 4,7 is not available here; use CPUs from 0-3"):
        create_cgroup("abc", Limits(cpuset_cpus="0,4,7"), layout=layout)
    assert not os.path.exists(f"{root}/cpuset/nbcontainer")


def test_failed_write_removes_what_was_created(tmp_path: Path) -> None:
    """On a plain directory tree the limit file does not exist: the error names path and
    errno text, and the container and the shared parent directories are gone again."""
    root, info, proc = _v1_fake(tmp_path, ("memory",))
    layout = layout_from(root, info, proc)
    with pytest.raises(CgroupError) as caught:
        create_cgroup("abc", Limits(memory=100 * MiB), layout=layout)
    path = f"{root}/memory/nbcontainer/abc/memory.limit_in_bytes"
    assert str(caught.value) == f"cannot write {100 * MiB} to {path}: No such file or directory"
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert not os.path.exists(f"{root}/memory/nbcontainer")


def test_v2_failed_enable_removes_child(tmp_path: Path) -> None:
    root = _v2_fake(tmp_path, {"/": V2_ALL})
    layout = layout_from(root, _v2_info(root), "0::/\n")
    expected = (r"cannot write \+cpu \+cpuset \+io \+memory \+pids to "
                r".*/nbcontainer/cgroup.subtree_control: No such file or directory")
    with pytest.raises(CgroupError, match=expected):
        create_cgroup("abc", Limits(), layout=layout)
    assert not os.path.exists(f"{root}/nbcontainer")


def test_open_missing_cgroup(tmp_path: Path) -> None:
    root, info, proc = _v1_fake(tmp_path)
    layout = layout_from(root, info, proc)
    with pytest.raises(CgroupError, match="cannot open cgroup abc: no such cgroup"):
        open_cgroup("abc", layout=layout)
    os.makedirs(f"{root}/memory/nbcontainer/abc")
    cg = open_cgroup("abc", layout=layout)
    assert cg.paths == {"memory": f"{root}/memory/nbcontainer/abc"}
    assert list_cgroups(layout=layout) == ["abc"]
    os.rmdir(f"{root}/memory/nbcontainer/abc")


def test_make_child_creates_the_parent_and_refuses_an_existing_child(tmp_path: Path) -> None:
    calls: list[str] = []
    parent = str(tmp_path / "nbcontainer")
    assert make_child(parent, "abc", calls.append) == f"{parent}/abc"
    assert calls == [parent]
    assert make_child(parent, "def", calls.append) == f"{parent}/def"
    assert calls == [parent], "an existing parent is not initialised again"
    with pytest.raises(CgroupError, match=r"cannot create cgroup .*/abc: File exists"):
        make_child(parent, "abc")
    with pytest.raises(CgroupError, match=r"cannot create cgroup .*: No such file or directory"):
        make_child(str(tmp_path / "missing" / "nbcontainer"), "abc")
    assert not (tmp_path / "missing").exists()


def test_cgroup_from_paths_picks_the_version_and_checks_names() -> None:
    assert type(cgroup_from_paths("abc", {"unified": "/cg/nbcontainer/abc"})) is v2.V2Cgroup
    v1cg = cgroup_from_paths("abc", {"memory": "/cg/memory/nbcontainer/abc"})
    assert type(v1cg) is v1.V1Cgroup and v1cg.dirs == ["/cg/memory/nbcontainer/abc"]
    for bad in ({}, {"memory": "/cg/memory/nbcontainer/other"}):
        with pytest.raises(CgroupError, match="invalid saved cgroup paths"):
            cgroup_from_paths("abc", bad)
