"""The supervisor side of a container: start, poll, wait, send_signal, terminate, kill, cleanup.

The verbs are jupyter_client's provisioner verbs. The caller's process is never forked: a
fresh single-threaded helper (:mod:`nbcontainer.child.helper`) does the namespace and mount
work, and this side answers its few questions (uid maps, cgroup attach) over a socket. Every way
out — normal exit, setup error, OOM kill, timeout, signal, interrupt — goes through
:meth:`ContainerProcess.cleanup`, which is idempotent.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from nbcontainer import cgroups
from nbcontainer.errors import (
    ContainerError,
    ContainerNotFoundError,
    ContainerStateError,
    NetworkError,
    NotRootError,
    SetupError,
    UsageError,
)
from nbcontainer.images import resolve
from nbcontainer.net import files as net_files
from nbcontainer.net import networks, ports
from nbcontainer.paths import ensure_dir, store_root
from nbcontainer.protocol import (
    Attached,
    Channel,
    ChannelClosed,
    Config,
    Console,
    Error,
    Exit,
    Go,
    Message,
    Pid,
    ProtocolError,
    Ready,
    Stdio,
    Userns,
    UsernsMapped,
)
from nbcontainer.runtime import hidden, lifecycle, seccomp, userns, users
from nbcontainer.runtime import state as state_mod
from nbcontainer.runtime.result import Result
from nbcontainer.runtime.sealed import sealed_interpreter
from nbcontainer.runtime.state import ContainerState
from nbcontainer.runtime.zygote import ForkedHelper, Zygote, fork_helper
from nbcontainer.spec import BUILTIN_IMAGES, ContainerSpec

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import IO, Any

    from nbcontainer.registry.progress import Progress
    from nbcontainer.runtime.spare import Spare

    StdStream = int | IO[Any] | None

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# -I -S: no site, no user paths, no environment: the fastest start for a stdlib-only helper.
_HELPER_CODE = (
    f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
    "from nbcontainer.child.helper import main; main(int(sys.argv[1]))"
)
SETUP_TIMEOUT = 30.0



_PENDING: set[threading.Thread] = set()
_PENDING_LOCK = threading.Lock()


def wait_for_cleanups(timeout: float | None = None) -> None:
    """Wait for background cleanups (see :meth:`ContainerProcess.cleanup`) to finish."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _PENDING_LOCK:
            pending = [t for t in _PENDING if t is not threading.current_thread()]
        if not pending:
            return
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        pending[0].join(remaining)
        if deadline is not None and time.monotonic() >= deadline:
            return


atexit.register(wait_for_cleanups, 30.0)


def _wait_readable(fd: int, timeout: float) -> bool:
    """True if ``fd`` became readable within ``timeout`` seconds."""
    return bool(select.select([fd], [], [], timeout)[0])


@contextlib.contextmanager
def _stdio_fds(stdio: tuple[StdStream, StdStream, StdStream]) -> Iterator[tuple[int, int, int]]:
    """Popen-style stdin/stdout/stderr as three fds to hand to the zygote."""
    opened: list[int] = []
    fds: list[int] = []
    try:
        for index, stream in enumerate(stdio):
            if stream is None:
                fds.append(index)  # inherit ours, as Popen does
            elif stream == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                opened.append(fd)
                fds.append(fd)
            elif stream == subprocess.STDOUT:
                fds.append(fds[1])
            elif isinstance(stream, int):
                fds.append(stream)
            else:
                fds.append(stream.fileno())
        yield fds[0], fds[1], fds[2]
    finally:
        for fd in opened:
            os.close(fd)


def _python_argv(code: str, forked: bool) -> list[str]:
    """Run Python source: in the zygote's forked interpreter ([]), or a fresh one (argv)."""
    return [] if forked else [sys.executable, "-u", "-c", code]


def _image_lock(root: Path, image: str) -> contextlib.AbstractContextManager[object]:
    """The image store's shared lock, for images that live in the store."""
    if image.split(":")[0] in ("host", "scratch", "none"):
        return contextlib.nullcontext()
    from nbcontainer.images.store import ImageStore

    return ImageStore(root).lock()


#: v1 has no count of hits of a cgroup's own limit: its peak usage within this much of the
#: limit says the limit was reached.
LIMIT_SLACK = 256 << 10


def oom_kills_since(base: cgroups.CgroupStats | None, now: cgroups.CgroupStats | None,
                    signum: int | None) -> tuple[int, str | None]:
    """OOM kills in the cgroup since ``base`` (None: since it was made), and their cause:
    ``limit`` (its own memory limit was reached) or ``outside`` (a parent cgroup's or the
    machine's OOM killer).

    v2 counts hits of the cgroup's own limit (``memory.events``: ``oom``), since ``base``.
    v1 does not: there the peak usage reaching the limit is the evidence (a peak from an
    earlier exec in the same container can make a later outside kill read as the limit's).
    On v1 before Linux 4.13, which counts no kills, a SIGKILL at the limit is taken for one.
    """
    if now is None:
        return 0, None
    if now.limit_hits is not None:
        own = now.memory_limit is not None and now.limit_hits > (
            (base.limit_hits or 0) if base is not None else 0)
    else:
        own = (now.memory_limit is not None and now.memory_peak is not None
               and now.memory_peak >= now.memory_limit - LIMIT_SLACK)
    if now.oom_counted:
        kills = max(0, now.oom_kills - (base.oom_kills if base is not None else 0))
    else:
        kills = 1 if signum == signal.SIGKILL and own else 0
    if not kills:
        return 0, None
    return kills, "limit" if own else "outside"


#: overlayfs stacks at most this many lower layers (OVL_MAX_STACK).
MAX_LOWER_LAYERS = 500


