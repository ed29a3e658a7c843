"""The container side: one container running a stock ipykernel, and the sockets that reach it.

Each container generation gets a fresh directory under the kernel's run directory, bind-mounted
at the same path inside, holding the inner connection file and the kernel's ``ipc`` sockets.
Unix sockets reached through a bind mount work whatever network namespace the container has,
so the kernel works with ``--net none`` too, and a fresh generation never races the old one for
TCP ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import zmq

from nbcontainer.errors import ContainerError
from nbcontainer.runtime.container import Container
from nbcontainer.runtime.result import Result
from nbcontainer.spec import ContainerSpec, Volume

#: The identity of every socket the relay opens towards the inner kernel. ipykernel sends an
#: ``input_request`` on its stdin ROUTER to the identities of the *shell* request, so the shell
#: and stdin sockets must share one identity (jupyter_client does the same on the outside).
PROXY_IDENTITY = b"nbcontainer-kernel-proxy"
PORTS = {"shell": 1, "iopub": 2, "stdin": 3, "control": 4, "hb": 5}
#: Environment passed from the kernel's own environment into the container.
PASS_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "JPY_SESSION_NAME")
LOG_TAIL = 2000


def _uid_inside(spec: ContainerSpec) -> int:
    """The uid the kernel runs as inside: ``-u``, resolved in the image like the runtime does."""
    if not spec.user:
        return 0
    head = spec.user.partition(":")[0]
    if head.isdigit():
        return int(head)
    from nbcontainer.images import resolve
    from nbcontainer.runtime import users

    layers = resolve(spec.image).layers if spec.has_rootfs else ("/",)
    return users.resolve(spec.user, layers, spec.image).uid


def _on_host_image(spec: ContainerSpec) -> bool:
    return spec.image.split(":")[0] in ("host", "none")


def kernel_argv(spec: ContainerSpec, connection_file: str) -> list[str]:
    """The inner ipykernel's command line.

    On the ``host`` image the kernel's own interpreter exists inside (the host's ``/`` is the
    lower layer), so it runs; other images run their ``python3``. History goes to a fresh
    database in the generation's directory: copying the host's ``~/.ipython`` history into the
    overlay on every start would cost time, and it dies with the container anyway.
    """
    python = sys.executable if _on_host_image(spec) else "python3"
    history = os.path.join(os.path.dirname(connection_file), "history.sqlite")
    return [python, "-m", "ipykernel_launcher", "-f", connection_file,
            f"--HistoryManager.hist_file={history}",
            "--IPKernelApp.extra_extensions=nbcontainer.kernel.extension"]


def container_env(spec: ContainerSpec, extra: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The environment inside: locale and session name from Jupyter, then ``-e`` options.

    ``JPY_PARENT_PID`` is deliberately absent: ipykernel would poll that pid, which does not
    exist in the container's PID namespace, and exit.
    """
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    if _on_host_image(spec):
        bindir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["PATH"] = path if bindir in path.split(":") else f"{bindir}:{path}"
    env.update(extra)
    env.update(dict(spec.env))
    return tuple(env.items())


def default_workdir(spec: ContainerSpec) -> str | None:
    """The notebook's directory on the host image, if it is on the root filesystem.

    Jupyter starts a kernel in the notebook's directory; on the ``host`` image that directory is
    visible inside (read-only below the overlay) only when it lives on the same filesystem as
    ``/``, since the lower layer is ``/`` without its submounts.
    """
    if spec.workdir or spec.image.split(":")[0] != "host":
        return spec.workdir
    cwd = os.getcwd()
    try:
        same = os.stat(cwd).st_dev == os.stat("/").st_dev
    except OSError:
        return None
    return cwd if same else None


