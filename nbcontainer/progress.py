"""Progress of long work (pull, build, import, commit): one model, a renderer per front end.

The work reports into a :class:`Progress`: one :class:`Task` per unit a user waits for (a layer
being fetched or unpacked, a build step), each with how much is done of how much; text that
belongs with the work (a RUN step's output) goes through :meth:`Progress.write`, so it never
lands in the middle of a redrawn line. The work never knows where it is shown:

- :class:`TerminalRenderer` (here): on a terminal, one line per task redrawn in place (``\\r``
  and cursor-up, at most ten times a second); elsewhere (a pipe, a log, CI) plain lines, one
  when a task starts and one when it ends, no control characters.
- ``nbcontainer.notebook.progress.NotebookRenderer``: one display in the cell, updated in
  place through its display handle (text/plain and text/html).

Code that may run without a caller's progress takes ``progress: Progress | None`` and uses
:func:`or_silent`. Standard library only: the bottom of the package, importable from anywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

#: Redraws per second at most (state changes and the end are always drawn).
MAX_RATE = 10.0
BAR_WIDTH = 20


def human_bytes(n: float) -> str:
    """Binary units, as ``docker`` and ``nbcontainer images`` print sizes (``12.3MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}GB"  # pragma: no cover - the loop returns


class Task:
    """One thing being done: a label, how much is done of how much, and how it ended."""

    def __init__(self, owner: Progress, label: str, total: float | None, unit: str) -> None:
        self._owner = owner
        self.label = label
        self.total = total
        self.done = 0.0
        #: ``B``: sizes in bytes; anything else is a count of that unit (``steps``, or "").
        self.unit = unit
        #: running, done, failed
        self.state = "running"
        self.note = ""

    def update(self, done: float | None = None, *, advance: float = 0.0,
               total: float | None = None, note: str | None = None) -> None:
        """Set (``done``) or add to (``advance``) the amount done; a total or note may change."""
        if done is not None:
            self.done = done
        self.done += advance
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        self._owner._changed(self, important=False)

    def finish(self, note: str = "done", total: float | None = None) -> None:
        """It ended well; ``note`` says how (``done``, ``cached``, ``already there``)."""
        if total is not None:
            self.total = total
        if self.total is not None:
            self.done = self.total
        self.state, self.note = "done", note
        self._owner._changed(self, important=True)

    def fail(self, note: str) -> None:
        """It ended badly; ``note`` says why in a few words."""
        self.state, self.note = "failed", note
        self._owner._changed(self, important=True)

    def fraction(self) -> float | None:
        """Done as a fraction of the total (None without a total)."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def amount(self) -> str:
        """How much is done (of how much), in the task's unit."""
        fmt: Callable[[float], str] = human_bytes if self.unit == "B" else (
            lambda n: f"{n:.0f}")
        suffix = "" if self.unit in ("B", "") else f" {self.unit}"
        if self.total is None:
            return f"{fmt(self.done)}{suffix}" if self.done else ""
        return f"{fmt(self.done)}/{fmt(self.total)}{suffix}"

    def line(self, bar: bool = True) -> str:
        """The task as one line of text: label, bar, amount, note."""
        parts = [self.label]
        fraction = self.fraction()
        if bar and self.state == "running" and fraction is not None:
            filled = round(fraction * BAR_WIDTH)
            parts.append("[" + "=" * filled + " " * (BAR_WIDTH - filled) + "]")
        amount = self.amount()
        if amount:
            parts.append(amount)
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)


class Renderer:
    """Where a :class:`Progress` is shown. Subclasses draw; the base draws nothing."""

    def draw(self, progress: Progress, changed: Task | None, final: bool) -> None:
        """Show the progress; ``changed`` is the task that just started or ended, if any."""

    def write(self, progress: Progress, text: str) -> None:
        """Show a line of text that belongs with the work, above the progress."""


