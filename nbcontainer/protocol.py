"""The messages between supervisor, zygote, helper and spare: typed records, one codec.

Every process of the runtime talks over a ``SOCK_SEQPACKET`` socket pair: one message per
packet, as JSON, with file descriptors attached as ``SCM_RIGHTS`` where a message carries them.
Both sides import this module, so a message has one definition. The conversation (see
``docs/architecture.md``)::

    supervisor -> zygote   Spawn(fds) + [ctl, stdin, stdout, stderr, *passed]
    zygote -> supervisor   Spawned(pid) + [pidfd]
    supervisor -> helper   Config | Prefork          (the first message)
    helper -> supervisor   Pid(pid)                  the first process exists and waits
    supervisor -> child    Go, then Attached         (around the cgroup attach)
    child -> supervisor    Userns(pid) -> UsernsMapped   (user namespace maps)
    child -> supervisor    Ready(pid) | Error(message)
    helper -> supervisor   Exit(status)              the first process ended (wait status)
    spare:  helper -> supervisor Left; supervisor -> child Stdio(targets) + fds, then Config

A malformed message, an unknown one or one with a wrong field raises :class:`ProtocolError`
saying what arrived: the supervisor turns that into an error in words and never crashes on
what a container's process wrote. The helper imports this module before any container exists,
so it stays cheap to import: no ``typing``, no ``dataclasses``.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket

TYPE_CHECKING = False  # typing is slow to import; the helper must start fast
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, ClassVar

MAX_MESSAGE = 1 << 20
#: Where the peek at a message's length writes its one byte (its content is never read).
_PEEK = bytearray(1)
MAX_FDS = 64


class ProtocolError(Exception):
    """A message that is not one of ours, or not what was expected now."""


class ChannelClosed(ProtocolError, EOFError):
    """The other side closed its end."""


_NONE = type(None)
_SCALARS = {"int": int, "str": str, "bool": bool, "float": float}


def _check(value: object, annotation: str) -> bool:
    """True if a decoded JSON value has the type a field's annotation names.

    Annotations are strings (``from __future__ import annotations``); the ones used below are
    scalars, ``X | None``, ``list[X]`` and ``dict[str, X]``.
    """
    annotation = annotation.strip()
    if annotation.endswith("| None"):
        return value is None or _check(value, annotation[: -len("| None")])
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(_check(v, annotation[5:-1]) for v in value)
    if annotation.startswith("dict[str,") and annotation.endswith("]"):
        return isinstance(value, dict) and all(
            isinstance(k, str) and _check(v, annotation[9:-1]) for k, v in value.items())
    if annotation == "dict":
        return isinstance(value, dict)
    if annotation == "Any":
        return True
    kind = _SCALARS[annotation]
    if kind is int or kind is float:
        return isinstance(value, (int, float) if kind is float else int) \
            and not isinstance(value, bool)
    return isinstance(value, kind)


_MESSAGES: dict[str, type[Message]] = {}


class Message:
    """A record with typed fields; subclasses declare ``op`` and annotated fields."""

    op: ClassVar[str] = ""
    _fields: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls) -> None:
        fields = {k: v for k, v in cls.__dict__.get("__annotations__", {}).items()
                  if not str(v).startswith("ClassVar")}
        cls._fields = {**cls._fields, **fields}
        if cls.op:
            _MESSAGES[cls.op] = cls

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self._fields)
        if unknown:
            raise ProtocolError(f"message {self.op!r} has no field {sorted(unknown)[0]!r}")
        for name, annotation in self._fields.items():
            if name in values:
                value = values[name]
            else:  # the class's default (a copy: lists and dicts are not shared)
                value = getattr(type(self), name, None)
                value = value.copy() if isinstance(value, (list, dict)) else value
            if not _check(value, annotation):
                raise ProtocolError(f"message {self.op!r}: field {name!r} should be "
                                    f"{annotation}, got {_preview(value)}")
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **{name: getattr(self, name) for name in self._fields}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(other) is type(self) \
            and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({fields})"


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def encode(message: Message) -> bytes:
    """One message as the bytes of one packet."""
    return json.dumps(message.to_dict(), separators=(",", ":")).encode()


def decode(data: bytes) -> Message:
    """The message in one packet; :class:`ProtocolError` saying why if it is not one."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"not a message: {_preview(bytes(data[:60]))}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
        raise ProtocolError(f"not a message: {_preview(raw)}")
    kind = _MESSAGES.get(raw.pop("op"))
    if kind is None:
        raise ProtocolError(f"unknown message: {_preview(data[:60])}")
    return kind(**raw)


