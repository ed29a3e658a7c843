"""Where the container kernel's per-cell plot frames go: a queue the relay publishes from.

The relay has no IPython display machinery and its ZMQ sockets belong to its main thread, so
the cell's :class:`~nbcontainer.notebook.cell.CellPlot` draws on a worker thread into a
:class:`QueuedDisplay` (injected as its display), which wakes the main loop through a pipe;
the loop publishes the frames as ``display_data`` / ``update_display_data`` for the cell's
request.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
from typing import Any

#: ``%memplot`` and the kernel's ``--plot``: auto, on, off (always/never: older spellings).
MODES = {"on": "on", "off": "off", "auto": "auto", "always": "on", "never": "off"}

Frame = tuple[str, dict[str, Any], str]  # (msg_type, MIME bundle, display id)


def available() -> bool:
    """True when the cell plot (and matplotlib) can be imported."""
    try:
        import matplotlib  # noqa: F401

        from nbcontainer.notebook import cell  # noqa: F401
    except ImportError:
        return False
    return True


class QueuedDisplay:
    """A display whose frames go to a queue (and a byte to ``wake_fd``), not to IPython."""

    def __init__(self, out: queue.SimpleQueue[Frame], wake_fd: int) -> None:
        self.out = out
        self.wake_fd = wake_fd
        self.handle: str | None = None
        self.frames = 0

    def show(self, png: bytes, text: str) -> None:
        """Queue ``display_data`` the first time, ``update_display_data`` after."""
        data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}
        kind = "display_data" if self.handle is None else "update_display_data"
        if self.handle is None:
            self.handle = os.urandom(8).hex()
        self.out.put((kind, data, self.handle))
        self.frames += 1
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_fd, b"!")
