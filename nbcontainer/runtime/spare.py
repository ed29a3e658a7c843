"""A container's first process forked inside a fresh cgroup ahead of time.

Why: on cgroup v1 the first write to ``cgroup.procs`` after a quiet spell waits for an RCU grace
period (``cgroup_threadgroup_rwsem`` is a per-CPU rwsem; taking it for writing from idle goes
through ``rcu_sync_enter``; bench/RESULTS.md has cold vs back-to-back starts). The container's first
process must be in its cgroup before any of the payload runs, and notebook cells come one at a
time with pauses between them, so every cell paid that wait.

A *spare* is made while the kernel is idle: the zygote forks a helper, the supervisor attaches
it to a new cgroup (paying the wait off the cell's path), and the helper forks the container's
first process, born inside that cgroup, which unshares the namespaces the next container is
expected to want and waits. The helper then moves itself back to the cgroups it came from and
says so; only then is the spare ready, so nothing but the first process is ever in the cgroup.
The next container adopts the spare if its namespaces match and its limits need no other
hierarchy: the cgroup is renamed to the container's id and given its limits, the first process
receives the container's stdio over the control socket, then its config, and goes on as usual.
That takes the attach, a fork and the namespace creation off the cell's path.

On cgroup v2 the first process is cloned straight into the spare's cgroup (clone3 with
``CLONE_INTO_CGROUP``; the helper never enters it, so it has nothing to leave; where the
kernel refuses, the supervisor attaches the first process, still off the cell's path). v2
cannot rename a cgroup (the kernel offers rename on v1 hierarchies only), so an adopted
spare keeps its ``spare-PID-N`` name, which the container's record saves with its path;
adoption writes the cell's limits (``memory.max``, ``pids.max``, ``cpu.max``...). The spare
is taken only with the default device allowlist there: v2's allowlist is an eBPF program,
and a second, wider one cannot widen what the first denies.

On a network (``--net bridge``, the default) the spare also leases an address and plugs its
veth pair into the first process's network namespace ahead of time
(:func:`nbcontainer.net.networks.attach_spare`); adopting it hands the lease to the container.

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
from typing import TYPE_CHECKING

from nbcontainer import cgroups
from nbcontainer.cgroups import Cgroup
from nbcontainer.errors import ContainerError
from nbcontainer.net import networks
from nbcontainer.protocol import Channel, Left, Pid, Prefork, ProtocolError
from nbcontainer.runtime import lifecycle
from nbcontainer.spec import Limits

if TYPE_CHECKING:
    from nbcontainer.runtime.zygote import ForkedHelper, Zygote

SPARE_PREFIX = "spare-"
SETUP_TIMEOUT = 10.0
_counter = itertools.count(1)


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

    @property
    def network(self) -> str | None:
        return None if self.attachment is None else self.attachment["network"]

    def discard(self) -> None:
        """Kill its processes, remove the cgroup, release the address (the spare was not, or
        cannot be, used)."""
        _discard(self.channel, self.helper, self.cgroup, self.attachment)

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
        #: What the next spare gets: the namespaces and network the last container wanted.
        self._want: tuple[frozenset[str], str | None] | None = None

    def enable(self) -> None:
        """Keep a spare ready from now on (as root, on any cgroup version)."""
        if self._enabled or os.geteuid() != 0:
            return
        if cgroups.detect().version not in ("v1", "hybrid", "v2"):
            return
        if self._want is None:
            from nbcontainer.spec import make_spec

            default = make_spec([])
            self._want = (default.effective_namespaces(), default.network)
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
             network: str | None = None, default_devices: bool = True) -> Spare | None:
        """The ready spare if it has these namespaces, this network and the hierarchies
        ``limits`` need (and, on v2, if the container wants the default device allowlist).
        Whoever takes it calls :meth:`refill` once its container has ended.

        Never waits. A container that wants other namespaces or another network makes the next
        spare follow it (a notebook's cells tend to use the same options).
        """
        with self._lock:
            spare = self._spare
            if spare is None:
                self._want = (namespaces, network)
                return None
            if (spare.namespaces, spare.network) != (namespaces, network):
                self._want = (namespaces, network)
                self._spare = None
                stale: Spare | None = spare
                spare = None
            elif "unified" in spare.cgroup.paths and not default_devices:
                return None  # v2: the spare's device program cannot be widened
            elif "unified" not in spare.cgroup.paths \
                    and not cgroups.v1_controllers_for(limits) <= set(spare.cgroup.paths):
                return None  # v1: a hierarchy the spare's cgroup is not in (v2 has them all)
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
        try:
            spare = make_spare(self._zygote, *self._want)
        except (OSError, ContainerError, ValueError):
            self._enabled = False  # something here does not allow it: keep the normal path
            return
        with self._lock:
            if self._enabled:
                self._spare = spare
                return
        spare.discard()


def make_spare(zygote: Zygote, namespaces: frozenset[str], network: str | None = None) -> Spare:
    """Fork a helper, attach it to a new cgroup, have it fork a first process and leave
    (v1), or have it clone the first process into the new cgroup (v2); on a ``network``, plug
    the first process into it.

    The attach is the slow part (the RCU grace period), then the veth pair: that is why this
    runs ahead of time.
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
    try:
        cgroup = cgroups.create_cgroup(f"{SPARE_PREFIX}{os.getpid()}-{next(_counter)}", Limits())
        v2 = "unified" in cgroup.paths
        if not v2:
            cgroup.attach(helper.pid)
        ours.settimeout(SETUP_TIMEOUT)
        channel.send(Prefork(namespaces=sorted(namespaces), cgroup=cgroup.name,
                             paths=dict(cgroup.paths),
                             leave=cgroups.origin_procs_files(zygote.pid, cgroup)))
        try:
            first = channel.recv(Pid)
            assert isinstance(first, Pid)
            if v2 and not first.placed:  # no clone3 into a cgroup here: attach it now
                cgroup.attach(first.pid)
            channel.recv(Left)
        except ProtocolError as err:  # ChannelClosed included
            raise OSError(f"the spare's helper did not fork its first process: {err}") from None
        pid = first.pid
        ours.settimeout(None)
        if cgroup.procs() != [pid]:  # the helper could not leave: it would share the limits
            raise OSError(f"the spare's helper is still in {cgroup.name}")
        if network is not None:
            attachment = networks.attach_spare(network, cgroup.name, os.getpid(), pid)
    except BaseException:
        _discard(channel, helper, cgroup, attachment)
        raise
    return Spare(helper, channel, cgroup, pid, namespaces, attachment)


def _discard(channel: Channel, helper: ForkedHelper, cgroup: Cgroup | None,
             attachment: dict | None = None) -> None:
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
    with contextlib.suppress(OSError):
        channel.close()