# -- the messages --------------------------------------------------------------------------------


class Spawn(Message):
    """supervisor -> zygote: fork a helper; fds: ctl, stdin, stdout, stderr, then ``targets``."""

    op = "spawn"
    targets: list[int]


class Spawned(Message):
    """zygote -> supervisor: the helper's pid, with a pidfd of it attached."""

    op = "spawned"
    pid: int


class Config(Message):
    """supervisor -> helper: what the container (``mode`` run) or exec (``exec``) is."""

    op = "config"
    mode: str
    namespaces: list[str]
    argv: list[str]
    env: dict[str, str]
    workdir: str | None = None
    user: list[int] | None = None
    caps: list[str]
    privileged: bool = False
    no_new_privs: bool = True
    seccomp: str | None = None  # base64 of the BPF program (struct sock_filter[]), or None
    init: bool = False
    detached: bool = False
    python: str | None = None  # Python source to run in the forked interpreter
    rootfs: dict | None = None  # {"dir", "layers", "hide"}
    volumes: list[list[Any]] = []
    devices: list[list[str]] = []  # --device: [host node, path inside]
    hostname: str | None = None
    join_pid: int | None = None  # exec: the running container's first process
    join: list[str] = []  # exec: the namespaces to join
    #: run on a network: {"ifname", "address", "prefixlen", "gateway"}, for the first process
    #: to configure its side of the veth pair (the supervisor made the pair before Attached)
    net: dict | None = None
    #: cgroup v2: the container's cgroup directory, which the helper forks the first process
    #: into (clone3 with CLONE_INTO_CGROUP); None: the supervisor attaches it (v1, fallback)
    cgroup: str | None = None
    #: cgroup v1: the container's ``tasks`` files, one per hierarchy; the helper opens them
    #: before it forks and the first process writes ``0`` to each, moving itself in
    #: (:func:`nbcontainer.child.helper.enter_cgroup` says why); empty: see ``cgroup``
    cgroup_tasks: list[str] = []
    #: run with ``--net container:NAME``: the pid whose network namespace the helper joins
    #: (instead of unsharing one) before it forks the first process
    join_net: int | None = None
    #: ``run -t``: the first process opens a pseudo-terminal in the container's own devpts,
    #: makes it its controlling terminal and stdio, and sends the master back (:class:`Console`)
    tty: bool = False


class Prefork(Message):
    """supervisor -> a spare's helper: fork the first process now (see runtime/spare.py)."""

    op = "prefork"
    namespaces: list[str]
    cgroup: str  # the spare's cgroup: its name and its directories (Cgroup.paths)
    paths: dict[str, str]
    leave: list[str]  # the cgroup.procs files the helper returns to
    #: v1: the spare cgroup's ``tasks`` files; the first process moves itself in through
    #: them (Config.cgroup_tasks) and the helper never enters; empty on v2 (cloned in)
    tasks: list[str] = []
    #: the root to build ahead, ``{"dir", "layers", "hide"}`` (the host image's), or None
    rootfs: dict | None = None


class Prepared(Message):
    """a spare's first process -> supervisor: the root asked for in Prefork is built."""

    op = "prepared"


class Stdio(Message):
    """supervisor -> a spare's first process: its stdio and passed fds are attached."""

    op = "stdio"
    targets: list[int]


