"""One notebook cell in a container: its output streamed, its cgroup metered and drawn live,
its end told in words. The ``%%container`` magic and the container kernel both use this.

* :class:`CellPlot` meters the container's cgroup (one :class:`~.meter.Meter` per run of the
  cell) and draws the live plot through an injected *display*: IPython's display handle in a
  kernel that runs the magics, a queue the relay publishes from in the container kernel. A
  cell that fails or ends with an OOM kill always keeps its last frame.
* :func:`stream_to_end` pumps a started container (or exec) to its end: stdin in, output out
  as it is produced, plot frames between reads, SIGINT then kill on interrupt, cleanup always.
* :func:`record_line` and :func:`failure` are the resource record and the error sentence
  both front ends show.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from nbcontainer.errors import ContainerError
from nbcontainer.notebook.meter import Meter, Series
from nbcontainer.notebook.plot import FRAME_RATE, LiveDisplay, LivePlot
from nbcontainer.notebook.streams import Interrupted, Pipes, Pump
from nbcontainer.spec import format_size


class Display(Protocol):
    """Where frames go: ``show`` publishes the first frame and updates it in place after."""

    handle: Any

    def show(self, png: bytes, text: str) -> None: ...


class CellPlot:
    """The live memory plot of one cell, fed by one meter per run of the cell.

    Parameters
    ----------
    mode
        ``auto`` (shown once the cell has run ``after`` seconds), ``on`` or ``off``
        (``always`` and ``never`` are accepted too).
    display
        Where frames go (default: IPython's display, for a kernel running the magics).
    after, fps
        ``auto``'s delay, and the most frames a second.
    rate
        Samples a second of each meter.
    title
        The figure's title.
    """

    def __init__(self, mode: str = "auto", display: Display | None = None, *,
                 after: float = 0.5, fps: float = FRAME_RATE, rate: float = 50.0,
                 title: str = "container memory") -> None:
        self.live = LivePlot(mode, after, fps, title, display=display or LiveDisplay())
        self.rate = rate
        self.meter: Meter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def failed(self) -> str | None:
        """Why drawing failed, if it did (a plot problem never stops a cell)."""
        return self.live.failed

    @property
    def finished(self) -> list[Series]:
        """The series of the runs that ended."""
        return self.live.finished

    def watch(self, cgroup: Any, label: str = "", new: bool = True) -> CellPlot:
        """Start metering one run; ``new``: its cgroup's OOM counter starts at zero."""
        self.end_run()
        if cgroup is not None:
            try:
                self.meter = Meter(cgroup, self.rate, label,
                                   base_oom_kills=0 if new else None).start()
            except (ContainerError, OSError):
                self.meter = None
        return self

    def tick(self, now: float | None = None) -> None:
        """Maybe draw a frame (from the caller's loop, or the drawing thread)."""
        with self._lock:
            meter = self.meter
            self.live.tick(time.monotonic() if now is None else now,
                           meter.snapshot() if meter is not None else None)

    def draw_in_background(self, interval: float = 0.1) -> CellPlot:
        """Tick from a thread of its own (for a caller whose loop cannot, like the relay)."""
        if self.live.mode != "off" and self._thread is None:
            self._thread = threading.Thread(target=self._draw_loop, args=(interval,),
                                            name="nbcontainer-cell-plot", daemon=True)
            self._thread.start()
        return self

    def _draw_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tick()

    def end_run(self, keep: bool = True) -> Series | None:
        """Stop the running meter; its series stays in the figure (``keep``), or goes: a
        container that could not start has no curve to show."""
        with self._lock:
            meter, self.meter = self.meter, None
            if meter is None:
                return None
            series = meter.stop()
            if keep:
                self.live.finished.append(series)
            return series

    def finish(self, text: str | None = None, force: bool = False) -> None:
        """The last frame, with ``text`` (default: peak, limit and OOM kills of the runs) as
        its text/plain.

        Drawn when the plot was shown, and always (unless the mode is ``off``) for a cell
        that failed (``force``) or whose runs saw an OOM kill: however fast such a cell ended,
        its curve is the explanation, so auto mode's half-second wait does not apply.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.end_run()
        force = force or any(s.oom_kills for s in self.live.finished)
        if force and self.live.mode != "off":
            self.live.mode = "on"
        self.live.finish(text or summary(self.live.finished))


def summary(series: Sequence[Series]) -> str:
    """Peak, limit and OOM kills of metered runs, one line each."""
    return "\n".join(
        (f"{s.label}: " if s.label else "") + f"container memory: peak {format_size(s.peak)}, "
        f"limit {format_size(s.limit)}, OOM kills {s.oom_kills}" for s in series
    ) or "container memory"


def record_line(label: str, result: Any) -> str:
    """One run's resource record (wall and CPU time, peak and limit, OOM kills, pids, exit)."""
    return (f"{label}: " if label else "") + result.summary()


def failure(subject: str, result: Any) -> str:
    """Why a container failed, in words: ``<subject> was OOM-killed: it reached ...``."""
    return f"{subject} {result.describe()}"


@dataclass
class Streams:
    """Where a run's output goes, and how long an interrupt waits before the kill."""

    stdout: TextIO
    stderr: TextIO
    grace: float = 1.5


def stream_to_end(proc: Any, pipes: Pipes, stdin_data: bytes, streams: Streams,
                  plot: CellPlot | None = None) -> tuple[Any, bool]:
    """Run a started container or exec to its end; return (its Result, interrupted).

    Output is streamed as it comes, the plot ticks between reads, and the process is always
    cleaned up (in the background once its result is known: the teardown need not delay the
    cell). The caller owns ``pipes`` and closes them.
    """
    pipes.close_child_ends()
    interrupted = False
    result = None
    tick = None if plot is None else (lambda _elapsed: plot.tick())
    pump = Pump(pipes, stdin_data, streams.stdout, streams.stderr, tick=tick,
                tick_interval=0.1)
    try:
        result = pump.run(proc, grace=streams.grace)
    except Interrupted as intr:
        result, interrupted = intr.result, True
    finally:
        if plot is not None:
            plot.end_run()
        proc.cleanup(background=result is not None)
        if result is None:
            result = proc.poll()
    return result, interrupted


def default_streams(grace: float = 1.5) -> Streams:
    """The kernel's own stdout and stderr (what a cell prints to)."""
    return Streams(sys.stdout, sys.stderr, grace)