def _make_config(**values: Any) -> Config:
    """The helper's config; a value of the wrong type (a damaged record) is a SetupError."""
    try:
        return Config(**values)
    except ProtocolError as err:
        raise SetupError(f"cannot build the container's configuration: {err}") from None


def require_root() -> None:
    """Raise NotRootError unless running as root."""
    if os.geteuid() != 0:
        raise NotRootError(
            "nbcontainer needs root for namespaces, mounts and cgroups; run it as root "
            "(e.g. with sudo)"
        )


class ContainerProcess:
    """One helper-built process tree: a container's first process, or an exec into one.

    Subclasses build the helper config; this class runs the protocol and the lifecycle.
    """

    def __init__(self, *, stdin: StdStream = None, stdout: StdStream = None,
                 stderr: StdStream = None, pass_fds: Sequence[int] = (),
                 zygote: bool | None = None, fork_helper: bool = False) -> None:
        self._stdio = (stdin, stdout, stderr)
        self._pass_fds = tuple(pass_fds)
        self._use_zygote = zygote
        #: Without a zygote, fork the helper from this process (when single-threaded and the
        #: first process execs) instead of starting an interpreter: the CLI's choice.
        self._fork_helper = fork_helper
        self._helper: subprocess.Popen[bytes] | ForkedHelper | None = None
        self._helper_pidfd: int | None = None
        self._spare: Spare | None = None
        self._taken: Spare | None = None  # a spare taken for this container, not yet adopted
        self._eof = False
        self._chan: Channel | None = None
        self._status: int | None = None
        self._result: Result | None = None
        self._started_at = 0.0
        self._deadline: float | None = None
        self._timed_out = False
        self._cleaned = False
        self.pid: int | None = None
        #: ``run -t``: the master side of the container's terminal (the caller relays it)
        self.console: int | None = None
        self.cgroup: cgroups.Cgroup | None = None
        #: The first process was born in its cgroup (``Pid.placed``): no attach.
        self._placed = False
        #: The cgroup's counters when this run or exec began (None: a new cgroup, all zero).
        self._base: cgroups.CgroupStats | None = None
        self.timeout: float | None = None  # --timeout; subclasses set it
        #: Called once the child builds its root (cgroup known, nothing answered yet): work
        #: of the caller's that needs no answer from it, such as a notebook's meter, runs on
        #: this CPU while the child's setup runs on the other instead of after it.
        self.while_starting: Callable[[], None] | None = None

    # -- the parts subclasses provide -------------------------------------------------------

    def _config(self) -> Config:
        raise NotImplementedError

    def _on_userns(self, helper_pid: int, idmapped: bool | None) -> None:
        raise NotImplementedError

    def _on_pid(self, pid: int) -> None:
        """The container's first process exists and waits: attach it to the cgroup (unless
        it was born there: clone3 into a v2 cgroup)."""
        assert self.cgroup is not None
        if not self._placed:
            self.cgroup.attach(pid)
        self._on_pid_recorded(pid)

    def _on_pid_recorded(self, pid: int) -> None:
        """The first process is in its cgroup: note its pid where subclasses keep it."""

    def _before_attached(self, pid: int) -> None:
        """Last work before the child finishes its setup (its namespaces exist by now)."""

    def _during_setup(self) -> None:
        """The child has all it needs and builds its root: do what needs no answer from it
        (``while_starting``)."""
        if self.while_starting is not None:
            self.while_starting()

    def _on_ready(self) -> None:
        pass

    def _finish(self, result: Result) -> None:
        pass

    def _release(self) -> None:
        pass

    # -- lifecycle ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the helper, answer its questions until the payload is about to exec."""
        spare = self._spare
        if spare is not None:
            self._hand_over_stdio(spare)
        else:
            self._start_helper()
        chan = self._chan
        assert chan is not None
        self._started_at = time.monotonic()
        if self.timeout is not None:
            self._deadline = self._started_at + self.timeout
        chan.sock.settimeout(SETUP_TIMEOUT)
        chan.send(self._config())
        if spare is not None:
            # The spare's first process exists, in its cgroup already: let it go on at once.
            self.pid = spare.pid
            self._on_pid_recorded(self.pid)
            chan.send(Go())
            with self._child_first():
                self._before_attached(self.pid)
            chan.send(Attached())
            self._during_setup()
        while True:
            msg = self._recv()
            if isinstance(msg, Userns):
                # The child's pid as the host sees it: its own getpid() says 1 in a new
                # PID namespace.
                assert self.pid is not None
                try:
                    self._on_userns(self.pid, msg.idmapped)
                except OSError as err:
                    raise SetupError(f"cannot write the user namespace maps of pid "
                                     f"{self.pid}: {err.strerror}") from err
                chan.send(UsernsMapped())
            elif isinstance(msg, Pid) and self.pid is None:
                self.pid = msg.pid
                self._placed = msg.placed
                # The child builds its root while we attach it; it waits for Attached
                # before anything of the payload runs.
                chan.send(Go())
                with self._child_first():
                    self._on_pid(self.pid)
                    self._before_attached(self.pid)
                chan.send(Attached())
                self._during_setup()
            elif isinstance(msg, Console):
                continue  # the terminal's master, kept by _recv
            elif isinstance(msg, Ready):
                break
            elif isinstance(msg, Error):
                raise SetupError(msg.message)
            elif isinstance(msg, Exit):
                self._status = msg.status
                raise SetupError("the container's first process exited during setup")
            else:
                raise SetupError(f"the container helper said {msg.op!r} during setup")
        chan.sock.settimeout(None)
        self._on_ready()

    @contextlib.contextmanager
    def _child_first(self) -> Iterator[None]:
        """The supervisor's steps while the child sets itself up (the cgroup attach, the
        veth into its network namespace): when one fails, the child's own error wins.

        The child builds its root while we attach it, so a child that failed (an overlay
        mount refused, a volume's mount point that cannot be made) has sent its ``Error``
        and exited, and our next step on its pid then fails with ESRCH, which says nothing
        of why. The child sends its ``Error`` before it exits, so by the time its pid is
        gone the sentence is queued on the channel: read it and report that instead.
        """
        try:
            yield
        except (ContainerError, OSError) as err:
            told = self._child_error(timeout=1.0)
            if told is not None:
                raise SetupError(told) from err
            raise

    def _child_error(self, timeout: float) -> str | None:
        """The child's ``Error`` sentence if it sent one (within ``timeout``), else None."""
        chan = self._chan
        if chan is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait_readable(chan.fileno(), remaining):
                return None
            try:
                msg = chan.recv()
            except (ChannelClosed, ProtocolError, OSError):
                return None
            if isinstance(msg, Error):
                return msg.message
            if isinstance(msg, Exit):
                self._status = msg.status
                return None  # the child died without a word (killed): ours is the news

    def _hand_over_stdio(self, spare: Spare) -> None:
        """Give an adopted spare's first process this container's stdio and passed fds."""
        self._chan = spare.channel
        self._helper = spare.helper
        with _stdio_fds(self._stdio) as fds:
            try:
                spare.channel.send(Stdio(targets=list(self._pass_fds)), [*fds, *self._pass_fds])
            except OSError as err:
                raise SetupError(f"the spare container helper is gone: {err}") from err

    def _start_helper(self) -> None:
        """Fork a helper from the zygote, or start a fresh interpreter as one."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._chan = Channel(parent_sock)
        stdin, stdout, stderr = self._stdio
        zygote = self._zygote()
        try:
            if zygote is not None:
                with _stdio_fds(self._stdio) as fds:
                    try:
                        self._helper = zygote.spawn(child_sock.fileno(), fds, self._pass_fds)
                    except OSError as err:
                        raise SetupError(f"the zygote could not fork a helper: {err}") from err
            elif self._fork_helper and not self._stays_python() \
                    and subprocess.PIPE not in self._stdio and threading.active_count() == 1:
                # A single-threaded caller (the CLI) forks the helper itself, as a zygote
                # does: no second interpreter start (tens of ms).
                with _stdio_fds(self._stdio) as fds:
                    self._helper = fork_helper(child_sock.fileno(), fds, self._pass_fds)
            else:
                # A first process that stays Python (an init, a Python body) runs a sealed
                # copy of the interpreter: see runtime/sealed.py.
                stays_python = self._stays_python()
                self._helper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _HELPER_CODE, str(child_sock.fileno())],
                    executable=sealed_interpreter() if stays_python else None,
                    stdin=stdin, stdout=stdout, stderr=stderr,
                    pass_fds=(child_sock.fileno(), *self._pass_fds),
                    close_fds=True, start_new_session=True, env={},
                )
                self._helper_pidfd = os.pidfd_open(self._helper.pid)
        finally:
            child_sock.close()

    def _stays_python(self) -> bool:
        """True if the container's first process stays Python (an init, a Python body): its
        helper must then be a sealed interpreter (runtime/sealed.py), never a fork of ours."""
        return bool(self._config().init or self._config().python is not None)

    def _zygote(self) -> Zygote | None:
        """The zygote to fork the helper from, or None to start a fresh interpreter."""
        if self._use_zygote is False or subprocess.PIPE in self._stdio:
            return None
        if self._use_zygote:
            return Zygote.get()
        return Zygote.running()

    def _recv(self) -> Message:
        """The helper's next message during setup; SetupError in words if there is none."""
        assert self._chan is not None
        try:
            msg, fds = self._chan.recv_with_fds()
            if isinstance(msg, Console) and fds and self.console is None:
                self.console = fds.pop(0)
            for fd in fds:  # only a Console message carries one
                os.close(fd)
            return msg
        except TimeoutError:
            raise SetupError(f"container setup did not finish within {SETUP_TIMEOUT:g} s") \
                from None
        except ChannelClosed:
            code = self._helper.wait() if self._helper else None
            raise SetupError(f"the container helper exited during setup (status {code})") \
                from None
        except ProtocolError as err:
            raise SetupError(f"the container helper sent a malformed message: {err}") from None

    def _drain_status(self) -> None:
        """Read what the helper side said since: the first exit report is the payload's.

        The socket is reachable from inside the container (a Python payload reports its own
        end on it), so anything else on it, malformed or not, is skipped, never trusted.
        """
        if self._chan is None or self._eof:
            return
        self._chan.sock.setblocking(False)
        while True:
            try:
                msg = self._chan.recv()
            except ChannelClosed:
                self._eof = True
                return
            except ProtocolError:
                continue
            except (BlockingIOError, OSError):
                return
            if isinstance(msg, Exit) and self._status is None:
                self._status = msg.status

    def wait_fds(self) -> list[int]:
        """File descriptors that become readable when the payload may have ended.

        For an event loop (the magics' output pump): poll these with the output pipes, then
        call :meth:`poll`. They are the control socket, where the payload's exit is
        reported (a Python payload reports it before its namespaces are torn down), and a
        pidfd of the helper.
        """
        fds = []
        if self._chan is not None and not self._eof:
            fds.append(self._chan.fileno())
        helper = self._helper_fd()
        if helper is not None:
            fds.append(helper)
        return fds

    def _ended(self) -> bool:
        """True once the payload's end was reported or the helper is gone."""
        self._drain_status()
        if self._status is not None:
            return True
        assert self._helper is not None
        return self._helper.poll() is not None

    def poll(self) -> Result | None:
        """The result if the payload has ended, else None (enforces ``--timeout``)."""
        if self._result is not None:
            return self._result
        if self._helper is None:
            return None
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._expire()
        if not self._ended():
            return None
        return self._conclude()

    def wait(self, timeout: float | None = None) -> Result:
        """Wait for the end (raising subprocess.TimeoutExpired after ``timeout`` seconds)."""
        if self._result is not None:
            return self._result
        if self._helper is None:
            raise ContainerStateError("the container was not started")
        limit = None if timeout is None else time.monotonic() + timeout
        while not self._ended():
            waits = [t for t in (self._deadline, limit) if t is not None]
            remaining = None if not waits else max(0.0, min(waits) - time.monotonic())
            if select.select(self.wait_fds(), [], [], remaining)[0]:
                continue
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._expire()
                continue
            if limit is not None and time.monotonic() >= limit:
                raise subprocess.TimeoutExpired("container", timeout or 0)
        return self._conclude()

    def _expire(self) -> None:
        """``--timeout`` ran out: kill the whole process tree."""
        self._timed_out = True
        self._deadline = None
        self._kill_tree()

    def _kill_tree(self) -> None:
        raise NotImplementedError

    def _conclude(self) -> Result:
        assert self._helper is not None
        self._drain_status()
        wall = time.monotonic() - self._started_at
        status = self._status
        if status is None:
            code = self._helper.wait()
            status = (-code) if code < 0 else (code << 8)
        stats = self._final_stats()
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        kills, cause = oom_kills_since(self._base, stats, signum)
        if self._timed_out:
            exit_code = 124
        elif signum is not None:
            exit_code = 128 + signum
        else:
            exit_code = os.WEXITSTATUS(status)
        self._result = Result(
            exit_code=exit_code,
            signal=signum,
            oom_killed=bool(kills) and not self._timed_out,
            oom_cause=None if self._timed_out else cause,
            timed_out=self._timed_out,
            wall_time=wall,
            cpu_time=None if not stats or stats.cpu_usage_ns is None
            else stats.cpu_usage_ns / 1e9,
            memory_peak=stats.memory_peak if stats else None,
            memory_limit=stats.memory_limit if stats else None,
            oom_kills=kills,
            pids_peak=stats.pids_peak if stats else None,
            timeout=self.timeout,
        )
        self._finish(self._result)
        return self._result

    def _final_stats(self) -> cgroups.CgroupStats | None:
        if self.cgroup is None:
            return None
        try:
            return self.cgroup.stats()
        except ContainerError:
            return None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the container's first process (the payload, or our init)."""
        if self.pid is None or self._result is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to the first process."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the whole process tree at once."""
        if self._result is None:
            self._kill_tree()

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> Result:
        """``sig``, then kill everything if it has not ended after ``grace`` seconds."""
        self.send_signal(sig)
        try:
            return self.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait()

    def cleanup(self, background: bool = False) -> None:
        """Remove everything this process tree made. Idempotent; every exit path calls it.

        With ``background``, the removal (waiting for the namespaces' teardown, the cgroup,
        the directories) happens in a thread, so a caller that already has its
        :class:`Result` (a notebook cell) returns at once; :func:`wait_for_cleanups` and
        interpreter exit wait for it.
        """
        if self._cleaned:
            return
        self._cleaned = True
        if background and self._result is not None:
            thread = threading.Thread(target=self._cleanup_now, name="nbcontainer-cleanup",
                                      daemon=True)
            with _PENDING_LOCK:
                _PENDING.add(thread)
            thread.start()
            return
        self._cleanup_now()

    def _cleanup_now(self) -> None:
        try:
            if self._helper is not None and self._helper.poll() is None:
                # A payload that reported its end is being torn down: give it a moment.
                helper_fd = self._helper_fd()
                if (self._result is None or helper_fd is None
                        or not _wait_readable(helper_fd, 2.0)):
                    self._kill_tree()
                try:
                    self._helper.wait(5)
                except subprocess.TimeoutExpired:
                    self._helper.kill()  # by pid (Popen child) or pidfd (forked by the zygote)
                    self._helper.wait()
            if self._helper is not None and self._result is None:
                with contextlib.suppress(Exception):
                    self._conclude()
        finally:
            if self._chan is not None:
                self._chan.close()
                self._chan = None
            if self._helper_pidfd is not None:
                os.close(self._helper_pidfd)
                self._helper_pidfd = None
            if self.console is not None:
                with contextlib.suppress(OSError):
                    os.close(self.console)
                self.console = None
            self._release()
            with _PENDING_LOCK:
                _PENDING.discard(threading.current_thread())

    def _helper_fd(self) -> int | None:
        """A pidfd of the helper while one is open (ours, or the zygote-forked helper's)."""
        if self._helper_pidfd is not None:
            return self._helper_pidfd
        if isinstance(self._helper, ForkedHelper) and self._helper.returncode is None:
            return self._helper.fileno()
        return None

    def __enter__(self) -> ContainerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class Container(ContainerProcess):
    """A container: new namespaces, a new cgroup, an overlay root, its first process.

    Parameters
    ----------
    spec
        What to run and how (:func:`nbcontainer.spec.make_spec`).
    root
        Store root (default ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``).
    stdin, stdout, stderr
        As for :class:`subprocess.Popen` (``PIPE``, a file, an fd, or None to inherit).
    log
        Send stdout and stderr to the container's log file (``nbcontainer logs``).
    keep
        Keep the container (its record and upper directory) after it ends, for ``ps -a``,
        ``logs`` and ``commit``, until ``nbcontainer rm``. Default False: :meth:`cleanup`
        removes everything, its name included (jupyter_client's meaning of cleanup), so a
        program can run again with the same name. The CLI keeps a named ``run`` as Docker does.
    cgroup_parent
        Where its cgroup goes; default: under the caller's own cgroup.
    owner
        A tag in its record naming who owns it (e.g. a kernel), for cleanup.
    idle
        Run only an idle init, not the image's default command, when the spec has no command
        (a named notebook container: each cell is an exec into it).
    give_to
        (host path, uid inside) pairs: each path is chowned, before the payload starts, to
        that uid as the host sees it (its mapped id with a user namespace), e.g. a kernel's
        run directory mounted inside.
    fork_helper
        Without a zygote, fork the helper from this process instead of starting a fresh
        interpreter, when this process is single-threaded and the first process execs its
        payload (the CLI: saves an interpreter start per container). Otherwise ignored.
    """

    def __init__(self, spec: ContainerSpec, *, root: str | os.PathLike[str] | None = None,
                 stdin: StdStream = None, stdout: StdStream = None, stderr: StdStream = None,
                 pass_fds: Sequence[int] = (), log: bool = False, keep: bool = False,
                 cgroup_parent: str | None = None, owner: str | None = None,
                 detached: bool = False, idle: bool = False, python: str | None = None,
                 zygote: bool | None = None, give_to: Sequence[tuple[str, int]] = (),
                 fork_helper: bool = False) -> None:
        super().__init__(stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                         zygote=zygote, fork_helper=fork_helper)
        self.spec = spec
        self.give_to = tuple(give_to)
        self.idmap: userns.IdMap | None = None  # with a user namespace: its id range
        self.python = python
        self.idle = idle
        #: Receives the events of a pull ``--pull`` starts (default: lines on stderr).
        self.pull_progress: Progress | None = None
        self.root = store_root(root)
        self.keep = bool(keep)
        self.log = log
        self.owner = owner
        self.detached = detached
        self.timeout = spec.timeout
        self.cgroup_parent = cgroup_parent or os.environ.get("NBCONTAINER_CGROUP_PARENT")
        self.state: ContainerState | None = None
        self._image_layers: tuple[str, ...] = ()
        self._exec_config: dict[str, Any] = {}
        self._seccomp: str | None = None
        self._account: users.User | None = None
        self._device_rules: tuple[cgroups.DeviceRule, ...] = cgroups.DEFAULT_RULES
        self._log_file: IO[bytes] | None = None
        self._network: dict[str, Any] | None = None  # networks.attach's lease and veth
        self._publisher: ports.Publisher | None = None  # -p: bound before anything is made
        self._join_net: int | None = None  # --net container:NAME: that container's pid

    @property
    def id(self) -> str:
        """The container's 12-hex-digit id."""
        if self.state is None:
            raise ContainerStateError("the container was not started")
        return self.state.id

    @property
    def name(self) -> str:
        """Its name, or its id."""
        return self.spec.name or self.id

    @property
    def dir(self) -> Path:
        """Its directory in the store."""
        return state_mod.container_path(self.root, self.id)

    @property
    def upper_dir(self) -> Path:
        """The overlay's upper directory: everything the container wrote."""
        return self.dir / "upper"

    def start(self) -> Container:
        """Create the cgroup and the namespaces, set up the root, start the command.

        Raises a :class:`~nbcontainer.errors.ContainerError` saying what went wrong; nothing
        is left behind then.
        """
        require_root()
        spec = self.spec
        # compiled once per profile and caps (cached in this process and in the store)
        self._seccomp = seccomp.filter_for(spec, cache=self.root / "cache")
        for vol in spec.volumes:
            if not os.path.exists(vol.host):
                raise UsageError(
                    f"-v: host path {vol.host!r} does not exist; create it first or fix the path"
                )
            if not spec.has_rootfs and not os.path.exists(vol.container):
                # Without a root filesystem of its own, a mount point would be created on the
                # host's filesystem; nbcontainer never changes the host.
                raise UsageError(
                    f"-v: with --image none the container path {vol.container!r} must already "
                    "exist (it is the host's own directory); choose an existing one, or an image"
                )
        ensure_dir(self.root, 0o711)
        if spec.has_rootfs and spec.image.removesuffix(":latest") not in BUILTIN_IMAGES and (
                not spec.image.startswith("sha256:")):
            # --pull: a registry image missing from the store is pulled before anything of the
            # container exists (a failed pull leaves nothing behind). Built-ins never are, and
            # do not even import the registry code.
            from nbcontainer.registry.policy import ensure_image

            ensure_image(spec.image, spec.pull, spec.platform, self.root, self.pull_progress)
        # Until the record lists the image's layers, `rmi`/`gc` must not delete them: hold the
        # image store's shared lock from resolving the name to saving the record.
        with _image_lock(self.root, spec.image):
            image = resolve(spec.image, self.root) if spec.has_rootfs else None
            # runc's device allowlist plus each --device (all devices when privileged).
            self._device_rules = cgroups.ALLOW_ALL if spec.privileged else (
                cgroups.DEFAULT_RULES + tuple(cgroups.rule_for(d.host, d.permissions)
                                              for d in spec.devices))
            user_text = spec.user or (image.config.user if image is not None else "")
            # Resolved in the image's own passwd and group files (the host's for --image none).
            self._account = users.resolve(user_text, image.layers if image else ("/",),
                                          spec.image) if user_text else None
            command = list(spec.command) or (list(image.config.entrypoint + image.config.cmd)
                                             if image and not self.idle else [])
            if self.python is not None:
                command = _python_argv(self.python, self._zygote() is not None)
            if not command and not spec.init and self.python is None:
                raise UsageError("no command given and the image has no default command; "
                                 "give one, e.g. `nbcontainer run busybox sh -c 'echo hi'`")
            # A taken port fails here, before the container's record exists.
            self._publisher = ports.Publisher(spec.publish) if spec.publish else None
            # A spare whose root is built ahead gives the container its directory.
            self._taken = self._take_spare(image)
            try:
                self.state = self._reserve(command)
            except BaseException:
                self._close_publisher()
                if self._taken is not None:
                    self._taken.discard()
                    self._taken = None
                raise
            try:
                self._prepare(image, command)
            except BaseException:
                self._cleaned = False
                self.cleanup()
                raise
        try:
            self._spawn()
        except BaseException:
            self._cleaned = False
            self.cleanup()
            raise
        return self

    def _prepare(self, image: Any, command: list[str]) -> None:
        """Make the container's directories, cgroup, environment and helper config."""
        assert self.state is not None
        spec = self.spec
        cdir = self.dir
        if "user" in spec.effective_namespaces():
            # root inside is this range's first id: its own range where /etc/subuid allows
            self.idmap = userns.allocate(self.root, self.state.id)
            self.state.userns = self.idmap.record()
        if image is not None:
            for sub in ("upper", "work"):  # a spare's root built ahead has them already
                (cdir / sub).mkdir(mode=0o755, exist_ok=self._taken is not None
                                   and self._taken.root is not None)
            if self.idmap is not None:
                # the overlay's root and what root inside writes: owned by root inside
                os.chown(cdir / "upper", self.idmap.uid, self.idmap.gid)
            self._image_layers = tuple(image.layers)
        for path, uid in self.give_to:
            os.chown(path, uid if self.idmap is None else self.idmap.host_uid(uid), -1)
        if self.log:
            self._log_file = open(cdir / "log", "ab", buffering=0)  # noqa: SIM115
            self._stdio = (self._stdio[0], self._log_file, self._log_file)
        self._spare = self._adopt_spare()
        if self._spare is None:
            self.cgroup = cgroups.create_cgroup(self.state.id, spec.limits,
                                                devices=self._device_rules,
                                                parent=self.cgroup_parent)
        hostname = spec.hostname or spec.name or self.state.id
        env: dict[str, str] = {}
        if image is not None:
            env.update(dict(image.config.env))
        else:
            env["PATH"] = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.setdefault("HOSTNAME", hostname)
        env.setdefault("HOME", self._account.home if self._account else "/root")
        env.update(dict(spec.env))
        if spec.tty and "TERM" not in env:
            env["TERM"] = "xterm"
        workdir = spec.workdir or (image.config.workdir if image is not None else os.getcwd())
        user = None if self._account is None else [self._account.uid, self._account.gid]
        caps = sorted(spec.capabilities())
        namespaces = sorted(spec.effective_namespaces())
        volumes = [[v.host, v.container, v.readonly] for v in spec.volumes]
        files: list[list[object]] = []
        if spec.network is not None:
            names = [hostname] + ([spec.name] if spec.name and spec.name != hostname else [])
            directory = cdir if image is not None else None
            self._network, files = self._join_network(spec.network, names, directory)
            self._network["ports"] = [str(p) for p in spec.publish]
            self.state.network = self._network
            volumes = files + volumes  # a -v over /etc/hosts still wins
        elif spec.net_container is not None:
            self._join_net, files = self._network_of(spec.net_container,
                                                     image is not None)
            volumes = files + volumes
        layers = list(self._image_layers)
        if files and image is not None and layers != ["/"] and len(layers) < MAX_LOWER_LAYERS:
            # The mount points, above the image. Not over the host's / (it has them, and
            # overlayfs refuses a layer inside another layer of the same mount: ELOOP), nor over
            # an image that uses every lower layer an overlay can stack (its mount points then
            # land in the upper layer).
            layers.append(net_files.init_layer(cdir))
        hide = (hidden.exposed(hidden.host_secrets(self.root), (v.container for v in spec.volumes))
                if image is not None and image.layers == ("/",) else [])
        self._exec_config = {
            "env": env, "workdir": workdir, "user": user, "caps": caps,
            "privileged": spec.privileged, "namespaces": namespaces,
            "no_new_privs": spec.no_new_privs(), "seccomp": self._seccomp,
        }
        assert self.cgroup is not None
        self._config_data = _make_config(
            mode="run",
            namespaces=namespaces,
            rootfs=None if image is None else {
                "dir": str(cdir), "layers": layers, "hide": hide,
                "prepared": self._spare is not None and self._spare.root is not None,
                "idmap": None if self.idmap is None
                else [self.idmap.uid, self.idmap.gid, self.idmap.size],
            },
            volumes=volumes,
            devices=[[d.host, d.container] for d in spec.devices],
            hostname=hostname if "uts" in namespaces else None,
            argv=command if command else [],
            python=None if self.python is None or command else self.python,
            env=env,
            workdir=workdir,
            user=user,
            caps=caps,
            privileged=spec.privileged,
            no_new_privs=spec.no_new_privs(),
            seccomp=self._seccomp,
            init=spec.init,
            detached=self.detached,
            tty=spec.tty and not self.detached,
            # An adopted spare's side of the pair is configured already (networks.attach_spare).
            net=None if self._network is None or self._network.get("configured") else {
                k: self._network[k] for k in ("ifname", "address", "prefixlen", "gateway")},
            join_net=self._join_net,
            cgroup=self.cgroup.paths.get("unified"),
            cgroup_tasks=self.cgroup.thread_files(),
        )
        st = self.state
        st.cgroup = self.cgroup.name
        st.cgroup_parent = self.cgroup_parent
        st.cgroup_paths = dict(self.cgroup.paths)
        st.namespaces = namespaces
        st.layers = list(self._image_layers)
        st.exec_config = self._exec_config
        st.owner = self.owner
        st.supervisor_pid = os.getpid()
        st.supervisor_start = state_mod.process_start_time(os.getpid())
        state_mod.save(self.root, st)

    def _config(self) -> Config:
        return self._config_data

    def _join_network(self, network: str, names: list[str], directory: Path | None,
                      ) -> tuple[dict[str, Any], list[list[object]]]:
        """The container's lease on ``network`` and its /etc files (as volumes).

        An adopted spare's veth pair is in place already: only its lease moves to this
        container. Should that lease have been taken back meanwhile (a gc), the spare's veth
        goes and the container is plugged in anew.
        """
        assert self.state is not None
        prepared = None if self._spare is None else self._spare.attachment
        if prepared is not None:
            try:
                files = networks.adopt(self.root, prepared, prepared["spare"], self.state.id,
                                       names, directory, self.state.user)
                attachment = {k: v for k, v in prepared.items() if k != "spare"}
                return {**attachment, "plugged": True}, files
            except NetworkError:
                networks.release(prepared, prepared["spare"])
        return networks.attach(self.root, network, self.state.id, names, directory,
                               self.state.user)

    def _network_of(self, name: str, rootfs: bool) -> tuple[int, list[list[object]]]:
        """``--net container:NAME``: the pid whose network namespace to join, and that
        container's hosts and resolv.conf to bind-mount (Docker shares them the same way)."""
        try:
            target = state_mod.find(self.root, name)
        except ContainerNotFoundError:
            raise UsageError(f"--net container:{name}: no such container; start it first "
                             "(see `nbcontainer ps`)") from None
        if not target.is_running() or target.pid is None or "net" not in target.namespaces:
            why = "has no network namespace of its own" if target.is_running() else \
                "is not running"
            raise UsageError(f"--net container:{name}: {target.name or target.short} {why}; "
                             "give a running container started with --net bridge or none")
        shared = state_mod.container_path(self.root, target.id)
        files = [[str(shared / f), f"/etc/{f}", False] for f in ("hosts", "resolv.conf")
                 if rootfs and (shared / f).exists()]
        return target.pid, files

    def _close_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def _reserve(self, command: list[str]) -> state_mod.ContainerState:
        """The container's record and directory: the taken spare's, if its root is built
        ahead (should gc have taken that directory, the spare goes and a new one is made)."""
        spec = self.spec
        prepared = None if self._taken is None else self._taken.root
        if prepared is not None:
            try:
                return state_mod.reserve(self.root, spec.name, spec.image, command,
                                         auto_remove=not self.keep,
                                         spare_dir=prepared.directory)
            except OSError:
                assert self._taken is not None
                self._taken.discard()
                self._taken = None
        return state_mod.reserve(self.root, spec.name, spec.image, command,
                                 auto_remove=not self.keep)

    def _take_spare(self, image: Any) -> Spare | None:
        """The zygote's spare, if it fits this container (see :meth:`_adopt_spare`).

        Only for a container like the ones a notebook starts cell after cell: forked by the
        zygote, attached and not detached, under the default cgroup parent. On the host image
        (not privileged, no user namespace, no devices) the spare's root may be built ahead.
        """
        zygote = self._zygote()
        spec = self.spec
        if zygote is None or self.detached or self.cgroup_parent is not None \
                or spec.net_container is not None:
            return None
        # Imported here: a CLI start (no zygote) never needs the spares' module (~4 ms).
        from nbcontainer.runtime.spare import RootWish, spares

        namespaces = spec.effective_namespaces()
        wish = None
        if image is not None and image.layers == ("/",) and not spec.privileged \
                and not spec.devices and "user" not in namespaces:
            wish = RootWish(self.root, tuple(v.container for v in spec.volumes))
        return spares(zygote).take(spec.limits, namespaces, spec.network, wish,
                                   tuple(self._device_rules) == cgroups.DEFAULT_RULES)

    def _adopt_spare(self) -> Spare | None:
        """The spare taken for this container, its cgroup renamed and limited for it."""
        spare, self._taken = self._taken, None
        if spare is None:
            return None
        assert self.state is not None
        try:
            self.cgroup = spare.adopt(self.state.id, self.spec.limits, self._device_rules)
        except (OSError, ContainerError):
            # e.g. a limit this host cannot apply: the normal path says why. A root built
            # ahead is this container's directory by now: it stays (its overlay went with the
            # spare's mount namespace; the normal path mounts its own).
            spare.discard(keep_directory=True)
            return None
        return spare

    def _on_userns(self, pid: int, idmapped: bool | None) -> None:
        """Write the uid/gid maps of the child's new user namespace (user_namespaces(7))."""
        idmap = self.idmap or userns.SHARED
        for name, start in (("uid_map", idmap.uid), ("gid_map", idmap.gid)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {start} {idmap.size}\n")
        if idmapped is not None and self.state is not None and self.state.userns is not None:
            self.state.userns["idmapped"] = idmapped
        if idmapped is False:
            userns.say_not_idmapped()

    def _on_pid_recorded(self, pid: int) -> None:
        assert self.state is not None
        self.state.pid = pid
        self.state.pid_start = state_mod.process_start_time(pid)

    def _before_attached(self, pid: int) -> None:
        """On a network: the veth pair into the first process's network namespace."""
        if self._network is not None and not self._network.get("plugged"):
            try:
                networks.plug(self._network, pid)
            except ContainerError as err:
                raise SetupError(str(err)) from err

    def _during_setup(self) -> None:
        """A container that removes itself when it ends (a cell's) is recorded as running
        now, while its first process builds its root on the other CPU; should that fail, its
        record goes with it. A kept one says so only once it runs (``ps`` shows it created
        until then, as Docker's does)."""
        assert self.state is not None
        if not self.keep:
            self._mark_running()
        super()._during_setup()

    def _mark_running(self) -> None:
        assert self.state is not None
        self.state.status = "running"
        self.state.started = time.time()
        state_mod.save(self.root, self.state)

    def _on_ready(self) -> None:
        assert self.state is not None
        if self._publisher is not None and self._network is not None:
            self._publisher.start(self._network["address"])
        if self.state.status != "running":
            self._mark_running()

    def _kill_tree(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill_all()
        elif self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _finish(self, result: Result) -> None:
        """The first process ended: nothing of the container may outlive it."""
        if self.keep and self.state is not None and self.dir.exists():
            self.state.status = "exited"
            self.state.exit_code = result.exit_code
            self.state.exit_reason = result.describe()
            self.state.finished = time.time()
            with contextlib.suppress(OSError):
                state_mod.save(self.root, self.state)

    def _release(self) -> None:
        self._close_publisher()
        if self._taken is not None:  # the start failed between taking and adopting it
            self._taken.discard(keep_directory=True)  # the directory is this container's
            self._taken = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        try:
            lifecycle.teardown(self.cgroup,
                               None if self.state is None or self.keep else self.dir,
                               root=self.root, state=self.state)
        finally:
            zygote = self._zygote() if self._spare is not None else None
            if zygote is not None:
                from nbcontainer.runtime.spare import spares

                spares(zygote).refill()  # the next cell's spare, now that this one has ended

    def stats(self) -> cgroups.CgroupStats:
        """Current resource figures of the container's cgroup."""
        if self.cgroup is None:
            raise ContainerStateError("the container was not started")
        return self.cgroup.stats()

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        assert self.cgroup is not None and self.state is not None
        lifecycle.set_paused(self.root, self.state, self.cgroup, True)

    def unpause(self) -> None:
        """Thaw a paused container."""
        assert self.cgroup is not None and self.state is not None
        lifecycle.set_paused(self.root, self.state, self.cgroup, False)

    def exec(self, command: Sequence[str], **kwargs: Any) -> Exec:
        """Start ``command`` inside this running container; returns the started :class:`Exec`."""
        assert self.state is not None
        return Exec(self.state, list(command), root=self.root, **kwargs).start()


class Exec(ContainerProcess):
    """A process started inside a running container: its namespaces, root and cgroup."""

    def __init__(self, target: ContainerState, command: list[str], *,
                 root: str | os.PathLike[str] | None = None, stdin: StdStream = None,
                 stdout: StdStream = None, stderr: StdStream = None,
                 pass_fds: Sequence[int] = (), env: dict[str, str] | None = None,
                 workdir: str | None = None, user: str | None = None,
                 timeout: float | None = None, python: str | None = None,
                 zygote: bool | None = None, fork_helper: bool = False) -> None:
        super().__init__(stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                         zygote=zygote, fork_helper=fork_helper)
        self.python = python
        if not command and python is None:
            raise UsageError("exec: give a command to run, e.g. `nbcontainer exec web sh`")
        self.target = target
        self.root = store_root(root)
        self.command = command
        self.env = env or {}
        self.workdir = workdir
        self.user = user
        self.timeout = timeout

    def start(self) -> Exec:
        """Join the container and start the command."""
        require_root()
        tgt = self.target
        if not tgt.is_running():
            raise ContainerStateError(
                f"container {tgt.short} is not running ({tgt.status}); start a new one with "
                "`nbcontainer run`"
            )
        if tgt.status == "paused":
            raise ContainerStateError(f"container {tgt.short} is paused; unpause it first")
        assert tgt.cgroup is not None
        self.cgroup = tgt.open_cgroup()
        # OOM kills are this exec's when they happen after it starts: an earlier kill in the
        # same container must not make this exec's failure read as one.
        self._base = self._final_stats()
        cfg = tgt.exec_config
        env = dict(cfg.get("env", {}))
        user = cfg.get("user")
        if self.user:
            account = users.resolve(self.user, tgt.layers or ("/",), tgt.image)
            user = [account.uid, account.gid]
            env["HOME"] = account.home
        env.update(self.env)
        argv, python = self.command, None
        if self.python is not None:
            argv = _python_argv(self.python, self._zygote() is not None)
            python = None if argv else self.python
        self._config_data = _make_config(
            mode="exec",
            join_pid=tgt.pid,
            join=list(tgt.namespaces),
            namespaces=list(tgt.namespaces),
            argv=argv,
            python=python,
            env=env,
            workdir=self.workdir or cfg.get("workdir") or "/",
            user=user,
            caps=cfg.get("caps", []),
            privileged=cfg.get("privileged", False),
            # the container's own filter, as compiled when it was created
            no_new_privs=cfg.get("no_new_privs", not cfg.get("privileged", False)),
            seccomp=cfg.get("seccomp"),
            cgroup=self.cgroup.paths.get("unified"),
            cgroup_tasks=self.cgroup.thread_files(),
        )
        try:
            self._spawn()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _config(self) -> Config:
        return self._config_data

    def _on_userns(self, pid: int,  # pragma: no cover - exec joins, never creates
                   idmapped: bool | None) -> None:
        raise SetupError("exec does not create a user namespace")

    def _kill_tree(self) -> None:
        # Only this exec's process: the container's other processes are not ours to end.
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _release(self) -> None:
        """Nothing to remove: the cgroup, mounts and namespaces belong to the container."""


def run(spec: ContainerSpec, **kwargs: Any) -> Result:
    """Run a container to its end and remove it (unless named); return its :class:`Result`.

    Keyword arguments are those of :class:`Container`. KeyboardInterrupt kills the container
    and is re-raised after cleanup.
    """
    container = Container(spec, **kwargs)
    container.start()
    try:
        return container.wait()
    finally:
        container.cleanup()
