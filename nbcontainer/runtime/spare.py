"""A container's first process forked inside a fresh cgroup ahead of time.

Why: a container's start forks, unshares its namespaces and builds its root, and notebook cells
come one at a time with pauses between them: all of that can be done in the pause. (Spares
were first made for the v1 cgroup attach, whose first ``cgroup.procs`` write after a quiet
spell waits for an RCU grace period; a first process now moves itself in through ``tasks``
without that wait, :func:`nbcontainer.child.helper.enter_cgroup`.)

A *spare* is made while the kernel is idle: the zygote forks a helper, which forks the
container's first process; that moves itself into a new cgroup (v1: ``0`` into each
``tasks`` file; v2: it is cloned into it), unshares the namespaces the next container is
expected to want, says ``Left`` (only it is in the cgroup) and waits.
The next container adopts the spare if its namespaces match and its limits need no other
hierarchy: the cgroup is renamed to the container's id and given its limits, the first process
receives the container's stdio over the control socket, then its config, and goes on as usual.
That takes a fork and the namespace creation off the cell's path.

On cgroup v2 the first process is cloned straight into the spare's cgroup (clone3 with
``CLONE_INTO_CGROUP``; the helper never enters it, so it has nothing to leave; where the
kernel refuses, the supervisor attaches the first process, still off the cell's path). v2
cannot rename a cgroup (the kernel offers rename on v1 hierarchies only), so an adopted
spare keeps its ``spare-PID-N`` name, which the container's record saves with its path;
adoption writes the cell's limits (``memory.max``, ``pids.max``, ``cpu.max``...). The spare
is taken only with the default device allowlist there: v2's allowlist is an eBPF program,
and a second, wider one cannot widen what the first denies.

On a network (``--net bridge``, the default) the spare also leases an address, plugs its
veth pair into the first process's network namespace and configures it ahead of time
(:func:`nbcontainer.net.networks.attach_spare`); adopting it hands the lease to the container.

For a container on the host image (a notebook cell's default; not privileged, no user
namespace, no devices) the first process also builds the root ahead
(:func:`nbcontainer.child.rootfs.prepare`): the overlay over ``/``, the hidden credentials,
/proc, /sys, /dev and runc's masks, about 2.5 ms of a cell's start. It lives in a store
directory ``containers/.spare-ID`` (with a marker naming the supervisor, so ``gc`` keeps it
while that lives and removes it after): the container that adopts it takes ID as its id and
renames the directory (its overlay, mounted in the spare's own mount namespace, follows the
rename); only its volumes, the hidden paths that appeared since or that a volume covered,
and pivot_root are left (:func:`nbcontainer.child.rootfs.finish`). A volume at or below what
the root has mounted already (a hidden path, /proc, /sys, /dev) takes the normal path.

A spare's cgroup is named ``spare-PID-N`` (PID: the supervisor) until it is adopted. It holds a
live process, so ``gc`` leaves it alone; when the supervisor dies (even by SIGKILL) the waiting
first process sees its control socket close, moves out, and removes the cgroup (and the shared
``nbcontainer`` parent if that leaves it empty).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nbcontainer import cgroups
from nbcontainer.cgroups import Cgroup
from nbcontainer.child.rootfs import PREPARED_MOUNTS
from nbcontainer.errors import ContainerError
from nbcontainer.net import networks
from nbcontainer.protocol import Channel, Error, Left, Pid, Prefork, Prepared, ProtocolError
from nbcontainer.runtime import hidden, lifecycle
from nbcontainer.runtime import state as state_mod
from nbcontainer.spec import Limits

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from nbcontainer.runtime.zygote import ForkedHelper, Zygote

SPARE_PREFIX = "spare-"
SETUP_TIMEOUT = 10.0
_counter = itertools.count(1)


@dataclass(frozen=True)
class RootWish:
    """A container that could take a spare whose root is built ahead: the host image's root
    in store ``store``, with volumes at ``targets`` (container paths)."""

    store: Path
    targets: tuple[str, ...] = ()


@dataclass
class PreparedRoot:
    """A spare's root built ahead (child/rootfs.prepare) in ``directory`` of ``store``."""

    store: Path
    directory: Path
    hidden: list[str]


    def fits(self, wish: RootWish | None) -> bool:
        """Whether a container with this wish can use it: same store, and no volume at or
        below what it has mounted already (a hidden path, /proc, /sys, /dev)."""
        if wish is None or wish.store != self.store:
            return False
        covered = [p.rstrip("/") for p in (*self.hidden, *PREPARED_MOUNTS)]
        return not any(t.rstrip("/") == c or t.startswith(c + "/")
                       for t in wish.targets for c in covered)


