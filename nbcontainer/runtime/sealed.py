"""A sealed in-memory copy of this interpreter, for the processes that stay Python inside.

runc's CVE-2019-5736: a process inside a container whose PID 1 runs a *host* binary can open
``/proc/1/exe`` (which resolves to the host's file, not to anything in the container's root),
wait for that process to exit and write through the descriptor: the host's binary is then the
container's code. Our PID 1 stays the host's Python interpreter whenever it does not exec: a
Python cell forked from the zygote, and the ``--init`` reaper (named and kernel containers).
So the zygote, and a helper whose first process will not exec, are started from a
``memfd_create(2)`` copy of the interpreter sealed against writing, shrinking and growing
(``F_SEAL_WRITE``, memfd_create(2)): ``/proc/1/exe`` is then ``/memfd:nbcontainer-python``,
which nothing can modify, and the host's interpreter is out of reach.

The copy (a few MB, a few ms) is made once per supervisor process and executed through
``/proc/<supervisor>/fd/N``, so the child never inherits the descriptor itself.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading

_lock = threading.Lock()
_fd: int | None = None
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def sealed_interpreter() -> str:
    """The path to execute this interpreter from: its sealed copy (made on first use)."""
    global _fd
    with _lock:
        if _fd is None:
            _fd = _sealed_copy(os.path.realpath(sys.executable))
        return f"/proc/{os.getpid()}/fd/{_fd}"


def _sealed_copy(path: str) -> int:
    fd = os.memfd_create("nbcontainer-python", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(fd, src.fileno(), offset, size - offset)
                if sent == 0:
                    raise OSError(f"{path} shrank while being copied")
                offset += sent
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reset_after_fork() -> None:
    """Forget the copy in a forked child: its pid, and so the path, differ."""
    global _fd
    _fd = None


os.register_at_fork(after_in_child=reset_after_fork)
