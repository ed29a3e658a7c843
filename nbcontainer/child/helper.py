"""The single-threaded helper that builds a container: ``python -m nbcontainer.child.helper FD``.

The supervisor (often a multi-threaded Jupyter kernel) never forks itself; it starts this fresh
interpreter (or has its zygote fork one), which talks to it over one SOCK_SEQPACKET socket (fd
``FD``) in the messages of :mod:`nbcontainer.protocol`:

1. supervisor -> helper: :class:`~protocol.Config`.
2. helper: joins the namespaces of a running container (exec), or unshares the PID one.
3. helper forks the container's first process (PID 1 in a new PID namespace) and reports its
   host pid (``Pid``). The supervisor says ``Go``, attaches that pid to the container's
   cgroup, then says ``Attached``. On cgroup v2 the config names the cgroup's directory and
   the first process is born in it (clone3 with CLONE_INTO_CGROUP, ``Pid.placed``); on v1
   it names the ``tasks`` files, and the first process moves its single thread in itself
   (:func:`enter_cgroup`). Either way there is nothing to attach, and the migration's wait on
   the kernel's threadgroup lock is gone; the attach remains the fallback.
4. child: on ``Go``, the other namespaces, root filesystem, hostname — overlapping the attach,
   whose first cgroup migration after a pause waits for an RCU grace period;
   on ``Attached``, the cgroup namespace (rooted at its own cgroup); with a user namespace it
   enters it last and asks the supervisor to write the uid/gid maps (``Userns`` ->
   ``UsernsMapped``); then user and capabilities, ``Ready`` (or ``Error`` with a sentence)
   and execve(2) of the payload, which so always starts inside its cgroup, under its limits.
5. helper waits for the child and reports ``Exit`` with the wait status.

The helper stays outside the container's cgroup, so its own memory is never charged to it.
Both helper and child set PR_SET_PDEATHSIG, so the container dies with its supervisor.

A *spare* (:mod:`nbcontainer.runtime.spare`) runs steps 2-3 ahead of time: its first message is
``Prefork``, naming a fresh cgroup; the helper unshares, forks the first process (which moves
itself into that cgroup through ``tasks`` and says ``Left``, v1; or is cloned into it, v2,
and the helper says ``Left``; it unshares its namespaces and waits), reports ``Pid``. When a
container adopts the spare, the first process receives ``Stdio`` with the container's fds
attached (SCM_RIGHTS), then the ``Config``, ``Go`` and ``Attached`` at once, and goes on from
step 4. If the supervisor goes away first, the waiting first process leaves (to the helper's
origin) and removes the spare's cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource  # imported now: after pivot_root the host's lib-dynload is out of reach
import signal
import socket
import sys

# Everything the child needs is imported now: after pivot_root the package is out of reach.
from nbcontainer import _libc, _netlink
from nbcontainer.child import caps, namespaces, reaper, rootfs, seccomp
from nbcontainer.protocol import (
    Attached,
    Channel,
    ChannelClosed,
    Config,
    Console,
    Error,
    Exit,
    Go,
    Left,
    Pid,
    Prefork,
    Prepared,
    ProtocolError,
    Ready,
    Stdio,
    Userns,
    UsernsMapped,
    decode,
    encode,
)

TYPE_CHECKING = False  # typing itself is slow to import; the helper must start fast
if TYPE_CHECKING:
    from collections.abc import Callable


def _take_stdio(chan: Channel, targets: list[int], fds: list[int], status_fd: int) -> int:
    """A spare's first process gets its container's stdio (and passed fds) when adopted.

    ``fds`` are stdin, stdout, stderr, then one fd per entry of ``targets`` (the numbers the
    supervisor passed them as). Everything is first moved above the targets, the control
    socket and the status pipe included, so no dup2 clobbers an fd still needed. Returns the
    status pipe's fd.
    """
    import fcntl

    floor = max([2, *targets]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    for fd in fds:
        os.close(fd)
    if chan.sock.fileno() < floor:
        moved = fcntl.fcntl(chan.sock.fileno(), fcntl.F_DUPFD_CLOEXEC, floor)
        chan.sock.close()
        chan.sock = socket.socket(fileno=moved)
    if status_fd < floor:
        moved = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(status_fd)
        status_fd = moved
    for target, fd in zip((0, 1, 2, *targets), high, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    rebind_stdio()
    return status_fd


def _abandon_spare(spare: Prefork) -> None:
    """An unused spare's first process: leave its cgroup (for the helper's origin), remove it.

    Nothing else would: its supervisor is gone. The cgroup code is imported here, in a process
    forked from the zygote, which preloads it.
    """
    from nbcontainer import cgroups

    # A spare on a network has its veth pair here: delete it now (a namespace's devices
    # otherwise go only when the kernel gets round to destroying the namespace).
    with contextlib.suppress(OSError):
        _netlink.delete_link("eth0")
    cgroups.leave(spare.leave)
    with contextlib.suppress(Exception):
        cgroups.cgroup_from_paths(spare.cgroup, spare.paths).remove(timeout=1.0)
    if spare.rootfs:  # its root built ahead: detach it here, remove its directory
        import shutil

        directory = spare.rootfs["dir"]
        with contextlib.suppress(OSError):
            _libc.umount2(os.path.join(directory, "merged"), _libc.MNT_DETACH)
        shutil.rmtree(directory, ignore_errors=True)


def _die_with_parent(expected_parent: int) -> None:
    """PR_SET_PDEATHSIG, then check the parent did not die before we asked (the race)."""
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    # In a new PID namespace the parent lives outside it and getppid() reads 0.
    if os.getppid() not in (expected_parent, 0):
        os._exit(1)


def _join_namespaces(pid: int, names: list[str]) -> None:
    """setns(2) into the namespaces of ``pid`` (a running container), in nsenter's order."""
    fds = {}
    for name in names:
        fds[name] = os.open(f"/proc/{pid}/ns/{namespaces.PROC_NAMES[name]}", os.O_RDONLY)
    try:
        for name in namespaces.JOIN_ORDER:
            if name in fds:
                _libc.setns(fds[name], namespaces.FLAGS[name])
    finally:
        for fd in fds.values():
            os.close(fd)


