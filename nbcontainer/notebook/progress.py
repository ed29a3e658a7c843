"""Progress in a notebook: one display in the cell, updated in place (see nbcontainer.progress).

The first draw creates the display (``display_data`` with a display id); every later one
updates it (``update_display_data``), so a pull of ten layers or a build of twelve steps is
one block of output whose bars move, not a scroll of lines. It carries text/plain (what
nbconvert and a terminal client show) and text/html (a ``<progress>`` bar per task). Text that
belongs with the work (a RUN step's output) is printed as ordinary output below it.
"""

from __future__ import annotations

import html
from typing import Any

from nbcontainer.progress import Progress, Renderer, Task


def _html(progress: Progress) -> str:
    rows = []
    for task in progress.tasks:
        fraction = task.fraction()
        if task.state == "running" and fraction is not None:
            bar = f'<progress value="{fraction:.3f}" max="1" style="width:12em"></progress>'
        elif task.state == "running":
            bar = '<progress style="width:12em"></progress>'  # indeterminate
        else:
            bar = "&#10003;" if task.state == "done" else "&#10007;"
        rows.append(
            f"<tr><td style='text-align:left'>{html.escape(task.label)}</td><td>{bar}</td>"
            f"<td style='text-align:left'>{html.escape(task.amount())}</td>"
            f"<td style='text-align:left'>{html.escape(task.note)}</td></tr>")
    title = f"<div><b>{html.escape(progress.title)}</b></div>" if progress.title else ""
    return f"{title}<table>{''.join(rows)}</table>"


class NotebookRenderer(Renderer):
    """Draws into one IPython display, created on the first draw and updated after."""

    def __init__(self) -> None:
        self._handle: Any = None

    def bundle(self, progress: Progress) -> dict[str, str]:
        """The display's MIME bundle."""
        return {"text/plain": "\n".join(progress.lines()), "text/html": _html(progress)}

    def draw(self, progress: Progress, changed: Task | None, final: bool) -> None:
        from IPython.display import display

        data = self.bundle(progress)
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)

    def write(self, progress: Progress, text: str) -> None:
        print(text, flush=True)


def for_notebook(title: str = "") -> Progress:
    """A :class:`Progress` shown as one display in the running cell."""
    return Progress(NotebookRenderer(), title)