class InnerKernel:
    """One container generation: the container, its ipykernel, and the relay's sockets to it.

    Parameters
    ----------
    ctx
        The relay's ZMQ context.
    spec
        The kernel's run options (no command: this class supplies it).
    key, signature_scheme
        The outer connection's: the inner kernel signs with the same key, so frames pass
        through unchanged.
    rundir
        The kernel's private run directory on the host.
    generation
        1 for the first container, 2 after the first restart, ...
    env
        Extra environment for the kernel inside.
    """

    def __init__(self, ctx: zmq.Context[Any], spec: ContainerSpec, *, key: str,
                 signature_scheme: str, rundir: Path, generation: int,
                 env: dict[str, str] | None = None) -> None:
        self.generation = generation
        self.dir = rundir / f"g{generation}"
        self.dir.mkdir(mode=0o700)
        # The kernel inside must use its run directory (a volume): it is given to the uid the
        # kernel runs as, as the host sees it, when the container starts (Container give_to).
        self._uid_inside = _uid_inside(spec)
        self.connection_file = str(self.dir / "connection.json")
        info: dict[str, str | int] = {
            "transport": "ipc", "ip": str(self.dir / "k"), "key": key,
            "signature_scheme": signature_scheme, "kernel_name": "nbcontainer-inner"}
        info.update({f"{name}_port": port for name, port in PORTS.items()})
        fd = os.open(self.connection_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        self.spec = spec.with_(
            command=tuple(kernel_argv(spec, self.connection_file)),
            volumes=spec.volumes + (Volume(str(self.dir), str(self.dir)),),
            env=container_env(spec, env or {}),
            workdir=default_workdir(spec),
            init=True,  # a reaping, signal-forwarding PID 1; the kernel is PID 2
        )
        self.sockets: dict[str, zmq.Socket[Any]] = {}
        for name, kind in (("shell", zmq.DEALER), ("control", zmq.DEALER),
                           ("stdin", zmq.DEALER), ("iopub", zmq.SUB)):
            sock = ctx.socket(kind)
            sock.linger = 0
            sock.setsockopt(zmq.RECONNECT_IVL, 10)  # the kernel binds ~1 s after we connect
            if kind == zmq.DEALER:
                sock.setsockopt(zmq.IDENTITY, PROXY_IDENTITY)
            else:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"ipc://{self.dir / 'k'}-{PORTS[name]}")
            self.sockets[name] = sock
        self.container: Container | None = None
        self.pidfd: int | None = None
        self.answered = False  # the kernel inside has replied to something: it came up
        self._log: IO[bytes] | None = None
        self.result: Result | None = None

    def start(self, owner: str) -> InnerKernel:
        """Start the container; ContainerError (after cleaning up) if it cannot be created."""
        self._log = open(self.dir / "kernel.log", "wb", buffering=0)  # noqa: SIM115
        give = ([(str(self.dir), self._uid_inside), (self.connection_file, self._uid_inside)]
                if self._uid_inside or "user" in self.spec.namespaces else [])
        self.container = Container(self.spec, stdin=subprocess.DEVNULL, stdout=self._log,
                                   stderr=self._log, owner=owner, keep=False, give_to=give)
        try:
            self.container.start()
        except BaseException:
            self.close()
            raise
        with contextlib.suppress(OSError, AttributeError):
            assert self.container.pid is not None
            self.pidfd = os.pidfd_open(self.container.pid)
        return self

    def poll(self) -> Result | None:
        """How the container ended, or None while it runs."""
        if self.result is None and self.container is not None:
            self.result = self.container.poll()
        return self.result

    def wait(self, timeout: float | None = None) -> Result | None:
        """Wait for the end (None if still running after ``timeout``)."""
        if self.result is None and self.container is not None:
            try:
                self.result = self.container.wait(timeout)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                return None
        return self.result

    def interrupt(self, sig: int) -> None:
        """Signal the kernel: init (PID 1) forwards it to ipykernel (PID 2)."""
        if self.container is not None and self.result is None:
            self.container.send_signal(sig)

    def log_tail(self) -> str:
        """The end of what the kernel inside printed outside the notebook (start-up errors)."""
        try:
            data = (self.dir / "kernel.log").read_bytes()[-LOG_TAIL:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def stop(self, grace: float) -> None:
        """End the container: SIGTERM (forwarded to the kernel), then kill after ``grace``."""
        if self.container is not None and self.result is None:
            with contextlib.suppress(ContainerError):
                self.result = self.container.stop(grace)

    def close(self) -> None:
        """Close the sockets, remove the container (cgroup, mounts, processes). Idempotent."""
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.container is not None:
            self.container.cleanup()
        if self._log is not None:
            self._log.close()
            self._log = None
