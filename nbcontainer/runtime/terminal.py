"""``run -t``: the user's terminal relayed to the container's own pseudo-terminal.

The container's first process made a pty in its devpts and sent the master here
(:class:`~nbcontainer.protocol.Console`, as runc's console socket does). This module puts the
user's terminal in raw mode (keys, Ctrl-C included, go to the container's line discipline,
which signals its foreground process group as a terminal would), copies the window size now
and on every SIGWINCH, moves bytes both ways until the container ends, and restores the
terminal on every way out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import struct
import termios
import tty
from collections.abc import Iterator
from typing import Any

CHUNK = 1 << 16


def copy_window_size(source: int, master: int) -> bool:
    """Give the container's terminal the size of ``source`` (TIOCGWINSZ -> TIOCSWINSZ)."""
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal at ``fd`` in raw mode for the duration; restored however it ends."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def following_window_size(source: int, master: int) -> Iterator[None]:
    """Copy the window size now and whenever the user's terminal is resized (SIGWINCH)."""
    copy_window_size(source, master)

    def resized(_signum: int, _frame: Any) -> None:
        copy_window_size(source, master)

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def relay(container: Any, stdin: int = 0, stdout: int = 1, forward_stdin: bool = True) -> Any:
    """Relay until the container ends; return its Result. The terminal is always restored."""
    master = container.console
    assert master is not None
    size_source = stdin if os.isatty(stdin) else stdout
    with following_window_size(size_source, master), raw_mode(stdin):
        reading_stdin = forward_stdin
        while True:
            watch = [master, *container.wait_fds()] + ([stdin] if reading_stdin else [])
            try:
                ready = select.select(watch, [], [], 0.5)[0]
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            if master in ready and not _pump(master, stdout):
                break  # every slave descriptor is closed: the container's side is gone
            if reading_stdin and stdin in ready:
                data = os.read(stdin, CHUNK)
                if data:
                    _write_all(master, data)
                else:  # end of input: what Ctrl-D at the start of a line would send
                    reading_stdin = False
                    _write_all(master, _eof_char(master))
            if container.poll() is not None:
                break
        _drain(master, stdout)
    return container.wait()


def _eof_char(master: int) -> bytes:
    """The terminal's VEOF character (Ctrl-D unless changed)."""
    char = termios.tcgetattr(master)[6][termios.VEOF]
    return char if isinstance(char, bytes) else bytes([char])


def _pump(master: int, stdout: int) -> bool:
    """Copy what the container wrote; False once its side of the terminal is closed."""
    try:
        data = os.read(master, CHUNK)
    except OSError as err:
        if err.errno == errno.EIO:  # Linux: no slave descriptor left
            return False
        raise
    if not data:
        return False
    _write_all(stdout, data)
    return True


def _drain(master: int, stdout: int, limit: float = 0.5) -> None:
    """The last output still in the terminal after the payload ended."""
    while select.select([master], [], [], limit)[0]:
        if not _pump(master, stdout):
            return