def _reset_signals() -> None:
    """Default dispositions and an empty mask, as a freshly exec'd program expects."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _bring_up_loopback() -> None:
    """ip link set lo up, through SIOCSIFFLAGS (netdevice(7)); no ip(8) needed."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        if not flags & iff_up:  # an adopted spare's is up already (networks.attach_spare)
            fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def _enter_user_namespace(chan: Channel, idmapped: bool | None) -> None:
    """Become root of a new user namespace whose maps the supervisor writes.

    This comes after the root filesystem is built, as real root: the overlay, /proc and the
    store stay readable however the store's directories are protected, and the other
    namespaces stay owned by the host's user namespace, so root inside cannot reconfigure
    them (user_namespaces(7)). Root inside is an unprivileged id range outside.
    ``idmapped`` (whether the image layers are idmapped mounts) goes to the supervisor, which
    says so when they are not.
    """
    _libc.unshare(_libc.CLONE_NEWUSER)
    chan.send(Userns(pid=os.getpid(), idmapped=idmapped))
    chan.recv(UsernsMapped)
    os.setgid(0)
    os.setgroups([])  # the host's supplementary groups would show as nogroup inside
    os.setuid(0)


#: Docker's default open-files limit (containerd's): soft 1024, hard 524288.
NOFILE_LIMIT = (1024, 524288)
#: The OOM killer's preference: a container's processes before the notebook kernel that runs
#: them (oom_score_adj ranges from -1000 to 1000; every process of the container inherits it).
OOM_SCORE_ADJ = 500


