"""A container's stdio as pipes, pumped into the notebook while it runs (like ``%%script``).

The kernel never hands its own file descriptors to a container: each run gets fresh pipes for
stdin, stdout, stderr (and, for ``-o``, one more for the pickled outputs). One ``poll(2)`` loop
writes the body to stdin without blocking, reads output in chunks, decodes UTF-8 incrementally
(a character split across two reads is not mangled), and calls a tick function between reads so
the live plot can be redrawn from the main thread. KeyboardInterrupt while pumping is turned into
SIGINT for the payload, then, after a short grace, a kill; the caller re-raises.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TextIO

CHUNK = 1 << 16
#: The most a container may send back through the -o pipe (the data format's own limit).
MAX_OUTPUT = 1 << 30
#: After the payload ended: how long to keep reading output that is still in flight.
DRAIN_IDLE = 0.2
DRAIN_MAX = 2.0


class Interrupted(Exception):
    """The run was interrupted (KeyboardInterrupt) and has been stopped; carries the result."""

    def __init__(self, result: Any) -> None:
        super().__init__("interrupted")
        self.result = result


class Pipes:
    """The pipes of one run: the child's ends go to the container, ours stay here."""

    def __init__(self, with_output_fd: bool = False) -> None:
        self._fds: list[int] = []
        self.stdin_r, self.stdin_w = self._pipe()
        self.stdout_r, self.stdout_w = self._pipe()
        self.stderr_r, self.stderr_w = self._pipe()
        self.out_r: int | None = None
        self.out_w: int | None = None
        if with_output_fd:
            self.out_r, self.out_w = self._pipe()
        self.output = bytearray()
        self.overflowed = False  # the -o data went past MAX_OUTPUT and was cut off

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe()  # O_CLOEXEC; Popen's pass_fds/stdio make the child's copies inheritable
        self._fds += [r, w]
        return r, w

    def child_kwargs(self) -> dict[str, Any]:
        """``stdin=, stdout=, stderr=, pass_fds=`` for Container/Exec."""
        return {"stdin": self.stdin_r, "stdout": self.stdout_w, "stderr": self.stderr_w,
                "pass_fds": () if self.out_w is None else (self.out_w,)}

    def prefill(self, stdin_data: bytes) -> bytes:
        """Put what fits of ``stdin_data`` into the stdin pipe now, before the container
        starts; returns the rest (for the :class:`Pump`).

        The payload then finds its input waiting the moment it reads, instead of after this
        process woke up to its "ready" and wrote it (a wake-up of an idle CPU between two
        processes costs tens to hundreds of microseconds, more in a VM). A pipe holds 64 KiB.
        """
        os.set_blocking(self.stdin_w, False)
        try:
            written = os.write(self.stdin_w, stdin_data) if stdin_data else 0
        except BlockingIOError:
            written = 0
        return stdin_data[written:]

    def close_child_ends(self) -> None:
        """After start: drop our copies of the child's ends, so EOF means the child is done."""
        for fd in (self.stdin_r, self.stdout_w, self.stderr_w, self.out_w):
            if fd is not None:
                self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Close every fd still open. Idempotent."""
        for fd in list(self._fds):
            self._close(fd)


class Pump:
    """Moves data between the pipes and the notebook until the process ends.

    Parameters
    ----------
    pipes
        The run's :class:`Pipes` (child ends already closed).
    stdin_data
        What the payload reads on stdin (the cell body, or the pickled program).
    stdout, stderr
        Where decoded output goes (the kernel's ``sys.stdout``/``sys.stderr``).
    tick
        Called between reads with the seconds since the pump started (the live plot).
    tick_interval
        Longest wait between ticks.
    """

    def __init__(self, pipes: Pipes, stdin_data: bytes, stdout: TextIO, stderr: TextIO,
                 tick: Callable[[float], None] | None = None, tick_interval: float = 0.1) -> None:
        self.pipes = pipes
        self.stdin_data = memoryview(stdin_data)
        self.tick = tick
        self.tick_interval = tick_interval
        self._sinks: dict[int, tuple[TextIO, Any]] = {
            pipes.stdout_r: (stdout, codecs.getincrementaldecoder("utf-8")(errors="replace")),
            pipes.stderr_r: (stderr, codecs.getincrementaldecoder("utf-8")(errors="replace")),
        }
        self._pos = 0
        self._t0 = time.monotonic()
        self._poller = select.poll()
        self._registered: set[int] = set()
        for fd in (pipes.stdout_r, pipes.stderr_r, pipes.out_r):
            if fd is not None:
                self._poller.register(fd, select.POLLIN)
                self._registered.add(fd)
        if stdin_data:
            os.set_blocking(pipes.stdin_w, False)
            self._poller.register(pipes.stdin_w, select.POLLOUT)
            self._registered.add(pipes.stdin_w)
        else:
            self._close_stdin()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, process: Any, grace: float = 1.5) -> Any:
        """Pump until ``process`` (Container or Exec) ends; return its Result.

        On KeyboardInterrupt: SIGINT to the payload, up to ``grace`` seconds for it to end,
        then ``kill()``; raises :class:`Interrupted` with the result.
        """
        try:
            return self._until_done(process, None)
        except KeyboardInterrupt:
            pass
        process.send_signal(signal.SIGINT)
        result = None
        with contextlib.suppress(KeyboardInterrupt):  # a second interrupt: no more grace
            result = self._until_done(process, time.monotonic() + grace)
        if result is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
                result = process.wait(5)
            with contextlib.suppress(KeyboardInterrupt):
                self._drain(time.monotonic() + 0.3)
        raise Interrupted(result)

    def _until_done(self, process: Any, deadline: float | None) -> Any:
        """Pump while the process runs; the Result, or None if ``deadline`` passed first."""
        while True:
            result = process.poll()
            if result is not None:
                self._drain(time.monotonic() + DRAIN_MAX)
                self._flush()
                return result
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self.tick is not None:
                self.tick(now - self._t0)
            # Also wake when the process may have ended, not only on output.
            self._step(self.tick_interval, getattr(process, "wait_fds", list)())

    def _step(self, timeout: float, wake_fds: list[int] | tuple[int, ...] = ()) -> bool:
        """One poll and the reads/writes it allows; True if data moved.

        ``wake_fds`` only end the wait (the process's end-of-run descriptors); they are
        never read here.
        """
        extra = [fd for fd in wake_fds if fd not in self._registered]
        if not self._registered and not extra:
            time.sleep(timeout)
            return False
        for fd in extra:
            self._poller.register(fd, select.POLLIN)
        try:
            events = self._poller.poll(timeout * 1000)
        finally:
            for fd in extra:
                self._poller.unregister(fd)
        events = [(fd, ev) for fd, ev in events if fd not in extra]
        moved = False
        for fd, event in events:
            if fd == self.pipes.stdin_w:
                if event & (select.POLLERR | select.POLLHUP):
                    self._close_stdin()
                else:
                    self._write_stdin()
                moved = True
            elif event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                moved = self._read(fd) or moved
        return moved

    def _drain(self, limit: float) -> None:
        """Read what is still in flight after the end: until EOF, idle or ``limit``."""
        self._close_stdin()
        idle_since = time.monotonic()
        while self._registered and time.monotonic() < limit:
            if self._step(0.05):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > DRAIN_IDLE:
                break

    # -- the fds -----------------------------------------------------------------------------

    def _write_stdin(self) -> None:
        data = self.stdin_data
        try:
            self._pos += os.write(self.pipes.stdin_w, data[self._pos:self._pos + CHUNK])
        except BlockingIOError:
            return
        except OSError as err:  # EPIPE: the payload does not read its stdin; that is its choice
            if err.errno != errno.EPIPE:
                raise
            self._close_stdin()
            return
        if self._pos >= len(data):
            self._close_stdin()

    def _close_stdin(self) -> None:
        fd = self.pipes.stdin_w
        if fd in self._registered:
            self._poller.unregister(fd)
            self._registered.discard(fd)
        self.pipes._close(fd)

    def _read(self, fd: int) -> bool:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return False
        if not data:
            self._poller.unregister(fd)
            self._registered.discard(fd)
            if fd in self._sinks:
                sink, decoder = self._sinks[fd]
                self._emit(sink, decoder.decode(b"", final=True))
            return False
        if fd == self.pipes.out_r:
            if len(self.pipes.output) + len(data) > MAX_OUTPUT:
                # What a container sends back is bounded: it must not be able to fill the
                # notebook kernel's memory. Stop reading; the decoder then says it is too big.
                self._poller.unregister(fd)
                self._registered.discard(fd)
                self.pipes.overflowed = True
                self.pipes._close(fd)
                return False
            self.pipes.output += data
        else:
            sink, decoder = self._sinks[fd]
            self._emit(sink, decoder.decode(data))
        return True

    @staticmethod
    def _emit(sink: TextIO, text: str) -> None:
        if text:
            sink.write(text)
            sink.flush()

    def _flush(self) -> None:
        for sink, _ in self._sinks.values():
            with contextlib.suppress(Exception):
                sink.flush()
