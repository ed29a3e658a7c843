"""The live memory figure: a bare matplotlib Figure rendered to PNG, shown through a display handle.

A bare :class:`matplotlib.figure.Figure` with an Agg canvas (not pyplot) so the inline backend
never sees it and never shows a duplicate at the end of the cell. Each frame is a small PNG
(tens of KB) published with ``display(..., display_id=True)`` and then ``handle.update(...)``,
so the figure is updated in place; the last frame stays as ``image/png`` with a ``text/plain``
summary, which nbconvert and nbclient keep.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections.abc import Sequence
from typing import Any

from nbcontainer.notebook.meter import MIB, Series

#: A colour-blind-safe cycle (Okabe-Ito) for comparison runs.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


#: Live frames a second, at most. A frame costs the kernel about 10 ms of CPU (blitted; more under
#: load: bench/RESULTS.md), and a live plot should look live: ticks come every 0.1 s, so this
#: gives a frame every 0.3 s, about three a second (tests/browser checks at least two in
#: JupyterLab). Long cells get fewer (see :meth:`LivePlot.tick`).
FRAME_RATE = 4.0


#: The shortest time axis of a live frame, seconds: a cell's first frames do not each widen
#: the axis (0.5, 1, 2 s...), which would redraw ticks and labels, a full draw, every time.
LIVE_SPAN = 2.0

#: More points than pixels only costs drawing time: long runs are thinned to about this many,
#: keeping each bin's maximum so a spike stays visible.
MAX_POINTS = 1500


def thin(times: Any, values: Any, limit: int = MAX_POINTS) -> tuple[Any, Any]:
    """At most ``limit`` points: the first time and the largest value of each bin."""
    import numpy as np

    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    n = min(len(t), len(v))
    t, v = t[:n], v[:n]
    if n <= limit:
        return t, v
    step = -(-n // limit)
    cut = n - n % step
    tb = t[:cut:step]
    vb = v[:cut].reshape(-1, step).max(axis=1)
    if cut < n:
        tb = np.append(tb, t[cut])
        vb = np.append(vb, v[cut:].max())
    return tb, vb


class MemoryFigure:
    """Draws one or more :class:`~nbcontainer.notebook.meter.Series`: memory (MiB) over time (s).

    The limit is a dashed line in the series' colour, each OOM kill a red dotted vertical line,
    and, for a single series, CPU use (%) on a twin axis in grey. The axes and lines are made
    once and only their data change between frames (no ``clear()``, no ``tight_layout()``):
    that halves the cost of a frame, which the kernel pays while the cell runs.
    """

    def __init__(self, title: str = "container memory", width: float = 6.4,
                 height: float = 2.8, dpi: int = 80) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.title = title
        self.figure = Figure(figsize=(width, height), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.09, right=0.9, bottom=0.17, top=0.9)
        ax = self.ax = self.figure.add_subplot(1, 1, 1)
        # The title and the time label at fixed places: placed automatically, every full draw
        # measures the tick labels around them first. (The value labels stay automatic: their
        # tick labels' width varies, 5 to 2000 MiB.)
        ax.set_xlabel("seconds")
        ax.xaxis.set_label_coords(0.5, -0.14)
        ax.set_ylabel("memory (MiB)")
        ax.set_title(title, fontsize="medium", y=1.0, pad=4)
        ax.grid(True, alpha=0.3)
        self.ax2: Any = None
        self.cpu_line: Any = None
        self.lines: list[tuple[Any, Any]] = []   # (memory line, limit line) per series
        self.kills: list[list[Any]] = []         # OOM markers per series
        # Blitting: the axes, ticks, labels and limit lines are drawn once per change of the
        # axis limits (which move in 1-2-5 steps); between those, a frame only restores that
        # background and draws the data lines and the legend. Text layout is most of a full
        # draw's cost, and a frame is paid for by the kernel while the cell runs.
        self._background: Any = None
        self._key: Any = None
        # The legend is opaque and drawn last, so its pixels depend on its labels only: kept
        # after drawing it and pasted back while the labels stay the same (building and
        # drawing a legend was half of a blitted frame's cost).
        self._legend_pixels: Any = None
        self._legend_key: Any = None
        self._xlim = 0.0  # the time axis only grows while a plot is live: fewer full draws

    def reset(self, title: str) -> None:
        """Ready for another cell's plot (a figure is reused: making one and its first draw
        cost about twice a full draw)."""
        if title != self.title:
            self.title = title
            self.ax.set_title(title, fontsize="medium", y=1.0, pad=4)
            self._key = None
        self._xlim = 0.0

    def _series_artists(self, i: int) -> tuple[Any, Any]:
        while len(self.lines) <= i:
            colour = COLOURS[len(self.lines) % len(COLOURS)]
            line, = self.ax.plot([], [], color=colour, linewidth=1.6, animated=True)
            limit = self.ax.axhline(0, color=colour, linestyle="--", linewidth=1.0)
            limit.set_visible(False)
            self.lines.append((line, limit))
            self.kills.append([])
        return self.lines[i]

    def _cpu(self, s: Series | None) -> None:
        if s is None or not len(s.cpu):
            if self.ax2 is not None:
                self.ax2.set_visible(False)
            return
        if self.ax2 is None:
            self.ax2 = self.ax.twinx()
            self.cpu_line, = self.ax2.plot([], [], color="#888888", linewidth=0.8, alpha=0.8,
                                           animated=True)
            self.ax2.set_ylabel("CPU (%)", color="#666666")
            self.ax2.tick_params(axis="y", colors="#666666")
            self.ax.set_zorder(self.ax2.get_zorder() + 1)
            self.ax.patch.set_visible(False)
        self.ax2.set_visible(True)
        t, cpu = thin(s.times, s.cpu)
        self.cpu_line.set_data(t, cpu)
        self.ax2.set_ylim(0, nice(max(100.0, float(cpu.max()) * 1.1 if len(cpu) else 100.0)))

    def render(self, series: Sequence[Series], elapsed: float | None = None,
               live: bool = False) -> bytes:
        """One frame as PNG bytes.

        ``live``: a frame while the cell runs, whose time axis spans at least
        :data:`LIVE_SPAN` seconds. Once a live frame was drawn the time axis never shrinks,
        so most frames only blit the data over a kept background; a figure that only ever
        draws its final frame fits the time axis to the data (a short OOM-killed cell).
        """
        ax = self.ax
        many = len(series) > 1
        xmax = max([elapsed or 0.0] + [s.times[-1] for s in series if len(s.times)]) or 1.0
        ymax = 1.0
        handles = []
        for i, s in enumerate(series):
            line, limit = self._series_artists(i)
            t, mem = thin(s.times, s.memory)
            line.set_data(t, mem)
            label = s.label or "memory"
            if s.peak:
                label += f" (peak {s.peak / MIB:.0f} MiB)"
            line.set_label(label)
            handles.append(line)
            if len(mem):
                ymax = max(ymax, float(mem.max()))
            if s.limit:
                ymax = max(ymax, s.limit / MIB)
                limit.set_ydata([s.limit / MIB] * 2)
                limit.set_visible(True)
                limit.set_label(f"limit {s.limit / MIB:.0f} MiB")
                if not many:
                    handles.append(limit)
            marks = self.kills[i]
            if [m.get_xdata()[0] for m in marks] != list(s.oom_times[:len(marks)]):
                for mark in marks:  # another series took this slot: redraw its kills
                    mark.remove()
                marks.clear()
            for t_kill in s.oom_times[len(marks):]:
                # Animated, drawn after the curves: at a kill the curve drops straight down at
                # the same time, and drawn over the mark it would hide it.
                marks.append(ax.axvline(t_kill, color="#CC0000", linestyle=":",
                                        linewidth=1.2, label="OOM kill", animated=True))
        for line, limit in self.lines[len(series):]:
            line.set_data([], [])
            limit.set_visible(False)
        for marks in self.kills[len(series):]:
            for mark in marks:
                mark.remove()
            marks.clear()
        first_kill = next((m[0] for m in self.kills[:len(series)] if m), None)
        if first_kill is not None:
            handles.append(first_kill)
        self._cpu(series[0] if len(series) == 1 else None)
        xlim = max(nice(xmax * 1.02, TIME_STEPS), self._xlim)
        if live:
            self._xlim = xlim = max(xlim, LIVE_SPAN)
        ax.set_xlim(0, xlim)
        limited = any(s.limit for s in series)
        ax.set_ylim(0, ymax * 1.12 if limited else nice(ymax * 1.12))
        cpu_axis = self.ax2 if self.ax2 is not None and self.ax2.get_visible() else None
        key = (ax.get_xlim(), ax.get_ylim(), cpu_axis.get_ylim() if cpu_axis else None,
               tuple((lim.get_visible(), tuple(lim.get_ydata())) for _, lim in self.lines),
               tuple(tuple(m.get_xdata()[0] for m in marks) for marks in self.kills))
        if key != self._key or self._background is None:
            self.canvas.draw()  # everything but the animated artists
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            self._key = key
        else:
            self.canvas.restore_region(self._background)
        if cpu_axis is not None:
            cpu_axis.draw_artist(self.cpu_line)
        for line, _ in self.lines[:len(series)]:
            ax.draw_artist(line)
        for marks in self.kills[:len(series)]:
            for mark in marks:
                ax.draw_artist(mark)
        self._draw_legend(handles)
        return self._png()

    def _draw_legend(self, handles: list[Any]) -> None:
        """Draw the legend, or paste its pixels from the last frame when nothing in it changed
        (it is opaque: what lies below does not show through)."""
        legend_key = tuple((id(h), h.get_label()) for h in handles)
        if legend_key == self._legend_key and self._legend_pixels is not None:
            self.canvas.restore_region(self._legend_pixels)
            return
        legend = self.ax.legend(handles=handles, loc="upper left", fontsize="small",
                                framealpha=1.0)
        legend.set_animated(True)
        self.ax.draw_artist(legend)
        # One pixel more on each side: the frame's edge is stroked across the box's border.
        box = legend.get_window_extent(self.canvas.get_renderer()).padded(1)
        self._legend_pixels = self.canvas.copy_from_bbox(box)
        self._legend_key = legend_key

    def _png(self) -> bytes:
        """The canvas as PNG, without drawing it again."""
        from PIL import Image

        width, height = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw",
                                 "RGBA", 0, 1).convert("RGB")  # the figure is opaque
        buf = io.BytesIO()
        # zlib level 1: a third of the default level's time for a PNG about as small (a
        # plot is mostly flat colour), on every frame the kernel draws.
        image.save(buf, format="png", compress_level=1)
        return buf.getvalue()


#: Steps of the time axis: each widening is a full draw, so no 2.5 (which the value axes keep,
#: to use more of the height).
TIME_STEPS = (1.0, 2.0, 5.0, 10.0)


def nice(value: float, steps: Sequence[float] = (1.0, 2.0, 2.5, 5.0, 10.0)) -> float:
    """The next 1-2-5 step at or above ``value`` (axis limits that rarely change)."""
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in steps:
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent  # pragma: no cover


def bundle(png: bytes, text: str) -> dict[str, Any]:
    """A raw MIME bundle: the PNG (base64, as the notebook format stores it) and a summary."""
    return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}


#: A figure a finished plot gave back, for the next cell's plot (at most one; the kernel runs
#: one cell at a time, the lock is for the container kernel's drawing thread).
_spare: list[MemoryFigure] = []
_spare_lock = threading.Lock()


def take_figure(title: str) -> MemoryFigure:
    """The spare figure, ready for a new plot, or a new one."""
    with _spare_lock:
        figure = _spare.pop() if _spare else None
    if figure is None:
        return MemoryFigure(title)
    figure.reset(title)
    return figure


def give_back(figure: MemoryFigure) -> None:
    """Keep ``figure`` for the next plot (one is kept; more would only hold memory)."""
    with _spare_lock:
        if not _spare:
            _spare.append(figure)


class LiveDisplay:
    """A display handle that is created on the first frame and updated in place afterwards."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.frames = 0

    def show(self, png: bytes, text: str) -> None:
        """Publish a frame: ``display_data`` the first time, ``update_display_data`` after."""
        from IPython.display import display

        data = bundle(png, text)
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)
        self.frames += 1