def _isolate_process() -> None:
    """What Docker gives every container's process besides namespaces: its own session
    keyring (keyrings(7): otherwise ``keyctl`` reaches the keys of the session it was started
    from), its open-files limit, umask 0022, and an OOM score that prefers it."""
    try:
        _libc.join_session_keyring(None)
    except OSError as err:
        if err.errno != errno.ENOSYS:  # a kernel without keys has nothing to share
            raise
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, NOFILE_LIMIT)
    except (ValueError, OSError):
        # Raising the hard limit needs CAP_SYS_RESOURCE, which a sandboxed supervisor may
        # lack: keep its hard limit, with Docker's soft limit under it.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE_LIMIT[0], hard), hard))
    os.umask(0o022)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(OOM_SCORE_ADJ))


def _setup_child(cfg: Config, chan: Channel, prepared: list[str] | None = None) -> None:
    """Everything the container's first process does before exec (runs as that process).

    ``prepared``: this spare built the root ahead (:func:`rootfs.prepare`), hiding these."""
    ns = set(cfg.namespaces)
    idmapped: bool | None = None  # with a root filesystem: are its layers idmapped?
    if cfg.mode == "run":
        if "net" in ns:
            _bring_up_loopback()
        if "uts" in ns and cfg.hostname:
            socket.sethostname(cfg.hostname)
        layout = cfg.rootfs
        if layout and prepared is not None and layout.get("prepared"):
            rootfs.finish(layout["dir"], cfg.volumes, layout.get("hide", []), prepared,
                          cfg.devices)
        elif layout:
            idmapped = rootfs.setup(
                layout["dir"], layout["layers"], cfg.volumes, layout.get("hide", []),
                privileged=cfg.privileged, devices=cfg.devices, idmap=layout.get("idmap"),
            )
        elif "mount" in ns:
            rootfs.make_private()
            rootfs.bind_volumes("/", cfg.volumes)
    chan.recv(Attached)
    if cfg.mode == "run" and cfg.net:
        # The supervisor has put our end of the veth pair here: configure it while still
        # root of the host's user namespace, before the capabilities go.
        net = cfg.net
        _netlink.configure_inside(net["ifname"], net["address"], net["prefixlen"],
                                  net.get("gateway"))
    _isolate_process()
    if cfg.mode == "run":
        if "cgroup" in ns:
            _libc.unshare(_libc.CLONE_NEWCGROUP)
        if "user" in ns:
            _enter_user_namespace(chan, idmapped)
    elif "user" in cfg.join:
        # setns(2) into a user namespace keeps the host's uid 0, which is unmapped there (it
        # would show as 65534): become the namespace's root, as the container's init is.
        os.setgid(0)
        os.setgroups([])
        os.setuid(0)
    if cfg.tty:
        open_console(chan)
    workdir = cfg.workdir or "/"
    try:
        os.chdir(workdir)
    except FileNotFoundError:
        if cfg.mode == "run" and cfg.rootfs:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        else:
            raise
    if not cfg.no_new_privs:
        seccomp.install(cfg.seccomp)  # without no_new_privs it needs CAP_SYS_ADMIN: now (runc)
    if not cfg.privileged or cfg.user:
        caps.apply(cfg.caps, no_new_privs=cfg.no_new_privs, user=cfg.user)
    elif cfg.no_new_privs:
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)


def open_console(chan: Channel) -> None:
    """``run -t``: a terminal of the container's own, as runc makes one.

    The pseudo-terminal comes from the container's devpts instance (``/dev/ptmx`` after the
    root is built), so ``tty`` prints a ``/dev/pts/N`` that exists inside. This process
    starts a new session and takes the slave as its controlling terminal (setsid(2),
    TIOCSCTTY in tty_ioctl(4)) and as stdin, stdout and stderr, so a shell gets job control
    and Ctrl-C reaches the foreground process group; the master goes to the supervisor.
    """
    import fcntl  # built into the interpreter: importable after pivot_root

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")  # unlockpt(3)
        # TIOCGPTPEER opens the slave from the master itself: no path lookup to race with.
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        chan.send(Console(), [master])
    finally:
        os.close(master)
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


