"""Shared fixtures: a private store per session, marker-based skips, and the leak check.

Every test gets the ``no_leaks`` check automatically: after the test, the machine must hold no
more cgroups, host mounts, network namespaces, network links, store containers or child
processes than before it. A container feature that leaks fails its own test, not a later one.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import psutil
import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")

# No test may ever contact a registry on the internet: a name that is not stored would otherwise
# be pulled from Docker Hub. The client refuses any registry not listed here (subprocesses
# inherit it). The tests' own registries listen on 127.0.0.1.
os.environ["NBCONTAINER_REGISTRY_ALLOW"] = "127.0.0.1,localhost"


def capture(command: list[str], container: dict[str, object] | None = None,
            **options: object) -> tuple[int, str, str]:
    """Run a container to its end; (exit code, stdout, stderr). ``options`` are make_spec's,
    ``container`` the Container's keyword arguments (e.g. ``python=``, ``zygote=``). Shared by
    the integration and security tests: ``from conftest import capture``."""
    import subprocess

    from nbcontainer import Container, make_spec

    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    c = Container(make_spec(command, **options), stdout=w_out, stderr=w_err,
                  stdin=subprocess.DEVNULL, **(container or {}))  # type: ignore[arg-type]
    try:
        c.start()
    finally:
        os.close(w_out)
        os.close(w_err)
    try:
        result = c.wait()
    finally:
        c.cleanup()
    with os.fdopen(r_out) as f_out, os.fdopen(r_err) as f_err:
        return result.exit_code, f_out.read(), f_err.read()


def cgroup_version() -> str:
    """``v2`` when /sys/fs/cgroup is a cgroup2 mount, ``v1`` otherwise (v1 or hybrid)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/sys/fs/cgroup":
                return "v2" if " - cgroup2 " in line else "v1"
    return "none"


IS_ROOT = os.geteuid() == 0
CGROUP_VERSION = cgroup_version()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip root / cgroup-version tests with a reason where they cannot run."""
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="needs root (namespaces, mounts, cgroups)"))
        if "cgroup_v1" in item.keywords and CGROUP_VERSION != "v1":
            item.add_marker(pytest.mark.skip(
                reason=f"needs cgroup v1/hybrid; this is {CGROUP_VERSION}"))
        if "cgroup_v2" in item.keywords and CGROUP_VERSION != "v2":
            item.add_marker(pytest.mark.skip(
                reason=f"needs pure cgroup v2 (see ../shared/v2vm); this is {CGROUP_VERSION}"))


@pytest.fixture(scope="session", autouse=True)
def private_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point NBCONTAINER_ROOT at a store of this test session, unless the caller set one."""
    if os.environ.get("NBCONTAINER_TEST_KEEP_ROOT"):
        return Path(os.environ["NBCONTAINER_ROOT"])
    root = tmp_path_factory.mktemp("store")
    os.environ["NBCONTAINER_ROOT"] = str(root)
    return root


