"""Which cgroup hierarchies this machine has, and where our containers' cgroups go.

Detection reads ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` once (and a handful of small
control files) and caches the answer per root, because every container start needs it and the
machine's cgroup layout does not change under a running supervisor.

The placement rule (see cgroups(7) and the kernel's Documentation/admin-guide/cgroup-v2.rst):
containers go below the supervisor's *own* cgroup, in a shared ``nbcontainer`` directory, so a
container can never use more than the supervisor itself was given. On v1 each hierarchy has its
own path (this host: memory under ``/process_api/<hex>``, the rest at ``/``). On v2 a child only
gets a controller if its parent lists it in ``cgroup.subtree_control``, and a populated cgroup
cannot enable any ("no internal processes"), so we walk up to the nearest ancestor that already
delegates the controllers and put ``nbcontainer`` there: no cgroup between that ancestor and us
has those controllers enabled, so no limit of ours is bypassed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from types import MappingProxyType

from nbcontainer._records import field, record

DEFAULT_ROOT = "/sys/fs/cgroup"
PARENT_NAME = "nbcontainer"

#: v1 controllers a container's cgroup is created in (the others, devices/blkio/net_cls, are
#: not used for limits or stats here).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices")
#: v2 controllers we enable for containers when the parent delegates them.
V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
#: v2 controllers whose absence moves the ``nbcontainer`` directory further up the tree.
V2_CORE = ("cpu", "memory", "pids")

_WHAT_NEEDS = {
    "memory": "--memory, --memory-swap and memory statistics",
    "cpu": "--cpus and --cpu-shares",
    "cpuacct": "CPU time statistics",
    "cpuset": "--cpuset-cpus",
    "pids": "--pids-limit and task counts",
    "freezer": "pause/unpause (kill falls back to repeated SIGKILL)",
    "devices": "the device allowlist (without it a container may open any device node)",
    "io": "I/O statistics",
}


@record(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo that matters to us: a cgroup or cgroup2 mount."""

    mountpoint: str
    root: str  # the hierarchy path that is visible at mountpoint (not "/" under a cgroupns)
    fstype: str
    options: frozenset[str]  # super options: the v1 controllers bound to this hierarchy


def _unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space), see proc(5)."""
    if "\\" not in text:
        return text
    return text.encode().decode("unicode_escape")


def parse_mountinfo(text: str) -> list[Mount]:
    """Return the cgroup and cgroup2 mounts listed in a /proc/self/mountinfo text.

    Parameters
    ----------
    text
        The file's content.

    Returns
    -------
    list of Mount
        In file order, so the first mount of a hierarchy wins.
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        tail = right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                mountpoint=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fstype=tail[0],
                options=frozenset(tail[2].split(",")),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each controller to the process's cgroup path, from a /proc/PID/cgroup text.

    The v2 entry (``0::/path``) is returned under the key ``"unified"``; named v1 hierarchies
    (``name=systemd``) keep their ``name=`` key.

    Parameters
    ----------
    text
        The file's content.

    Returns
    -------
    dict
        Controller (or ``"unified"``) -> path relative to the hierarchy's root.
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            paths["unified"] = path
            continue
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _visible(path: str, mount: Mount) -> str | None:
    """Translate a hierarchy path into a path below the mountpoint, or None if not visible."""
    if mount.root == "/":
        return path
    if path == mount.root:
        return "/"
    if path.startswith(mount.root.rstrip("/") + "/"):
        return path[len(mount.root.rstrip("/")) :]
    return None


def _join(base: str, rel: str) -> str:
    """Join a mountpoint and a cgroup path (``/`` or ``/a/b``) without doubling slashes."""
    rel = rel.strip("/")
    return f"{base}/{rel}" if rel else base


def _child(rel: str, name: str) -> str:
    """The cgroup path ``rel/name`` (``/`` + name at the root)."""
    return rel.rstrip("/") + "/" + name