@dataclass
class Spare:
    """A first process waiting, in new namespaces, inside a cgroup of its own."""

    helper: ForkedHelper
    channel: Channel
    cgroup: Cgroup
    pid: int  # the waiting first process
    namespaces: frozenset[str]
    #: The network its first process is plugged into (networks.attach_spare), or None.
    attachment: dict | None = None
    #: Its root built ahead (the host image's): the container directory it lives in, whose
    #: name is the id of the container that adopts it, and the paths it hides.
    root: PreparedRoot | None = None

    @property
    def network(self) -> str | None:
        return None if self.attachment is None else self.attachment["network"]

    def discard(self, keep_directory: bool = False) -> None:
        """Kill its processes, remove the cgroup, release the address, remove its directory
        unless a container took it (the spare was not, or cannot be, used)."""
        _discard(self.channel, self.helper, self.cgroup, self.attachment,
                 None if self.root is None or keep_directory else self.root.directory)

    def adopt(self, name: str, limits: Limits,
              devices: Sequence[cgroups.DeviceRule] = cgroups.DEFAULT_RULES) -> Cgroup:
        """Rename the cgroup to the container's id (v1; v2 keeps its name), apply its limits
        and device allowlist; return it. On failure the caller discards the spare, whatever its
        cgroup is named by then. (The spare's own cgroup already denies every device but the
        default ones.)"""
        v2 = "unified" in self.cgroup.paths
        if v2 and tuple(devices) != cgroups.DEFAULT_RULES:
            raise ContainerError("a spare's cgroup v2 device program cannot be widened")
        if not v2:
            self.cgroup = self.cgroup.rename(name)
        cgroups.apply_limits(self.cgroup, limits)
        if tuple(devices) != cgroups.DEFAULT_RULES:
            cgroups.apply_devices(self.cgroup, devices)
        return self.cgroup