class Progress:
    """The progress of one piece of work: its tasks, shown by a renderer as they change.

    Thread-safe (a pull may fetch layers in parallel). Use as a context manager, or call
    :meth:`close` at the end: the last state is drawn once more.
    """

    def __init__(self, renderer: Renderer | None = None, title: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.renderer = renderer or Renderer()
        self.title = title
        self.tasks: list[Task] = []
        self._lock = threading.RLock()
        self._clock = clock
        self._last_draw = float("-inf")
        self._closed = False

    def task(self, label: str, total: float | None = None, unit: str = "B") -> Task:
        """A new task, shown from now on."""
        with self._lock:
            task = Task(self, label, total, unit)
            self.tasks.append(task)
            self._draw(task, final=False)
            return task

    def write(self, text: str) -> None:
        """A line of text that belongs with the work (e.g. a RUN step's output)."""
        with self._lock:
            self.renderer.write(self, text)

    def lines(self) -> list[str]:
        """Every task as a line, the title first if there is one."""
        return ([self.title] if self.title else []) + [t.line() for t in self.tasks]

    def close(self) -> None:
        """Draw the final state. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._draw(None, final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _changed(self, task: Task, important: bool) -> None:
        with self._lock:
            if self._closed:
                return
            if important or self._clock() - self._last_draw >= 1.0 / MAX_RATE:
                self._draw(task if important else None, final=False)

    def _draw(self, changed: Task | None, final: bool) -> None:
        self._last_draw = self._clock()
        self.renderer.draw(self, changed, final)


def or_silent(progress: Progress | None) -> Progress:
    """The caller's progress, or one that shows nothing."""
    return progress if progress is not None else Progress()


class TerminalRenderer(Renderer):
    """Progress on a terminal (redrawn in place) or on a plain stream (a line per event)."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = self.stream.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self._drawn = 0  # lines of ours on the screen below the cursor's line start
        self._started: set[int] = set()

    def draw(self, progress: Progress, changed: Task | None, final: bool) -> None:
        if self.tty:
            self._redraw(progress)
            if final:
                self._drawn = 0  # leave the last state on the screen
            return
        # Plain lines: a task's start and its end, nothing in between.
        for task in progress.tasks:
            if id(task) not in self._started:
                self._started.add(id(task))
                if task.state == "running":
                    self._emit(f"{task.label}  ...")
            if task is changed and task.state != "running":
                self._emit(task.line(bar=False))

    def write(self, progress: Progress, text: str) -> None:
        if not self.tty:
            self._emit(text)
            return
        self._erase()
        self.stream.write(text.rstrip("\n") + "\n")
        self._redraw(progress)

    def _emit(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _erase(self) -> None:
        """Remove our lines: back to the first one, clearing each (``ESC[K``)."""
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}A")
        self.stream.write("\r\x1b[J")  # ESC[J: clear to the end of the screen
        self._drawn = 0

    def _redraw(self, progress: Progress) -> None:
        lines = progress.lines()
        self._erase()
        width = _terminal_width(self.stream)
        for line in lines:
            self.stream.write(line[:width - 1] + "\x1b[K\n")
        self._drawn = len(lines)
        self.stream.flush()


def _terminal_width(stream: IO[str]) -> int:
    import os

    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or 100  # a terminal that never said its size reports 0


def for_terminal(title: str = "", stream: IO[str] | None = None) -> Progress:
    """A :class:`Progress` shown on ``stream`` (default stderr), in place if it is a terminal."""
    return Progress(TerminalRenderer(stream), title)


_shown_by: contextvars.ContextVar[Callable[[str], Progress] | None] = contextvars.ContextVar(
    "nbcontainer_progress", default=None)


@contextlib.contextmanager
def shown_by(factory: Callable[[str], Progress]) -> Iterator[None]:
    """Within the block, :func:`default` makes its progress with ``factory`` (the notebook
    runs the CLI's commands in-process, and wants its display, not terminal lines)."""
    token = _shown_by.set(factory)
    try:
        yield
    finally:
        _shown_by.reset(token)


def default(title: str = "") -> Progress:
    """The progress a command shows: the front end's (:func:`shown_by`), else stderr's."""
    factory = _shown_by.get()
    return factory(title) if factory is not None else for_terminal(title)
