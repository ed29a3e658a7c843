"""A pre-started, single-threaded interpreter that forks container helpers on request.

Starting a fresh interpreter for every container costs tens of milliseconds before any
namespace exists. A long-lived supervisor (a notebook kernel) instead starts one *zygote* —
never a fork of itself, which may be multi-threaded — and asks it to fork a helper per
container. The forked helper runs the same protocol as a freshly started one
(:mod:`nbcontainer.child.helper`). Because the zygote runs the supervisor's own interpreter
with its site-packages, a Python cell body can run in the forked, already initialised
interpreter inside the container instead of exec'ing a new one (the ``python`` payload).

Zygote protocol (:mod:`nbcontainer.protocol`): supervisor -> zygote: ``Spawn`` with
the control socket, stdin, stdout, stderr and any passed fds attached (SCM_RIGHTS);
zygote -> supervisor: ``Spawned`` with a pidfd of the new helper attached, so the supervisor
can wait for and signal a process that is not its child without racing pid reuse.
The zygote dies with its supervisor (PR_SET_PDEATHSIG) and when its socket closes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading

from nbcontainer.protocol import Channel, ChannelClosed, ProtocolError, Spawn, Spawned

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence


# -- the zygote process ------------------------------------------------------------------------


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_helper(zygote: Channel, message: Spawn, fds: list[int]) -> None:
    """In the forked child: take the passed fds into place and run the helper protocol."""
    from nbcontainer.child import helper as init

    zygote.close()
    ctl = take_fds(fds[0], fds[1:4], fds[4:], message.targets)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    init.rebind_stdio()
    init.main(ctl)


def take_fds(ctl: int, stdio: Sequence[int], extra: Sequence[int], targets: Sequence[int],
             close_others: bool = False) -> int:
    """Put ``stdio`` on 0/1/2 and each of ``extra`` on its target number (inheritable);
    return where ``ctl`` went (close-on-exec). With ``close_others``, every other fd of the
    process is closed too (a helper forked by the CLI holds the whole CLI's fds)."""
    # Move every fd above the targets first, so no dup2 clobbers one still needed.
    given = (ctl, *stdio, *extra)
    high = [os.dup(fd) for fd in given]
    for fd in set(given):
        os.close(fd)
    ctl, stdio, extra = high[0], high[1:4], high[4:]
    for target, fd in zip((0, 1, 2), stdio, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    for target, fd in zip(targets, extra, strict=True):
        os.dup2(fd, target)
        os.set_inheritable(target, True)
        os.close(fd)
    if close_others:
        low = 0
        for keep in sorted({0, 1, 2, ctl, *targets}):
            if low < keep:  # never an empty range: CPython turns closerange(n, n) into
                os.closerange(low, keep)  # close_range(n, n - 1), i.e. every fd from n on
            low = keep + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    return ctl


def serve(fd: int, preload: list[str] | tuple[str, ...] = ()) -> None:
    """The zygote's loop: fork a helper per request, reap them, exit with the supervisor."""
    # Preload everything a helper needs, and what a Python payload's bootstrap imports:
    # every fork then finds them imported.
    # inspect (with ast, dis, tokenize) came in with dataclasses until the start's path
    # dropped those (nbcontainer/_records.py). Without it a `pass` cell's forked first process
    # takes about 70 more page faults, +1 ms per cell (perf stat over 40 cells, bench_magics
    # part 1); no child imports it, so the faults are copy-on-write of the zygote's heap,
    # whose layout the import changes. The cause was not pinned down further: it stays loaded.
    import importlib
    import inspect  # noqa: F401
    import linecache  # noqa: F401
    import traceback  # noqa: F401
    import types  # noqa: F401

    from nbcontainer import _libc, cgroups  # cgroups: for a spare's helper (runtime/spare.py)
    from nbcontainer.child import helper as init

    del init, cgroups
    for name in preload:  # what the supervisor's payloads import (Zygote.preload)
        importlib.import_module(name)
    parent = os.getppid()
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    chan = Channel.from_fd(fd)
    while True:
        ready, _, _ = select.select([chan], [], [], 1.0)
        _reap()
        if not ready:
            continue
        try:
            message, fds = chan.recv_with_fds()
        except (ChannelClosed, OSError):
            os._exit(0)  # the supervisor closed its end, or is gone
        except ProtocolError:
            continue  # not a request of ours: nothing to fork
        if not isinstance(message, Spawn) or len(fds) != 4 + len(message.targets):
            for received in fds:
                os.close(received)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                _become_helper(chan, message, fds)
            finally:
                os._exit(125)
        for received in fds:
            os.close(received)
        pidfd = os.pidfd_open(pid)
        try:
            chan.send(Spawned(pid=pid), [pidfd])
        finally:
            os.close(pidfd)


# -- the supervisor's side ---------------------------------------------------------------------


class ForkedHelper:
    """A helper forked by the zygote, with :class:`subprocess.Popen`'s verbs, via its pidfd.

    It is not our child, so its exit status comes from the helper's own report on the
    control socket; ``returncode`` is only -9 (killed) when it died without reporting.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.returncode: int | None = None

    def fileno(self) -> int:
        """The pidfd: readable once the helper has exited."""
        return self._pidfd

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self._exited()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                import subprocess

                raise subprocess.TimeoutExpired(f"helper {self.pid}", timeout or 0)
            self._exited()
        assert self.returncode is not None
        return self.returncode

    def _exited(self) -> None:
        self.returncode = -signal.SIGKILL
        os.close(self._pidfd)
        self._pidfd = -1

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def __del__(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)


class ChildHelper(ForkedHelper):
    """A helper forked by this very process (:func:`fork_helper`): our child, so its
    ``returncode`` is its real exit status (reaped with waitpid), as for a Popen child."""

    def _exited(self) -> None:
        while True:
            try:
                _, status = os.waitpid(self.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:  # reaped by someone else: it died without a word
                status = signal.SIGKILL
                break
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)
        self._pidfd = -1


def fork_helper(ctl: int, stdio: tuple[int, int, int], pass_fds: tuple[int, ...]) -> ChildHelper:
    """Fork a helper from this process, as the zygote would: no second interpreter start.

    Only for a single-threaded caller (the CLI): a fork copies the calling thread alone, so
    a lock another thread held would stay held in the child. The child leaves the caller's
    session, drops its signal handlers, environment and every fd but ``ctl``, ``stdio`` (on
    0/1/2) and ``pass_fds`` (at their numbers), exactly what a freshly started helper has.
    """
    from nbcontainer.child import helper as init  # imported before the fork: paid once

    if threading.active_count() != 1:
        raise RuntimeError("fork_helper: the caller has other threads")
    # The caller's handlers (the CLI forwards signals to the container) must never run in
    # the child: signals wait, blocked, until the child has reset them (a pending one stays
    # the parent's: fork(2) does not copy pending signals).
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:
        try:
            os.setsid()
            for sig in handled:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.environ.clear()
            ctl = take_fds(ctl, stdio, pass_fds, pass_fds, close_others=True)
            init.rebind_stdio()
            init.main(ctl)
        finally:
            os._exit(125)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return ChildHelper(pid, pidfd)


class Zygote:
    """The supervisor's handle on its zygote process (one per supervisor, started lazily)."""

    _lock = threading.Lock()
    _current: Zygote | None = None
    #: Modules every zygote imports before it forks anything (a front end's payloads' imports,
    #: e.g. the -i/-o data format): each fork then finds them imported, not compiled anew.
    preloaded: set[str] = set()

    @classmethod
    def preload(cls, *modules: str) -> None:
        """Have zygotes started from now on import ``modules`` (by name: no import here)."""
        cls.preloaded.update(modules)

    def __init__(self) -> None:
        import json
        import subprocess

        from nbcontainer.runtime.sealed import sealed_interpreter

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The supervisor's module path, given explicitly: the zygote (and so every container
        # it forks) starts with an empty environment, so nothing of the supervisor's (a hub's
        # API token, cloud credentials) is in any /proc/N/environ inside.
        code = ("import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
                "from nbcontainer.runtime.zygote import serve; "
                "serve(int(sys.argv[1]), json.loads(sys.argv[3]))")
        path = [_package_parent(), *(p for p in sys.path if p)]
        env = {k: os.environ[k] for k in ("PYTHONHOME",) if k in os.environ}
        try:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), json.dumps(path),
                 json.dumps(sorted(self.preloaded))],
                executable=sealed_interpreter(), env=env,
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=None, close_fds=True,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.channel = Channel(ours)
        self._request_lock = threading.Lock()
        #: Called before the zygote stops (the spare pool discards its spare here).
        self.on_close: list[Callable[[], None]] = []

    @property
    def pid(self) -> int:
        """The zygote's pid."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the zygote runs."""
        return self.process.poll() is None

    def spawn(self, ctl: int, stdio: tuple[int, int, int],
              pass_fds: tuple[int, ...]) -> ForkedHelper:
        """Fork a helper that talks on ``ctl``, with ``stdio`` as its 0/1/2."""
        with self._request_lock:
            self.channel.send(Spawn(targets=list(pass_fds)), [ctl, *stdio, *pass_fds])
            try:
                reply, fds = self.channel.recv_with_fds()
            except ProtocolError as err:  # ChannelClosed included
                raise OSError(f"the zygote did not fork a helper: {err}") from None
        if not isinstance(reply, Spawned) or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError(f"the zygote answered {reply!r} instead of a helper's pid")
        return ForkedHelper(reply.pid, fds[0])

    def close(self) -> None:
        """Stop the zygote (closing its socket ends its loop), after its ``on_close`` hooks."""
        for hook in self.on_close:
            hook()
        self.channel.close()
        try:
            self.process.wait(2)
        except Exception:  # noqa: BLE001 - it is our child: end it by pid
            self.process.kill()
            self.process.wait()

    @classmethod
    def get(cls) -> Zygote:
        """This process's zygote, started on first use (restarted if it died)."""
        with cls._lock:
            if cls._current is None or not cls._current.alive():
                cls._current = Zygote()
            return cls._current

    @classmethod
    def running(cls) -> Zygote | None:
        """This process's zygote if one runs, without starting one."""
        current = cls._current
        return current if current is not None and current.alive() else None

    @classmethod
    def shutdown(cls) -> None:
        """Stop this process's zygote, if any."""
        with cls._lock:
            if cls._current is not None:
                cls._current.close()
                cls._current = None


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