def _read_words(path: str) -> frozenset[str]:
    """The whitespace-separated words of a small control file (empty set if unreadable)."""
    try:
        with open(path) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


@record(frozen=True)
class Layout:
    """What cgroups this machine offers and where containers' cgroups are created.

    Attributes
    ----------
    root
        The cgroup filesystem root (``/sys/fs/cgroup``).
    version
        ``"v1"``, ``"v2"``, ``"hybrid"`` (v1 controllers plus a controller-less cgroup2, v1 is
        used), or ``"none"`` when no cgroup filesystem is mounted below ``root``.
    controllers
        The controllers a container can use. On v2 ``"freezer"`` means ``cgroup.freeze``.
    problems
        One sentence per missing feature, for ``nbcontainer info`` and error messages.
    parent_path
        The cgroup path (relative to the hierarchy root) that holds container cgroups: on v2
        the single path; on v1 the memory hierarchy's (see ``parents`` for every hierarchy).
    hierarchies
        Controller -> mountpoint. On v2 the single key ``"unified"``.
    parents
        Controller (or ``"unified"``) -> parent cgroup path relative to its mountpoint.
    own
        Controller (or ``"unified"``) -> the supervisor's own cgroup path.
    swap_accounting
        Whether memory+swap can be limited (v1 ``memory.memsw.*``, v2 ``memory.swap.max``).
    has_kill
        v2 only: ``cgroup.kill`` exists (Linux >= 5.14).
    parent_note
        Why this parent was chosen, one sentence.
    """

    root: str
    version: str
    controllers: frozenset[str]
    problems: tuple[str, ...]
    parent_path: str
    hierarchies: Mapping[str, str] = field(default_factory=dict, hash=False)
    parents: Mapping[str, str] = field(default_factory=dict, hash=False)
    own: Mapping[str, str] = field(default_factory=dict, hash=False)
    swap_accounting: bool = False
    has_kill: bool = False
    parent_note: str = ""

    def parent_dirs(self, parent: str | None = None) -> dict[str, str]:
        """Controller (or ``"unified"``) -> absolute directory that holds container cgroups.

        Parameters
        ----------
        parent
            A cgroup path (``/nbcontainer``, ``/a/nbcontainer``) used in every hierarchy
            instead of the detected default.

        Returns
        -------
        dict
            One entry per hierarchy that containers are created in.
        """
        if parent is not None:
            if not parent.startswith("/") or ".." in parent.split("/"):
                from nbcontainer.errors import CgroupError

                raise CgroupError(
                    f"invalid cgroup parent {parent!r}: use an absolute cgroup path without "
                    "'..', e.g. /nbcontainer"
                )
            return {c: _join(m, parent) for c, m in self.hierarchies.items()}
        return {c: _join(m, self.parents[c]) for c, m in self.hierarchies.items()}

    def describe(self) -> str:
        """Several lines for ``nbcontainer info``: version, controllers, placement, problems."""
        lines = [f"cgroup version: {self.version} (root {self.root})"]
        usable = sorted(self.controllers)
        lines.append("controllers: " + (", ".join(usable) if usable else "none"))
        if self.version in ("v1", "hybrid"):
            for controller in sorted(self.hierarchies):
                where = _join(self.hierarchies[controller], self.parents[controller])
                lines.append(f"  {controller}: {where}/<container>")
        elif self.version == "v2":
            lines.append(
                f"containers go to: {_join(self.hierarchies['unified'], self.parent_path)}"
                "/<container>"
            )
        if self.parent_note:
            lines.append(self.parent_note)
        lines.append("memory+swap limit: " + ("yes" if self.swap_accounting else "no"))
        if self.version == "v2":
            lines.append("cgroup.kill: " + ("yes" if self.has_kill else "no (freeze + SIGKILL)"))
        for problem in self.problems:
            lines.append(f"problem: {problem}")
        return "\n".join(lines)


