"""The relay: Jupyter talks to this host process, which talks to a stock ipykernel in a container.

Frames pass through unchanged (the inner kernel shares the outer key): a ROUTER-DEALER broker per
channel, like ``zmq.proxy``. The relay reads only headers, to remember which requests are in
flight. That memory is what lets it survive the container:

* when the container ends while a cell runs (OOM kill, crash, ``os._exit``), the cell gets an
  ``error`` and an error ``execute_reply`` that say why (limit and peak usage), then ``idle``;
  queued cells are aborted like after any error; other queued requests (completion, inspection,
  kernel_info) are re-sent to a fresh container; the next cell says that state was lost;
* interrupts become SIGINT to the container's init, which forwards it to ipykernel (PID 2), so
  they work even while the kernel's control thread is stuck;
* shutdown goes to the kernel inside (its atexit hooks run), then the container, its cgroup and
  mounts are removed before this process exits;
* the per-cell memory plot is drawn here, from the container's cgroup.
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from jupyter_client.session import Session

from nbcontainer.errors import ContainerError
from nbcontainer.kernel import display
from nbcontainer.kernel.inner import InnerKernel
from nbcontainer.kernel.wire import Frames
from nbcontainer.paths import KERNEL_RUNDIR_PREFIX
from nbcontainer.runtime.result import Result
from nbcontainer.spec import ContainerSpec

if TYPE_CHECKING:
    from nbcontainer.notebook.cell import CellPlot

RUNDIR_PREFIX = KERNEL_RUNDIR_PREFIX
SHUTDOWN_GRACE = 3.0  # seconds the kernel inside gets to answer a shutdown_request and exit
_MEMPLOT_RE = re.compile(rb"^[ \t]*%memplot[ \t]+(on|off|auto|always|never)[ \t]*$", re.MULTILINE)
RED, RESET = "\x1b[0;31m", "\x1b[0m"


class KernelExit(Exception):
    """SIGTERM/SIGHUP: leave the loop and clean up."""


@dataclass
class Pending:
    """A request forwarded to the kernel inside and not yet answered."""

    channel: str
    idents: list[bytes]
    header: dict[str, Any]
    frames: list[bytes]
    execution_count: int | None = None
    stop_on_error: bool = True
    ran: bool = False  # an execute_request whose idle has gone out

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))


@dataclass
class Shutdown:
    """A shutdown in progress: who asked, and until when the kernel inside may take."""

    channel: str
    idents: list[bytes]
    header: dict[str, Any]
    restart: bool
    deadline: float
    replied: bool = False


@dataclass
class Cell:
    """The execute_request running now, and its plot."""

    header: dict[str, Any]
    plot: CellPlot | None = None


def remove_stale_rundirs() -> None:
    """Remove the run directories of kernels that died without cleaning up (``kill -9``).

    ``nbcontainer gc`` removes such a kernel's container and cgroup; its run directory (the
    inner connection file, stale sockets) is ours, so each kernel sweeps them at start-up.
    """
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{RUNDIR_PREFIX}*-*"):
        pid = path.name[len(RUNDIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def bind_address(info: dict[str, Any], port: int) -> str:
    """The endpoint of one channel of a connection file (tcp or ipc)."""
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


def death_message(result: Result | None, answered: bool, log_tail: str) -> tuple[str, str]:
    """(ename, evalue) for a container that ended under the kernel."""
    if result is None:
        return "ContainerDied", "the container ended for an unknown reason"
    if not answered:
        text = (f"the container's kernel {result.describe()} before it answered; is Python "
                "with ipykernel available in the image?")
        if log_tail:
            text += f"\n--- the kernel's output ---\n{log_tail}"
        return "ContainerDied", text
    ename = "OOMKilled" if result.oom_killed else "ContainerDied"
    return ename, f"the container {result.describe()}"


class KernelProxy:
    """The host-side kernel process. ``run()`` serves until shutdown and returns an exit status.

    Parameters
    ----------
    connection
        The connection info Jupyter wrote (``-f`` file), decoded.
    spec
        The container's run options.
    plot
        ``auto``, ``on`` or ``off``: the per-cell memory plot's initial mode.
    """

    def __init__(self, connection: dict[str, Any], spec: ContainerSpec,
                 plot: str = "auto") -> None:
        self.info = connection
        self.spec = spec
        self.plot_mode = display.MODES.get(plot, "auto")
        self.key = str(connection.get("key", ""))
        self.scheme = str(connection.get("signature_scheme", "hmac-sha256"))
        self.session = Session(key=self.key.encode(), signature_scheme=self.scheme,
                               username="nbcontainer")
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.outer: dict[str, zmq.Socket[Any]] = {}
        for name, kind in (("shell", zmq.ROUTER), ("control", zmq.ROUTER),
                           ("stdin", zmq.ROUTER), ("iopub", zmq.XPUB)):
            sock = self.ctx.socket(kind)
            sock.linger = 1000
            if kind == zmq.XPUB:
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription: send a welcome
            sock.bind(bind_address(connection, int(connection[f"{name}_port"])))
            self.outer[name] = sock
        self._hb_thread = threading.Thread(target=self._heartbeat, daemon=True,
                                           name="nbcontainer-heartbeat")
        remove_stale_rundirs()
        self.rundir = Path(tempfile.mkdtemp(prefix=f"{RUNDIR_PREFIX}{os.getpid()}-"))
        os.chmod(self.rundir, 0o711)
        self.owner = f"kernel:{os.getpid()}"
        self.inner: InnerKernel | None = None
        self.generation = 0
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.cell: Cell | None = None
        self.lost: str | None = None      # why the previous container's state is gone
        self.note_for: str | None = None  # the execute_request that will carry that note
        self.shutdown: Shutdown | None = None
        self.done = False
        self.frames: queue.SimpleQueue[display.Frame] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.can_plot = display.available()
        # Like ipykernel's ParentPollerUnix: the client that started us may die without a
        # shutdown_request; then exit (and remove the container) rather than linger.
        self.parent_pid = int(os.environ.get("JPY_PARENT_PID", "0") or 0)
        self.poller = zmq.Poller()
        for sock in self.outer.values():
            self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)

    # -- plumbing ------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Echo heartbeats on a thread of its own: the kernel is alive while this process is."""
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        try:
            sock.bind(bind_address(self.info, int(self.info["hb_port"])))
            zmq.proxy(sock, sock)
        except zmq.ContextTerminated:
            pass
        finally:
            sock.close(linger=0)

    def _log(self, text: str) -> None:
        """One line to the Jupyter server's log (this process's stderr)."""
        sys.stderr.write(f"[nbcontainer kernel {os.getpid()}] {text}\n")
        sys.stderr.flush()

    def _send(self, channel: str, msg_type: str, content: dict[str, Any],
              parent: dict[str, Any] | None, idents: list[bytes] | None = None,
              metadata: dict[str, Any] | None = None) -> None:
        """Send a message of our own, signed with the session key."""
        ident: Any = idents
        if channel == "iopub":
            ident = [f"kernel.nbcontainer.{msg_type}".encode()]
        self.session.send(self.outer[channel], msg_type, content, parent=parent or {},
                          ident=ident, metadata=metadata)

    def _status(self, state: str, parent: dict[str, Any]) -> None:
        self._send("iopub", "status", {"execution_state": state}, parent)

    # -- the container -----------------------------------------------------------------------

    def _ensure_inner(self) -> InnerKernel:
        """The running container, starting one if there is none (ContainerError if it fails)."""
        if self.inner is not None:
            return self.inner
        self.generation += 1
        env = {"NBCONTAINER_KERNEL": "1",
               "NBCONTAINER_KERNEL_PLOT": self.plot_mode}
        inner = InnerKernel(self.ctx, self.spec, key=self.key, signature_scheme=self.scheme,
                            rundir=self.rundir, generation=self.generation, env=env)
        inner.start(self.owner)
        self.inner = inner
        for sock in inner.sockets.values():
            self.poller.register(sock, zmq.POLLIN)
        if inner.pidfd is not None:
            self.poller.register(inner.pidfd, zmq.POLLIN)
        assert inner.container is not None
        self._log(f"container {inner.container.id} (generation {self.generation}) started")
        return inner

    def _drop_inner(self) -> None:
        inner, self.inner = self.inner, None
        if inner is None:
            return
        for sock in inner.sockets.values():
            self.poller.unregister(sock)
        if inner.pidfd is not None:
            self.poller.unregister(inner.pidfd)
        inner.close()
        shutil.rmtree(inner.dir, ignore_errors=True)

    # -- from the client -----------------------------------------------------------------------

    def on_client(self, channel: str, frames: list[bytes]) -> None:
        """A request from Jupyter on shell or control."""
        try:
            msg = Frames.parse(frames)
        except ValueError:
            return
        header = msg.header()
        msg_type = header.get("msg_type")
        if msg_type == "interrupt_request":
            if self.inner is not None:
                self.inner.interrupt(signal.SIGINT)
            self._send(channel, "interrupt_reply", {"status": "ok"}, header, msg.idents)
            return
        if msg_type == "shutdown_request":
            self.begin_shutdown(channel, msg, header)
            return
        if self.shutdown is not None:
            return
        if msg_type == "execute_request":
            self.on_execute(msg, header)
        pending = Pending(channel, msg.idents, header, frames)
        if msg_type == "execute_request":
            pending.stop_on_error = bool(msg.content().get("stop_on_error", True))
        self.forward(pending)

    def forward(self, pending: Pending) -> None:
        """Send a request to the kernel inside, starting a container if needed."""
        try:
            inner = self._ensure_inner()
        except ContainerError as err:
            self.answer_without_kernel(pending, "ContainerError",
                                       f"the kernel's container could not start: {err}")
            return
        self.pending[pending.msg_id] = pending
        inner.sockets[pending.channel].send_multipart(pending.frames, copy=False)
        if pending.msg_type == "execute_request":
            self._next_cell()

    def _next_cell(self) -> None:
        """Meter the cell the kernel runs now: the first execute_request not yet finished.

        Decided here rather than on the cell's ``execute_input``, which the kernel may not get
        out before an OOM kill (all its threads are throttled at the limit).
        """
        if self.cell is not None or self.inner is None:
            return
        for p in self.pending.values():
            if p.msg_type == "execute_request" and not p.ran:
                self.cell = Cell(p.header, self._start_plot(self.inner))
                return

    def on_execute(self, msg: Frames, header: dict[str, Any]) -> None:
        """Before an execute_request goes in: ``%memplot``, and which cell gets the note."""
        raw = msg.raw_content()
        if b"%memplot" in raw:
            code = str(msg.content().get("code", "")).encode()
            found = _MEMPLOT_RE.findall(code)
            if found:
                self.plot_mode = display.MODES[found[-1].decode()]
        if self.lost is not None and self.note_for is None:
            self.note_for = header.get("msg_id")

    def _start_plot(self, inner: InnerKernel) -> CellPlot | None:
        if self.plot_mode == "off" or not self.can_plot or inner.container is None \
                or inner.container.cgroup is None:
            return None
        try:
            from nbcontainer.notebook.cell import CellPlot

            plot = CellPlot(self.plot_mode, display.QueuedDisplay(self.frames, self.wake_w))
            plot.watch(inner.container.cgroup, new=False)
            if plot.meter is None:
                raise OSError("its cgroup cannot be read")
            return plot.draw_in_background()
        except (ContainerError, OSError) as err:
            self._log(f"no memory plot for this cell: {err}")
            return None

    def answer_without_kernel(self, pending: Pending, ename: str, evalue: str) -> None:
        """Reply to a request no kernel inside can answer (the container cannot start)."""
        header, idents = pending.header, pending.idents
        if pending.msg_type == "kernel_info_request":
            self._send(pending.channel, "kernel_info_reply", kernel_info(), header, idents)
            return
        self._status("busy", header)
        if pending.msg_type == "execute_request":
            self.error_reply(pending, ename, evalue)
        else:
            reply = pending.msg_type.replace("_request", "_reply")
            self._send(pending.channel, reply, {"status": "error", "ename": ename,
                                                "evalue": evalue, "traceback": []},
                       header, idents)
        self._status("idle", header)
        self._finish_cell(header)

    def error_reply(self, pending: Pending, ename: str, evalue: str) -> None:
        """An ``error`` on IOPub and an error ``execute_reply``: the cell failed, and why."""
        tb = [f"{RED}{ename}{RESET}: {evalue}"]
        self._send("iopub", "error", {"ename": ename, "evalue": evalue, "traceback": tb},
                   pending.header)
        content = {"status": "error", "ename": ename, "evalue": evalue, "traceback": tb,
                   "execution_count": pending.execution_count}
        self._send("shell", "execute_reply", content, pending.header, pending.idents,
                   metadata={"status": "error"})

    # -- from the kernel inside --------------------------------------------------------------

    def on_reply(self, channel: str, frames: list[bytes]) -> None:
        """A reply from the kernel inside on shell, control or stdin: pass it out."""
        inner = self.inner
        if inner is not None:
            inner.answered = True
        if channel != "stdin":
            try:
                msg = Frames.parse(frames)
            except ValueError:
                return
            self.pending.pop(str(msg.parent().get("msg_id")), None)
            if self.shutdown is not None and msg.header().get("msg_type") == "shutdown_reply":
                self.shutdown.replied = True
        self.outer[channel].send_multipart(frames, copy=False)

    def on_iopub(self, frames: list[bytes]) -> None:
        """An IOPub message from inside: pass it out, with our own additions in their place."""
        try:
            msg = Frames.parse(frames)
        except ValueError:
            return
        header = msg.header()
        msg_type = header.get("msg_type")
        if msg_type == "iopub_welcome":
            return  # for our SUB socket; clients got ours
        parent_id: str | None = None
        if msg_type in ("status", "execute_input"):
            parent_id = str(msg.parent().get("msg_id"))
            content = msg.content()
            if msg_type == "status":
                state = content.get("execution_state")
                if state == "starting" and self.generation > 1:
                    return  # a fresh container is not a restart the client asked for
                if state == "idle" and parent_id is not None and self.cell is not None \
                        and self.cell.header.get("msg_id") == parent_id:
                    self._finish_cell(self.cell.header)
            elif parent_id in self.pending:
                self.pending[parent_id].execution_count = content.get("execution_count")
        self.outer["iopub"].send_multipart(frames, copy=False)
        if msg_type == "execute_input" and parent_id is not None and parent_id == self.note_for:
            self._send("iopub", "stream", {"name": "stderr", "text": self._note()},
                       self.pending[parent_id].header if parent_id in self.pending
                       else msg.parent())
            self.note_for = None
            self.lost = None

    def _note(self) -> str:
        return (f"nbcontainer: state was lost: {self.lost}. This cell runs in a fresh "
                "container; variables, imports and files from before are gone.\n")

    def _finish_cell(self, header: dict[str, Any], force: bool = False) -> None:
        """The cell ended: last plot frame out before its ``idle``."""
        cell = self.cell
        if cell is None or cell.header.get("msg_id") != header.get("msg_id"):
            return
        self.cell = None
        if cell.plot is not None:
            cell.plot.finish(force=force)
            if cell.plot.failed:
                self._log(f"the memory plot failed: {cell.plot.failed}")
        self.publish_frames(header)
        done = self.pending.get(str(header.get("msg_id")))
        if done is not None:
            done.ran = True
        self._next_cell()

    def publish_frames(self, parent: dict[str, Any] | None = None) -> None:
        """Publish queued plot frames for the running cell."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.wake_r, 512):
                pass
        while True:
            try:
                kind, data, display_id = self.frames.get_nowait()
            except queue.Empty:
                return
            target = parent or (self.cell.header if self.cell is not None else None)
            if target is None:
                continue
            self._send("iopub", kind, {"data": data, "metadata": {},
                                       "transient": {"display_id": display_id}}, target)

    # -- the container ended -------------------------------------------------------------------

    def on_container_end(self) -> None:
        """The container ended: answer what was in flight, say why, get ready for the next cell."""
        inner = self.inner
        assert inner is not None
        result = inner.wait(5.0)
        if self.shutdown is not None:
            self._drop_inner()
            self.finish_shutdown()
            return
        ename, evalue = death_message(result, inner.answered, inner.log_tail())
        self._log(f"container generation {inner.generation}: {evalue}")
        pending = list(self.pending.values())
        self.pending.clear()
        first_execute = True
        replay: list[Pending] = []
        for p in pending:
            if p.msg_type == "execute_request" and first_execute:
                first_execute = False
                if self.cell is not None and self.cell.header.get("msg_id") == p.msg_id \
                        and self.cell.plot is not None:
                    self.cell.plot.finish(force=True)  # the container died: keep its curve
                    if self.cell.plot.failed:
                        self._log(f"the memory plot failed: {self.cell.plot.failed}")
                    self.publish_frames(p.header)
                    self.cell = None
                if inner.answered:
                    self.error_reply(p, ename, evalue + ". Its Python state was lost; the "
                                     "next cell runs in a fresh container.")
                else:
                    self._status("busy", p.header)  # the kernel never got to say it
                    self.error_reply(p, ename, evalue)
                self._status("idle", p.header)
            elif p.msg_type == "execute_request" and p.stop_on_error:
                self._status("busy", p.header)
                self._send("shell", "execute_reply", {"status": "aborted",
                                                       "execution_count": None},
                           p.header, p.idents, metadata={"status": "aborted"})
                self._status("idle", p.header)
            else:
                replay.append(p)
        self.cell = None
        answered = inner.answered
        self._drop_inner()
        self.lost = evalue.split("\n")[0] if answered else None
        self.note_for = None
        if not answered:
            # It never came up: do not loop. Answer what waits; the next request retries.
            for p in replay:
                self.answer_without_kernel(p, ename, evalue)
            return
        try:
            self._ensure_inner()
        except ContainerError as err:
            self._log(f"cannot start a fresh container: {err}")
        for p in replay:
            self.forward(p)

    # -- shutdown ------------------------------------------------------------------------------

    def begin_shutdown(self, channel: str, msg: Frames, header: dict[str, Any]) -> None:
        """Pass the shutdown to the kernel inside (so its atexit hooks run) and wait for it."""
        restart = bool(msg.content().get("restart", False))
        self.shutdown = Shutdown(channel, msg.idents, header, restart,
                                 time.monotonic() + SHUTDOWN_GRACE)
        if self.inner is None or not self.inner.answered:
            self.finish_shutdown()
            return
        self.inner.sockets[channel].send_multipart(msg.frames, copy=False)

    def finish_shutdown(self) -> None:
        """Reply if the kernel inside did not, then leave the loop (cleanup follows)."""
        sd = self.shutdown
        assert sd is not None
        if not sd.replied:
            content = {"status": "ok", "restart": sd.restart}
            self._send(sd.channel, "shutdown_reply", content, sd.header, sd.idents)
            self._send("iopub", "shutdown_reply", content, sd.header)
            sd.replied = True
        self.done = True

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until shutdown; always remove the container and the run directory."""
        self._hb_thread.start()
        old = {sig: signal.signal(sig, self._on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            with contextlib.suppress(ContainerError):
                self._ensure_inner()  # start now: the first cell should not wait for it
            while not self.done:
                self.step()
        except KernelExit:
            pass
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.close()
        return 0

    def _on_term(self, _signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KernelExit

    def _on_sigint(self, _signum: int, _frame: object) -> None:
        """``interrupt_mode: signal`` clients (and a terminal's Ctrl-C) interrupt the cell."""
        if self.inner is not None:
            self.inner.interrupt(signal.SIGINT)

    def step(self, timeout_ms: int = 500) -> None:
        """One round of the loop: relay what is ready, notice a container's end."""
        events = dict(self.poller.poll(timeout_ms))
        inner = self.inner
        for sock, name in ((self.outer["shell"], "shell"), (self.outer["control"], "control")):
            if sock in events:
                self._drain(sock, lambda f, n=name: self.on_client(n, f))
        if self.outer["stdin"] in events:
            def to_inner(frames: list[bytes]) -> None:
                if self.inner is not None:
                    self.inner.sockets["stdin"].send_multipart(frames, copy=False)
            self._drain(self.outer["stdin"], to_inner)
        if self.outer["iopub"] in events:
            self._drain(self.outer["iopub"], self.on_subscription)
        if inner is not None and inner is self.inner:
            for name in ("control", "shell", "stdin"):
                if inner.sockets[name] in events:
                    self._drain(inner.sockets[name], lambda f, n=name: self.on_reply(n, f))
            if inner.sockets and inner.sockets["iopub"] in events:
                self._drain(inner.sockets["iopub"], self.on_iopub)
        if self.wake_r in events:
            self.publish_frames()
        if self.inner is not None and (
                (self.inner.pidfd is not None and self.inner.pidfd in events)
                or (self.inner.pidfd is None and self.inner.poll() is not None)):
            # Relay what the kernel said last before it died, then handle the death.
            for name in ("iopub", "control", "shell", "stdin"):
                handler = self.on_iopub if name == "iopub" else \
                    (lambda f, n=name: self.on_reply(n, f))
                self._drain(self.inner.sockets[name], handler)
            self.on_container_end()
        if self.parent_pid > 1 and os.getppid() != self.parent_pid:
            self._log(f"the process that started this kernel ({self.parent_pid}) is gone; "
                      "exiting")
            raise KernelExit
        if self.shutdown is not None and not self.done and (
                self.shutdown.replied or time.monotonic() > self.shutdown.deadline):
            self.finish_shutdown()

    @staticmethod
    def _drain(sock: zmq.Socket[Any], handler: Any) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handler(frames)

    def on_subscription(self, frames: list[bytes]) -> None:
        """A client subscribed to IOPub: welcome it (JEP 65), as ipykernel 7 does."""
        data = frames[0] if frames else b""
        if data[:1] == b"\x01":
            self._send("iopub", "iopub_welcome", {"subscription": data[1:].decode("utf-8",
                                                                                  "replace")},
                       None)

    def close(self) -> None:
        """Stop the container (the kernel inside gets SIGTERM first), remove everything."""
        if self.cell is not None and self.cell.plot is not None:
            self.cell.plot.finish()
        if self.inner is not None:
            self.inner.stop(1.0)
        self._drop_inner()
        for sock in self.outer.values():
            sock.close(linger=1000)
        self.ctx.term()
        self._hb_thread.join(2)
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.rundir, ignore_errors=True)


def kernel_info() -> dict[str, Any]:
    """A kernel_info_reply of our own, for when no kernel inside can give its."""
    from nbcontainer import __version__

    return {
        "status": "ok", "protocol_version": "5.3", "implementation": "nbcontainer",
        "implementation_version": __version__,
        "language_info": {
            "name": "python", "version": platform.python_version(),
            "mimetype": "text/x-python", "file_extension": ".py",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "pygments_lexer": "ipython3", "nbconvert_exporter": "python",
        },
        "banner": "nbcontainer kernel (its container could not start)", "help_links": [],
    }