def _own_memory_parent() -> Path | None:
    """On cgroup v1, this process's memory cgroup + /nbcontainer, where our containers go."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    return CGROUP_ROOT / "memory" / path.lstrip("/") / "nbcontainer"
    except OSError:
        pass
    return None


def _nbcontainer_cgroups() -> set[str]:
    """Every container cgroup directory of this session, in every hierarchy.

    On a v1 host other sessions' containers share the cpu/pids/freezer parents; only the
    memory parent is per supervisor cgroup, so it says which container ids are ours.
    """
    found: set[str] = set()
    if not CGROUP_ROOT.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
        depth = dirpath.count("/") - str(CGROUP_ROOT).count("/")
        if "nbcontainer" in dirpath and not dirpath.endswith("/nbcontainer"):
            found.add(dirpath)
        if depth >= 6:
            dirnames.clear()
    # A notebook kernel keeps one spare cgroup with a waiting helper in it, ready for its next
    # cell (runtime/spare.py): that is the kernel's, not a leftover; an empty one is.
    found = {p for p in found if not (os.path.basename(p).startswith("spare-")
                                      and _read_procs(p))}
    mine = _own_memory_parent() if CGROUP_VERSION == "v1" else None
    if mine is not None:
        ours = set(os.listdir(mine)) if mine.is_dir() else set()
        found = {p for p in found if os.path.basename(p) in ours}
    return found | _empty_parents(mine)


def _empty_parents(mine: Path | None) -> set[str]:
    """Shared ``nbcontainer`` parent directories with no cgroup in them (``mine``: this
    session's v1 memory parent).

    The last container (or abandoned spare) to leave one removes it; one left empty is a leak.
    """
    empty = set()
    candidates = [str(p) for p in CGROUP_ROOT.glob("*/nbcontainer")] if CGROUP_ROOT.is_dir() \
        else []
    if mine is not None:
        candidates.append(str(mine))
    for path in candidates:
        try:
            if not any(e.is_dir() for e in os.scandir(path)):
                empty.add(path)
        except OSError:
            continue
    return empty


def _read_procs(cgroup_dir: str) -> str:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _host_mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


_VETH = re.compile(r"^nbc([0-9a-f]{12})$")
_SPARE_VETH = re.compile(r"^nbs([0-9a-f]{6})[0-9a-f]{6}$")


def _links() -> set[str]:
    """Network links this session may have made, bridges aside (a network's bridge is kept
    like docker0: nbc0).

    By identity, as the cgroups: a container's veth (``nbc<id>``) counts when the id is one of
    this session's containers (its record, or its lease, in this session's store), a spare's
    (``nbs<supervisor><pid>``) when its supervisor is this process or one of its descendants
    and no longer alive to use it; another session's on the same machine is not ours. Any
    other link counts.
    """
    if not os.path.isdir("/sys/class/net"):
        return set()
    root = os.environ.get("NBCONTAINER_ROOT")
    ours = _containers() | {entry.split()[-1] for entry in _leases()}
    supervisors = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        supervisors |= {p.pid for p in psutil.Process().children(recursive=True)}
    found = set()
    for link in os.listdir("/sys/class/net"):
        if os.path.isdir(f"/sys/class/net/{link}/bridge"):
            continue
        veth, spare = _VETH.match(link), _SPARE_VETH.match(link)
        if veth and not (root and veth.group(1) in ours | _SEEN_IDS):
            continue
        if spare and int(spare.group(1), 16) not in _SESSION_PIDS | supervisors:
            continue
        if spare and int(spare.group(1), 16) in supervisors:
            continue  # a ready spare of a live supervisor: its kernel's next cell's
        found.add(link)
    return found


#: Container ids and process ids seen in this session (a veth can outlive its record).
_SEEN_IDS: set[str] = set()
_SESSION_PIDS: set[int] = set()


def _leases() -> set[str]:
    """Addresses and user-namespace id ranges leased to this session's containers (the
    records are the machine's: other stores' leases are theirs; a spare's lease names no
    store)."""
    from nbcontainer.net import networks

    root = os.environ.get("NBCONTAINER_ROOT")
    try:
        found = networks.list_networks()
    except Exception:  # noqa: BLE001 - an unreadable record is not this check's business
        return set()
    from nbcontainer.runtime import userns

    ranges = {f"userns {start} {cid}" for start, cid in userns.leases(Path(root)).items()} \
        if root else set()
    return ranges | {f"{network['name']} {address} {lease['container']}"
                     for network in found for address, lease in network["leases"].items()
                     if lease.get("root") == root}


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _containers() -> set[str]:
    root = os.environ.get("NBCONTAINER_ROOT")
    if not root or not os.path.isdir(os.path.join(root, "containers")):
        return set()
    return {e for e in os.listdir(os.path.join(root, "containers")) if not e.startswith(".")}


_ZYGOTES: dict[tuple[int, int], psutil.Process] = {}


def _own_zygote() -> tuple[int, float] | None:
    """(pid, start time) of the zygote ``Zygote.running()`` reports for this process, if any.

    The psutil handle is kept from the first sighting (while ``running()`` says it is alive,
    its Popen has not reaped it, so the pid is still the zygote's), and ``is_running()``
    compares the start time: a pid reused later by another process is not the zygote.
    """
    from nbcontainer.runtime.zygote import Zygote

    zygote = Zygote.running()
    if zygote is None:
        return None
    key = (id(zygote), zygote.pid)
    proc = _ZYGOTES.get(key)
    if proc is None:
        try:
            proc = _ZYGOTES[key] = psutil.Process(zygote.pid)
        except psutil.Error:
            return None
    if not proc.is_running():
        return None
    return proc.pid, proc.create_time()


_SPARE_CGROUP = re.compile(r"(?:^|/)spare-(\d+)-\d+$")


def _spare_supervisor(pid: int) -> int | None:
    """The supervisor pid of the spare cgroup ``pid`` is in (``spare-<pid>-<n>``), if any.

    Read from /proc/PID/cgroup: membership, not the command line, says what a process is.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        match = _SPARE_CGROUP.search(line.split(":", 2)[-1])
        if match:
            return int(match.group(1))
    return None


def _children() -> set[tuple[int, float]]:
    """Descendants of this process that are neither its zygote nor part of a ready spare.

    A spare (runtime/spare.py) is a first process waiting in a ``spare-<pid>-<n>`` cgroup of a
    live supervisor (this process or one of its descendants, e.g. a notebook kernel), and the
    helper that forked it and waits for it (its parent). Everything else a test started and
    left running is a leak: helpers, forked payloads, kernels, stray zygotes of dead handles.
    """
    me = psutil.Process()
    try:
        procs = me.children(recursive=True)
    except psutil.Error:
        return set()
    alive = {os.getpid()} | {p.pid for p in procs}
    zygote = _own_zygote()
    spare_procs: set[int] = set()
    for proc in procs:
        supervisor = _spare_supervisor(proc.pid)
        if supervisor is not None and supervisor in alive:
            spare_procs.add(proc.pid)
            with contextlib.suppress(psutil.Error):
                spare_procs.add(proc.ppid())  # the spare's helper, waiting for it
    out = set()
    for child in procs:
        try:
            key = (child.pid, child.create_time())
            if key == zygote or child.pid in spare_procs:
                continue
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add(key)
        except psutil.NoSuchProcess:
            pass
    return out


def snapshot() -> dict[str, set]:
    """What a container could leave behind, as sets that can be compared."""
    _SEEN_IDS.update(_containers())
    with contextlib.suppress(psutil.Error):
        _SESSION_PIDS.update(p.pid for p in psutil.Process().children(recursive=True))
    return {
        "cgroups": _nbcontainer_cgroups(),
        "mounts": _host_mounts(),
        "links": _links(),
        "leases": _leases(),
        "netns": _netns(),
        "containers": _containers(),
        "processes": _children(),
    }


def leaks(before: dict[str, set], wait: float = 3.0) -> dict[str, set]:
    """What is there now and was not before; polls briefly for asynchronous exits."""
    deadline = time.monotonic() + wait
    while True:
        after = snapshot()
        extra = {k: after[k] - before[k] for k in after if after[k] - before[k]}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail the test if it left cgroups, mounts, links, netns, containers or processes."""
    if request.node.get_closest_marker("allow_leftovers"):
        yield
        return
    before = snapshot()
    yield
    extra = leaks(before)
    if extra:
        clear_leftovers(extra)
    assert not extra, f"test left state behind: {extra}"


def clear_leftovers(extra: dict[str, set]) -> None:
    """Remove what a failed test left, so its failure does not spill into the next tests.

    Only what this test process made: its own descendant processes (by pid), then the
    product's own crash recovery (``gc``), which stops and removes containers whose
    supervisor is gone, with their cgroups and directories.
    """
    procs = []
    for pid, created in extra.get("processes", ()):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
                procs.append(proc)
    psutil.wait_procs(procs, timeout=10)
    if extra.get("containers") or extra.get("cgroups") or extra.get("leases"):
        from nbcontainer.runtime import manage

        with contextlib.suppress(Exception):
            manage.gc()