def layout_from(root: str, mountinfo: str, proc_cgroup: str) -> Layout:
    """Build the :class:`Layout` from the two proc files' texts (plus a few control files).

    Split from :func:`detect` so it can be tested on a fake directory tree without root.

    Parameters
    ----------
    root
        The cgroup filesystem root; mounts outside it are ignored.
    mountinfo
        Text of /proc/self/mountinfo.
    proc_cgroup
        Text of /proc/self/cgroup.

    Returns
    -------
    Layout
    """
    root = os.path.normpath(root)
    under = [m for m in parse_mountinfo(mountinfo)
             if m.mountpoint == root or m.mountpoint.startswith(root + "/")]
    own = parse_proc_cgroup(proc_cgroup)
    v1 = [m for m in under if m.fstype == "cgroup" and m.options & set(V1_CONTROLLERS)]
    v2 = [m for m in under if m.fstype == "cgroup2"]
    if v1:
        return _layout_v1(root, v1, own, "hybrid" if v2 else "v1", v2[0] if v2 else None)
    if v2:
        return _layout_v2(root, v2[0], own)
    return Layout(
        root=root,
        version="none",
        controllers=frozenset(),
        problems=(f"no cgroup filesystem is mounted at {root}: resource limits and statistics "
                  "are unavailable",),
        parent_path="/" + PARENT_NAME,
    )


def _layout_v1(root: str, mounts: list[Mount], own_all: dict[str, str], version: str,
               unified: Mount | None) -> Layout:
    """Per-hierarchy placement: own path (from /proc/self/cgroup) + /nbcontainer."""
    hierarchies: dict[str, str] = {}
    parents: dict[str, str] = {}
    own: dict[str, str] = {}
    problems: list[str] = []
    for controller in V1_CONTROLLERS:
        mount = next((m for m in mounts if controller in m.options), None)
        if mount is None:
            continue
        hierarchies[controller] = mount.mountpoint
        mine = own_all.get(controller, "/")
        visible = _visible(mine, mount)
        if visible is None:
            problems.append(
                f"the {controller} hierarchy at {mount.mountpoint} does not show this process's "
                f"cgroup {mine}; containers go to its top"
            )
            visible = "/"
        own[controller] = visible
        parents[controller] = _child(visible, PARENT_NAME)
    for controller in V1_CONTROLLERS:
        if controller not in hierarchies:
            problems.append(f"no {controller} controller: {_WHAT_NEEDS[controller]} unavailable")
    swap = False
    if "memory" in hierarchies:
        swap = os.path.exists(_join(hierarchies["memory"], own["memory"])
                              + "/memory.memsw.limit_in_bytes")
        if not swap:
            problems.append(
                "no swap accounting (memory.memsw.* missing; boot with swapaccount=1): "
                "--memory-swap is not enforced"
            )
    if unified is not None:
        problems.append(
            f"hybrid hierarchy: the v1 controllers are used; the cgroup2 mount at "
            f"{unified.mountpoint} is ignored"
        )
    primary = "memory" if "memory" in parents else next(iter(parents), "")
    return Layout(
        root=root,
        version=version,
        controllers=frozenset(hierarchies),
        problems=tuple(problems),
        parent_path=parents.get(primary, "/" + PARENT_NAME),
        hierarchies=MappingProxyType(hierarchies),
        parents=MappingProxyType(parents),
        own=MappingProxyType(own),
        swap_accounting=swap,
        parent_note=("each v1 hierarchy uses the supervisor's own cgroup + /nbcontainer, so "
                     "containers stay within the supervisor's limits"),
    )