class LivePlot:
    """When to draw: after ``after`` seconds (mode ``auto``), at most ``fps`` frames a second.

    Finished series (earlier runs of a comparison) stay in the figure; the running one is
    fetched through ``current`` at each frame, so the meter thread is only read when drawing.
    """

    def __init__(self, mode: str = "auto", after: float = 0.5, fps: float = FRAME_RATE,
                 title: str = "container memory", display: Any = None) -> None:
        from nbcontainer.options import plot_mode

        self.mode = plot_mode(mode)  # auto, on or off (always/never: older spellings)
        self.after = after
        self.interval = 1.0 / max(0.1, fps)
        self.figure: MemoryFigure | None = None
        self.display = display if display is not None else LiveDisplay()
        self.title = title
        self.finished: list[Series] = []
        self._last = -1e9
        self._t0: float | None = None
        self.failed: str | None = None

    @property
    def shown(self) -> bool:
        """True once a frame is in the output."""
        return self.display.handle is not None

    def _draw(self, series: list[Series], text: str, live: bool) -> None:
        if self.failed:
            return
        try:
            if self.figure is None:
                self.figure = take_figure(self.title)
            self.display.show(self.figure.render(series, live=live), text)
        except Exception as err:  # noqa: BLE001 - a plot problem must never stop the cell
            self.failed = f"{type(err).__name__}: {err}"

    def tick(self, now: float, current: Series | None) -> None:
        """Maybe draw a frame; ``now`` is a monotonic time."""
        if self.mode == "off":
            return
        if self._t0 is None:
            self._t0 = now
        if self.mode == "auto" and not self.shown and now - self._t0 < self.after:
            return
        # A frame costs the kernel CPU (bench/RESULTS.md): a long cell gets fewer of them (at most
        # about 30 per cell after the first 30 s), so the plot's cost stays bounded.
        if now - self._last < max(self.interval, (now - self._t0) / 30):
            return
        self._last = now
        series = self.finished + ([current] if current is not None else [])
        latest = series[-1] if series else None
        mem = f"{latest.memory[-1]:.0f} MiB" if latest and latest.memory else "n/a"
        self._draw(series, f"container memory (live): {mem}", live=True)

    def finish(self, text: str) -> None:
        """The last frame, with the summary as its text/plain; drawn when shown or forced."""
        if self.mode == "off" or not (self.shown or self.mode == "on"):
            return
        self._draw(list(self.finished), text, live=False)
        if self.figure is not None and not self.failed:
            give_back(self.figure)
        self.figure = None