#: ioctl numbers from <asm-generic/ioctls.h>: termios is an extension module, out of reach
#: after pivot_root, and lacks the last two anyway.
TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def rebind_stdio() -> None:
    """Fresh text streams on fds 0/1/2 for a forked interpreter whose fds were just replaced.

    Output is line-buffered and written through, so a notebook sees it as it is produced.
    """
    sys.stdin = open(0, closefd=False, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = open(fd, "w", buffering=1, closefd=False, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace")
        stream.reconfigure(write_through=True)
        setattr(sys, name, stream)


def _report_status(status_fd: int, status: int) -> None:
    """Tell the helper, through the status pipe, how the payload ended (a wait status)."""
    with contextlib.suppress(OSError):
        os.write(status_fd, status.to_bytes(4, "little"))


def _run_python(cfg: Config, status_fd: int) -> None:
    """Run a Python payload in this (forked, already initialised) interpreter, then exit.

    This is what makes a Python cell as cheap as ``%%script python``: no new interpreter
    starts; the zygote's, with its site-packages already on sys.path, runs the body as
    ``__main__`` inside the container.
    """
    import traceback
    import types

    assert cfg.python is not None
    os.environ.clear()
    os.environ.update(cfg.env)
    _reset_signals()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as at interpreter start-up
    sys.argv = ["<cell>"]
    main = types.ModuleType("__main__")
    main.__dict__["__file__"] = sys.argv[0]
    sys.modules["__main__"] = main
    status = 0
    try:
        exec(compile(cfg.python, sys.argv[0], "exec"), main.__dict__)  # noqa: S102
    except SystemExit as stop:
        code = stop.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code & 0xFF
        else:
            print(code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        status = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - the payload's own error, reported like python does
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # Close the output now (the reader then sees EOF without waiting for this process's
    # address space to be torn down) and report the end: the supervisor need not wait for
    # this process's namespaces to be torn down either (exit(2) does that before the helper
    # could see the exit).
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.close(fd)
    _report_status(status_fd, status << 8)
    os._exit(status)


def _exec_payload(cfg: Config, status_fd: int) -> None:
    """execve(2) the payload, searching PATH like a shell; exit 127/126 with a sentence if not.

    The status pipe is close-on-exec: an exec'd payload holds no descriptor of nbcontainer's.
    """
    if cfg.python is not None:
        _run_python(cfg, status_fd)
    argv = cfg.argv
    env = cfg.env
    _reset_signals()
    try:
        if "/" in argv[0]:
            os.execve(argv[0], argv, env)
        # Like execvp(3): skip entries where it is missing; if one exists but may not be run,
        # that is the error to report (126), not "not found".
        denied: PermissionError | None = None
        for directory in env.get("PATH", "/usr/bin:/bin").split(":"):
            try:
                os.execve(os.path.join(directory or ".", argv[0]), argv, env)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError as err:
                denied = err
        if denied is not None:
            raise denied
        os.write(2, f"nbcontainer: exec {argv[0]!r}: executable file not found in $PATH\n".encode())
        os._exit(127)
    except FileNotFoundError:
        os.write(2, f"nbcontainer: exec {argv[0]!r}: no such file or directory\n".encode())
        os._exit(127)
    except OSError as err:
        code = 126 if err.errno in (errno.EACCES, errno.ENOEXEC, errno.EPERM,
                                    errno.EISDIR) else 127
        os.write(2, f"nbcontainer: exec {argv[0]!r}: {err.strerror}\n".encode())
        os._exit(code)


def _run_init(cfg: Config, status_fd: int) -> None:
    """PID 1 with a payload (or idle): see :mod:`nbcontainer.child.reaper`."""
    has_payload = bool(cfg.argv) or cfg.python is not None
    reaper.run((lambda: _exec_payload(cfg, status_fd)) if has_payload else None,
               lambda status: _report_status(status_fd, status))


def _child_main(cfg: Config, chan: Channel, helper_pid: int, status_fd: int,
                prepared: list[str] | None = None) -> None:
    """The container's first process: wait for the cgroup attach, set up, report, exec."""
    try:
        if not cfg.detached:
            _die_with_parent(helper_pid)
        chan.recv(Go)
        _setup_child(cfg, chan, prepared)
        seccomp.install(cfg.seccomp)  # last: the setup above is not filtered, the payload is
    except ChannelClosed:
        os._exit(125)  # the supervisor went away: nobody to tell
    except Exception as err:  # noqa: BLE001 - every setup failure becomes one sentence
        text = _in_words(err)
        try:
            chan.send(Error(message=f"container setup failed: {text}"))
        finally:
            os._exit(125)
    chan.send(Ready(pid=os.getpid()))
    # Nothing inside the container keeps nbcontainer's control channel: from here on, the end
    # is reported through the status pipe, which the helper (outside) reads once.
    chan.close()
    if cfg.init:
        _run_init(cfg, status_fd)
    _exec_payload(cfg, status_fd)


def _in_words(err: Exception) -> str:
    """A setup failure as the sentence the user sees: no ``[Errno N]``, the path first."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err) if isinstance(err, ProtocolError) else repr(err)


def main(fd: int) -> None:
    """Entry point of the helper process."""
    chan = Channel.from_fd(fd)
    try:
        cfg = chan.recv(Config, Prefork)
    except ChannelClosed:
        os._exit(0)
    except ProtocolError as err:
        with contextlib.suppress(OSError):
            chan.send(Error(message=f"the helper could not read its config: {err}"))
        os._exit(125)
    if isinstance(cfg, Prefork):
        _prefork_spare(chan, cfg)  # never returns
    assert isinstance(cfg, Config)
    supervisor = os.getppid()
    if not cfg.detached:
        _die_with_parent(supervisor)
    _ignore_stop_signals()
    # Opened now, in the host's mount namespace: exec joins the container's before the fork.
    cgroup_fd = _open_cgroup(cfg.cgroup)
    tasks_fds = _open_tasks(cfg.cgroup_tasks) if cgroup_fd is None else []
    ns = set(cfg.namespaces)
    if cfg.mode == "exec":
        join_pid, join = cfg.join_pid or 0, cfg.join
        _or_report(chan, lambda: _join_namespaces(join_pid, join))
    elif cfg.join_net:
        # --net container:NAME: that container's network namespace, not a new one.
        join_net = cfg.join_net
        _or_report(chan, lambda: _join_namespaces(join_net, ["net"]))
        ns.discard("net")
    me = os.getpid()
    child, status_fd, placed = _fork_first_process(chan, ns, run=cfg.mode == "run",
                                                   cgroup_fd=cgroup_fd, tasks_fds=tasks_fds)
    if child == 0:
        _child_main(cfg, chan, me, status_fd)
        os._exit(125)  # not reached
    chan.send(Pid(pid=child, placed=placed))
    _report_when_done(chan, child, status_fd)


def _or_report(chan: Channel, step: Callable[[], None]) -> None:
    """Run a namespace step; on failure tell the supervisor in a sentence and exit 125."""
    try:
        step()
    except OSError as err:
        chan.send(Error(message=f"cannot create namespaces: {err.strerror}"))
        os._exit(125)


def _open_cgroup(directory: str | None) -> int | None:
    """An O_PATH fd of the cgroup v2 directory to fork the first process into, or None (no
    directory given, or it cannot be opened: the supervisor's attach then says why)."""
    if not directory:
        return None
    try:
        return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _open_tasks(files: list[str]) -> list[int]:
    """Write fds of the cgroup v1 ``tasks`` files the first process moves itself in through
    (:func:`enter_cgroup`), opened in the host's mount namespace; empty if any cannot be
    opened (the supervisor then attaches the first process and its error says why)."""
    fds: list[int] = []
    try:
        for path in files:
            fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        return []
    return fds


def enter_cgroup(chan: Channel, tasks_fds: list[int]) -> None:
    """Move the calling (single-threaded, just forked) process into the container's cgroup,
    in every v1 hierarchy, by writing ``0`` to each ``tasks`` file; on failure say why and
    exit 125.

    Why: writing a pid to ``cgroup.procs`` (as the supervisor did) takes the kernel's global
    threadgroup rwsem for writing, and the first writer after a quiet spell waits for an RCU
    grace period: 10-20 ms on this machine's 6.18 kernel, on every cold start's path. Writing
    ``0`` to ``tasks`` moves only the writer's own thread, which since Linux 6.1 ("cgroup:
    Optimize single thread migration") skips that lock: 0.1-0.2 ms for all hierarchies
    together. Right after fork the thread is the whole process. Older kernels take the lock:
    as slow as before, never wrong.
    """
    try:
        for fd in tasks_fds:
            os.write(fd, b"0")
    except OSError as err:
        chan.send(Error(message=f"container setup failed: cannot join the container's cgroup: "
                                f"{err.strerror}"))
        os._exit(125)
    finally:
        for fd in tasks_fds:
            os.close(fd)


def _fork(cgroup_fd: int | None) -> tuple[int, bool]:
    """fork(2), into the cgroup ``cgroup_fd`` when the kernel can (clone3 with
    CLONE_INTO_CGROUP, Linux >= 5.7); return (fork's value, whether it was born there).

    Any refusal (ENOSYS, E2BIG on 5.3-5.6, a seccomp filter around us, the cgroup's own
    EBUSY) falls back to a plain fork: the supervisor then attaches the pid, as on v1. The fd
    is closed on both sides.
    """
    if cgroup_fd is None:
        return os.fork(), False
    try:
        return _libc.fork_into_cgroup(cgroup_fd), True
    except OSError:
        return os.fork(), False
    finally:
        os.close(cgroup_fd)


def _fork_first_process(chan: Channel, ns: set[str], run: bool,
                        cgroup_fd: int | None = None,
                        tasks_fds: list[int] | None = None) -> tuple[int, int, bool]:
    """Fork the container's first process (into ``cgroup_fd``'s cgroup if given and the kernel
    can; or it moves itself in through ``tasks_fds``, v1); return (fork's value: 0 in the
    child, the fd of the child's end of the status pipe in the child, of the helper's end in
    the helper; whether it is in the cgroup without the supervisor's attach).

    For a new container the helper first unshares the PID namespace (it applies to children
    only), and the child unshares the rest itself, so the helper holds no mount namespace (and
    so no overlay) alive after the container ends.
    """
    if run:
        _or_report(chan, lambda: _libc.unshare(namespaces.helper_flags(ns)))
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    child, placed = _fork(cgroup_fd)
    if child == 0:
        os.close(status_r)
        if tasks_fds:
            enter_cgroup(chan, tasks_fds)
        if run:
            _or_report(chan, lambda: _libc.unshare(namespaces.child_flags(ns)))
        return 0, status_w, placed or bool(tasks_fds)
    os.close(status_w)
    for fd in tasks_fds or ():
        os.close(fd)
    return child, status_r, placed or bool(tasks_fds)


def _ignore_stop_signals() -> None:
    """Stay alive through the terminal's Ctrl-C and the supervisor's stop: the supervisor
    decides what the container gets, and the helper only reports how it ended."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)


def _report_when_done(chan: Channel, child: int, status_fd: int) -> None:
    """The helper's last job: report the payload's end as soon as it is known.

    A Python payload (or an init) writes its wait status into the status pipe before its
    namespaces are torn down, so the supervisor hears of the end without waiting for that;
    the helper reads those four bytes once (whatever they are: a payload can only misreport
    its own end) and forwards them. Otherwise the end is the first process's exit.
    """
    import select

    # The helper needs no stdio: let go of the container's, so its reader sees EOF as soon as
    # the payload's processes close them, not only when this helper exits.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    reported = False
    pidfd = os.pidfd_open(child)
    watch = [pidfd, status_fd]
    while True:
        try:
            ready = select.select(watch, [], [])[0]
        except InterruptedError:
            continue
        if status_fd in ready:
            data = os.read(status_fd, 4)
            watch.remove(status_fd)  # read once: a payload cannot keep the helper busy
            os.close(status_fd)
            status = int.from_bytes(data, "little") if len(data) == 4 else -1
            if 0 <= status <= 0xFFFF:
                with contextlib.suppress(OSError):
                    chan.send(Exit(status=status))
                reported = True
        if pidfd in ready:
            break
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if not reported:
        with contextlib.suppress(OSError):
            chan.send(Exit(status=status))
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
             else 128 + os.WTERMSIG(status))


def _prefork_spare(chan: Channel, spare: Prefork) -> None:
    """A spare (runtime/spare.py): fork the container's first process now, ahead of its cell.

    On cgroup v1 the first process moves itself into the spare's cgroup through its ``tasks``
    files (:func:`enter_cgroup`). On v2 the
    first process is born in the spare's cgroup by clone3 (the helper never enters it; should
    the kernel refuse, the supervisor attaches it). It unshares the expected namespaces and
    waits for its stdio and config; the helper says ``Left`` and waits for it.
    """
    _die_with_parent(os.getppid())  # the zygote, which dies with the supervisor
    _ignore_stop_signals()
    me = os.getpid()
    cgroup_fd = _open_cgroup(spare.paths.get("unified"))
    tasks_fds = _open_tasks(spare.tasks) if cgroup_fd is None else []
    if spare.tasks and not tasks_fds:
        chan.send(Error(message="the spare's helper cannot open its cgroup's tasks files"))
        os._exit(125)
    child, status_fd, placed = _fork_first_process(chan, set(spare.namespaces), run=True,
                                                   cgroup_fd=cgroup_fd, tasks_fds=tasks_fds)
    if child == 0:
        if tasks_fds:
            chan.send(Left())  # moved in (enter_cgroup): the cgroup holds only this process
        _await_adoption(chan, spare, me, status_fd)
        os._exit(125)  # not reached
    chan.send(Pid(pid=child, placed=placed))
    if not tasks_fds:  # v2: cloned in; the helper never was in the cgroup
        chan.send(Left())
    _report_when_done(chan, child, status_fd)


def _warm_up() -> None:
    """Run, while the spare waits, the Python its adoption will run first.

    A spare's first process is a fork of the zygote: the first time it runs a piece of code,
    the objects that code touches (reference counts, caches) are copied page by page from the
    zygote's memory, a page fault each. Decoding a config like a cell's and making the text
    streams now takes those faults before the cell is waiting: measured from the stdio's
    arrival to the config decoded, 247 faults before, 137 with it (the time saved was within
    the noise of a busy machine).
    """
    sample = Config(mode="run", namespaces=["mount"], argv=["true"], env={"PATH": "/bin"},
                    caps=["CAP_KILL"], rootfs={"dir": "/", "layers": ["/"], "hide": []},
                    volumes=[["/", "/", True]], net={"ifname": "eth0"}, hostname="spare")
    decode(encode(sample))
    rebind_stdio()


def _await_adoption(chan: Channel, spare: Prefork, helper_pid: int, status_fd: int) -> None:
    """A spare's first process: wait for a container's stdio and config, then go on as one.

    Should the supervisor go away first (its end of the socket closes), remove the spare's
    cgroup: nothing else would.
    """
    prepared = None
    if spare.rootfs:
        try:
            rootfs.prepare(spare.rootfs["dir"], spare.rootfs["layers"], spare.rootfs["hide"])
        except OSError as err:
            chan.send(Error(message=f"the spare's root could not be built: {_in_words(err)}"))
            os._exit(125)
        prepared = list(spare.rootfs["hide"])
        chan.send(Prepared())
    _warm_up()
    try:
        msg, fds = chan.recv_with_fds()
        if not isinstance(msg, Stdio):
            os._exit(125)
        status_fd = _take_stdio(chan, msg.targets, fds, status_fd)
        cfg = chan.recv(Config)
    except ChannelClosed:
        _abandon_spare(spare)
        os._exit(0)
    except ProtocolError:
        os._exit(125)
    assert isinstance(cfg, Config)
    _child_main(cfg, chan, helper_pid, status_fd, prepared)


if __name__ == "__main__":
    main(int(sys.argv[1]))