def _layout_v2(root: str, mount: Mount, own_all: dict[str, str]) -> Layout:
    """Single-hierarchy placement: nearest ancestor (or self) delegating the core controllers."""
    base = mount.mountpoint
    problems: list[str] = []
    mine = own_all.get("unified", "/")
    visible = _visible(mine, mount)
    if visible is None:
        problems.append(f"the cgroup2 mount at {base} does not show this process's cgroup "
                        f"{mine}; containers go to its top")
        visible = "/"
    top_delegated = _read_words(base + "/cgroup.subtree_control")
    needed = frozenset(V2_CORE) & top_delegated
    chosen = visible
    while chosen != "/":
        if needed <= _read_words(_join(base, chosen) + "/cgroup.subtree_control"):
            break
        chosen = os.path.dirname(chosen)
    if chosen == "/":
        if visible == "/":
            note = "this process is in the root cgroup, so containers go under /nbcontainer"
        else:
            note = (f"no ancestor of this process's cgroup {visible} delegates "
                    f"{', '.join(sorted(needed)) or 'any controller'}; containers go under "
                    "/nbcontainer")
    elif chosen == visible:
        note = f"containers go under this process's own cgroup {visible}"
    else:
        note = (f"this process's cgroup {visible} does not delegate "
                f"{', '.join(sorted(needed))}; containers go under its nearest ancestor that "
                f"does, {chosen}")
    delegated = _read_words(_join(base, chosen) + "/cgroup.subtree_control")
    controllers = set(delegated & set(V2_CONTROLLERS))
    # cgroup.freeze and cgroup.kill exist in every non-root cgroup (Linux >= 5.2 / 5.14); the
    # root has neither, so look in a non-root cgroup we know exists.
    probe = _join(base, chosen if chosen != "/" else visible)
    if probe == base:
        probe = _any_child(base) or base
    has_freeze = os.path.exists(probe + "/cgroup.freeze") if probe != base else (
        _kernel_at_least(5, 2))
    has_kill = os.path.exists(probe + "/cgroup.kill") if probe != base else (
        _kernel_at_least(5, 14))
    if has_freeze:
        controllers.add("freezer")
    for controller in ("memory", "cpu", "cpuset", "pids", "io"):
        if controller not in controllers:
            problems.append(f"no {controller} controller delegated to {chosen}: "
                            f"{_WHAT_NEEDS[controller]} unavailable")
    if not has_freeze:
        problems.append("no cgroup.freeze (Linux < 5.2): " + _WHAT_NEEDS["freezer"])
    swap = "memory" in controllers and (
        os.path.exists(probe + "/memory.swap.max") if probe != base else True)
    if "memory" in controllers and not swap:
        problems.append("no swap accounting (memory.swap.max missing): --memory-swap is not "
                        "enforced")
    parent_path = _child(chosen, PARENT_NAME)
    return Layout(
        root=root,
        version="v2",
        controllers=frozenset(controllers),
        problems=tuple(problems),
        parent_path=parent_path,
        hierarchies=MappingProxyType({"unified": base}),
        parents=MappingProxyType({"unified": parent_path}),
        own=MappingProxyType({"unified": visible}),
        swap_accounting=swap,
        has_kill=has_kill,
        parent_note=note,
    )


def _any_child(base: str) -> str | None:
    """Some non-root cgroup directory below ``base`` (to probe which files cgroups have)."""
    try:
        with os.scandir(base) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    return entry.path
    except OSError:
        pass
    return None


def _kernel_at_least(major: int, minor: int) -> bool:
    """Compare the running kernel's version (``os.uname().release``) with major.minor."""
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


@functools.lru_cache(maxsize=8)
def detect(root: str = DEFAULT_ROOT) -> Layout:
    """Detect the cgroup layout below ``root`` and where container cgroups go (cached).

    Parameters
    ----------
    root
        The cgroup filesystem root, ``/sys/fs/cgroup`` on every mainstream distribution.

    Returns
    -------
    Layout
        Cached per ``root`` (``detect.cache_clear()`` forgets it), because the layout does
        not change under a running process and every container start asks for it.
    """
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    with open("/proc/self/cgroup") as f:
        proc_cgroup = f.read()
    return layout_from(root, mountinfo, proc_cgroup)