class Pid(Message):
    """helper -> supervisor: the first process exists (its host pid) and waits."""

    op = "pid"
    pid: int
    #: in its cgroup already (born there: clone3 with CLONE_INTO_CGROUP, cgroup v2; or it
    #: moved itself in through ``Config.cgroup_tasks``, v1): nothing to attach
    placed: bool = False


class Left(Message):
    """a spare -> supervisor: its cgroup holds only the first process (the helper moved out,
    or never entered and the first process moved itself in through ``Prefork.tasks``)."""

    op = "left"


class Go(Message):
    """supervisor -> child: build the namespaces and the root while the attach runs."""

    op = "go"


class Attached(Message):
    """supervisor -> child: it is in its cgroup; finish the setup."""

    op = "attached"


class Userns(Message):
    """child -> supervisor: write the uid/gid maps of my new user namespace."""

    op = "userns"
    pid: int
    #: with a root filesystem: whether its layers are idmapped mounts (False: the kernel or
    #: filesystem cannot, and image files show as nobody inside)
    idmapped: bool | None = None


class UsernsMapped(Message):
    """supervisor -> child: the maps are written."""

    op = "ok"


class Console(Message):
    """child -> supervisor: the master side of the container's terminal, attached as an fd
    (runc's console socket): the supervisor relays the user's terminal to it."""

    op = "console"


class Ready(Message):
    """child -> supervisor: the setup is done; the payload starts now."""

    op = "ready"
    pid: int


class Error(Message):
    """child or helper -> supervisor: setup failed, in one sentence."""

    op = "error"
    message: str


class Exit(Message):
    """helper (or a Python payload) -> supervisor: the first process ended."""

    op = "exit"
    status: int  # a wait status (see os.waitstatus_to_exitcode)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if not 0 <= self.status <= 0xFFFF:
            raise ProtocolError(f"message 'exit': {self.status} is not a wait status")


# -- the channel ---------------------------------------------------------------------------------


class Channel:
    """Messages over one SOCK_SEQPACKET socket, with fds attached where a message has them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Message, fds: list[int] | tuple[int, ...] = ()) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds \
            else []
        self.sock.sendmsg([encode(message)], ancillary)

    def recv_with_fds(self) -> tuple[Message, list[int]]:
        """The next message and the fds attached to it (the caller owns them)."""
        fds = array.array("i")
        # The message's length first (MSG_PEEK | MSG_TRUNC: a SOCK_SEQPACKET record's whole
        # length, nothing consumed), then a buffer of that size. recvmsg(MAX_MESSAGE) allocates
        # 1 MiB for every message and shrinks it: about 50 us a message on a VM, and the kernel
        # process's largest allocation in a `pass` cell (bench/bench_magics.py part 5).
        size = self.sock.recv_into(_PEEK, 1, socket.MSG_PEEK | socket.MSG_TRUNC)
        data, ancdata, flags, _ = self.sock.recvmsg(
            min(max(size, 1), MAX_MESSAGE), socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
        for level, kind, blob in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(blob[: len(blob) - (len(blob) % fds.itemsize)])
        if not data:
            _close(fds)
            raise ChannelClosed("the other side closed the control socket")
        if flags & socket.MSG_TRUNC:
            _close(fds)
            raise ProtocolError(f"a message of {size} bytes: more than the {MAX_MESSAGE} a "
                                "message may have (or another thread read the one peeked at)")
        try:
            return decode(data), list(fds)
        except ProtocolError:
            _close(fds)
            raise

    def recv(self, *expected: type[Message]) -> Message:
        """The next message, which must be one of ``expected`` (any, if none is given).

        Attached fds are closed: only the messages that carry fds are read with
        :meth:`recv_with_fds`, so none can pile up here.
        """
        message, fds = self.recv_with_fds()
        _close(fds)
        if expected and not isinstance(message, expected):
            names = " or ".join(e.op for e in expected)
            raise ProtocolError(f"got {message.op!r} where {names} was expected")
        return message

    def close(self) -> None:
        self.sock.close()


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