_pools: weakref.WeakKeyDictionary[Zygote, SparePool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def spares(zygote: Zygote) -> SparePool:
    """The spare pool of ``zygote`` (made on first use; closed when the zygote closes)."""
    with _pools_lock:
        pool = _pools.get(zygote)
        if pool is None:
            pool = _pools[zygote] = SparePool(zygote)
            zygote.on_close.append(pool.close)
        return pool


class SparePool:
    """At most one spare per zygote, made in a background thread after each use."""

    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote
        self._lock = threading.Lock()
        self._spare: Spare | None = None
        self._making: threading.Thread | None = None
        self._enabled = False
        #: What the next spare gets: the namespaces, network and store (for a root built
        #: ahead: RootWish) the last container wanted.
        self._want: tuple[frozenset[str], str | None, Path | None] | None = None
        #: False once building a root ahead failed here: spares without one from then on.
        self._prebuild = True

    def enable(self) -> None:
        """Keep a spare ready from now on (as root, on any cgroup version)."""
        if self._enabled or os.geteuid() != 0:
            return
        if cgroups.detect().version not in ("v1", "hybrid", "v2"):
            return
        if self._want is None:
            from nbcontainer.paths import store_root
            from nbcontainer.spec import make_spec

            # A default container: the host image, its root built ahead in the default store.
            default = make_spec([])
            self._want = (default.effective_namespaces(), default.network, store_root())
        self._enabled = True
        self.refill()

    def refill(self) -> None:
        """Start making a spare in the background unless one is ready or being made."""
        with self._lock:
            if not self._enabled or self._spare is not None \
                    or (self._making is not None and self._making.is_alive()):
                return
            self._making = threading.Thread(target=self._make, name="nbcontainer-spare",
                                            daemon=True)
            self._making.start()

    def take(self, limits: Limits, namespaces: frozenset[str],
             network: str | None = None, root: RootWish | None = None,
             default_devices: bool = True) -> Spare | None:
        """The ready spare if it has these namespaces, this network, the hierarchies
        ``limits`` need (and, on v2, if the container wants the default device allowlist)
        and, for a container that can use one (``root``), a root built ahead that fits it.
        Whoever takes it calls :meth:`refill` once its container has ended.

        Never waits. A container that wants other namespaces, another network or another kind
        of root makes the next spare follow it (a notebook's cells tend to use the same
        options).
        """
        store = root.store if root is not None and self._prebuild else None
        want = (namespaces, network, store)
        with self._lock:
            spare = self._spare
            if spare is None:
                self._want = want
                return None
            if (spare.namespaces, spare.network,
                    None if spare.root is None else spare.root.store) != want:
                self._want = want
                self._spare = None
                stale: Spare | None = spare
                spare = None
            elif "unified" in spare.cgroup.paths and not default_devices:
                return None  # v2: the spare's device program cannot be widened
            elif "unified" not in spare.cgroup.paths \
                    and not cgroups.v1_controllers_for(limits) <= set(spare.cgroup.paths):
                return None  # v1: a hierarchy the spare's cgroup is not in (v2 has them all)
            elif spare.root is not None and not spare.root.fits(root):
                return None  # a volume over what its root has mounted already
            else:
                self._spare = None
                stale = None
        if stale is not None:
            # Not on this container's path: killing and removing a cgroup takes a while.
            threading.Thread(target=stale.discard, name="nbcontainer-spare-discard",
                             daemon=True).start()
        elif spare is not None and spare.helper.poll() is not None:
            spare.discard()
            spare = None
        if spare is None:
            self.refill()
        # else: the container that takes it calls refill() when it has ended, so that making
        # the next spare (a cgroup attach, a veth pair: both under kernel-wide locks) does not
        # compete with the cell that runs now.
        return spare

    def close(self) -> None:
        """Stop making spares and discard the one ready (supervisor or extension shutdown)."""
        self._enabled = False
        making = self._making
        if making is not None:
            making.join(SETUP_TIMEOUT + 5)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.discard()

    def _make(self) -> None:
        assert self._want is not None
        namespaces, network, store = self._want
        try:
            try:
                spare = make_spare(self._zygote, namespaces, network, store)
            except (OSError, ContainerError, ValueError):
                if store is None:
                    raise
                # Building the root ahead fails here: spares without one from now on.
                self._prebuild = False
                self._want = (namespaces, network, None)
                spare = make_spare(self._zygote, namespaces, network, None)
        except (OSError, ContainerError, ValueError):
            self._enabled = False  # something here does not allow it: keep the normal path
            return
        with self._lock:
            if self._enabled:
                self._spare = spare
                return
        spare.discard()


def make_spare(zygote: Zygote, namespaces: frozenset[str], network: str | None = None,
               store: Path | None = None) -> Spare:
    """Fork a helper and have it fork a first process that moves itself into a new cgroup
    (v1, through ``tasks``) or is cloned into it (v2); on a ``network``, plug the first
    process into it; with a ``store``, have the first process build the host image's root
    ahead, in a container directory of that store.

    The veth pair and the root are the slow parts: that is why this runs ahead of time.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel = Channel(ours)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        helper = zygote.spawn(theirs.fileno(), (devnull, devnull, devnull), ())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        os.close(devnull)
    cgroup: Cgroup | None = None
    attachment: dict | None = None
    root: PreparedRoot | None = None
    try:
        cgroup = cgroups.create_cgroup(f"{SPARE_PREFIX}{os.getpid()}-{next(_counter)}", Limits())
        v2 = "unified" in cgroup.paths
        layout = None
        if store is not None:
            root = PreparedRoot(store, state_mod.reserve_spare_directory(store),
                                hidden.host_secrets(store))
            layout = {"dir": str(root.directory), "layers": ["/"], "hide": root.hidden}
        ours.settimeout(SETUP_TIMEOUT)
        channel.send(Prefork(namespaces=sorted(namespaces), cgroup=cgroup.name,
                             paths=dict(cgroup.paths),
                             leave=cgroups.origin_procs_files(zygote.pid, cgroup),
                             tasks=cgroup.thread_files(),
                             rootfs=layout))
        # The helper says Pid then Left; the first process, Prepared (or Error) when its root
        # is built: in either order.
        expected: set[type] = {Pid, Left} | ({Prepared} if layout else set())
        pid = 0
        while expected:
            try:
                msg = channel.recv(*expected, Error)
            except ProtocolError as err:  # ChannelClosed included
                raise OSError(f"the spare's helper did not fork its first process: {err}") \
                    from None
            if isinstance(msg, Error):
                raise OSError(msg.message)
            expected.discard(type(msg))
            if isinstance(msg, Pid):
                pid = msg.pid
                if v2 and not msg.placed:  # no clone3 into a cgroup here: attach it now
                    cgroup.attach(pid)
        ours.settimeout(None)
        if cgroup.procs() != [pid]:  # the helper could not leave: it would share the limits
            raise OSError(f"the spare's helper is still in {cgroup.name}")
        if network is not None:
            attachment = networks.attach_spare(network, cgroup.name, os.getpid(), pid)
    except BaseException:
        _discard(channel, helper, cgroup, attachment,
                 None if root is None else root.directory)
        raise
    return Spare(helper, channel, cgroup, pid, namespaces, attachment, root)


def _discard(channel: Channel, helper: ForkedHelper, cgroup: Cgroup | None,
             attachment: dict | None = None, directory: Path | None = None) -> None:
    """Kill the helper, then the container's teardown, then close the control socket.

    In that order: a first process that saw its socket close first would abandon the spare
    and remove the cgroup itself, racing this teardown (a spare cgroup was left 1 time in 5).
    Killed first, it never gets there. The teardown is retried once after a failure.
    """
    helper.kill()
    for attempt in range(2):
        try:
            lifecycle.teardown(cgroup)
            break
        except ContainerError:
            if attempt:
                break
            time.sleep(0.05)
    if attachment is not None:
        with contextlib.suppress(OSError, ContainerError):
            networks.release(attachment, attachment["spare"])
    if directory is not None:  # after the cgroup: no process holds its overlay any more
        with contextlib.suppress(OSError, ContainerError):
            lifecycle.teardown(None, directory)
    with contextlib.suppress(OSError):
        channel.close()
