"""The per-cell live memory plot, drawn by the relay: the side that survives the container.

It reuses the magics' meter (a 50 Hz cgroup sampler thread) and figure (bare matplotlib ->
PNG). The relay has no IPython display machinery and its ZMQ sockets belong to its main thread,
so frames are rendered on a worker thread, queued, and the main loop is woken through a pipe to
publish them as ``display_data`` / ``update_display_data`` for the cell's request.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import threading
import time
from typing import Any

from nbcontainer.spec import format_size

#: ``%memplot on|off|auto`` and the kernel option, mapped to the plot's modes.
MODES = {"on": "always", "off": "never", "auto": "auto",
         "always": "always", "never": "never"}

Frame = tuple[str, dict[str, Any], str]  # (msg_type, MIME bundle, display id)


def available() -> bool:
    """True when the meter and plot modules (and matplotlib) can be imported."""
    try:
        import matplotlib  # noqa: F401

        from nbcontainer import meter, plot  # noqa: F401
    except ImportError:
        return False
    return True


class _QueuedDisplay:
    """Stands in for :class:`nbcontainer.plot.LiveDisplay`: frames go to a queue, not IPython."""

    def __init__(self, out: queue.SimpleQueue[Frame], wake_fd: int) -> None:
        self.out = out
        self.wake_fd = wake_fd
        self.handle: str | None = None
        self.frames = 0

    def show(self, png: bytes, text: str) -> None:
        data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}
        kind = "display_data" if self.handle is None else "update_display_data"
        if self.handle is None:
            self.handle = os.urandom(8).hex()
        self.out.put((kind, data, self.handle))
        self.frames += 1
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_fd, b"!")


class CellPlot:
    """Meter one cell's container memory and draw it live; :meth:`finish` adds the last frame.

    Parameters
    ----------
    cgroup
        The container's cgroup (anything with ``open_sampler()``).
    mode
        ``auto`` (shown once the cell runs longer than half a second), ``always``, ``never``.
    out, wake_fd
        Where frames go, and the fd written to when one is queued.
    """

    TICK = 0.1

    def __init__(self, cgroup: Any, mode: str, out: queue.SimpleQueue[Frame],
                 wake_fd: int) -> None:
        from nbcontainer.meter import Meter
        from nbcontainer.plot import LivePlot

        self.meter = Meter(cgroup, base_oom_kills=None)
        self.live = LivePlot(mode=mode)
        self.live.display = _QueuedDisplay(out, wake_fd)  # type: ignore[assignment]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbcontainer-cell-plot",
                                        daemon=True)
        self._finished = False

    def start(self) -> CellPlot:
        """Begin sampling and drawing."""
        self.meter.start()
        if self.live.mode != "never":
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.TICK):
            self.live.tick(time.monotonic(), self.meter.snapshot())

    def finish(self, force: bool = False, note: str = "") -> None:
        """Stop; draw the final frame if the plot was shown, or ``force`` (an OOM kill)."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        series = self.meter.stop()
        if force and self.live.mode != "never":
            self.live.mode = "always"
        self.live.finished.append(series)
        text = (f"container memory: peak {format_size(series.peak)}, limit "
                f"{format_size(series.limit)}, OOM kills {series.oom_kills}")
        self.live.finish(text + (f"; {note}" if note else ""))

    @property
    def failed(self) -> str | None:
        """Why drawing failed, if it did (a plot problem never stops a cell)."""
        return self.live.failed
