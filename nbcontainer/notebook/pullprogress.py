"""Pull progress in a notebook: one display, updated in place (``%container pull``, and the
pull a ``%%container --image REF`` cell starts).

The display is created on the first event, so a cell whose image is already stored shows
nothing; byte counts redraw it at most ten times a second (downloads report every MiB from
several threads; ipykernel publishes from any thread).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from nbcontainer.registry.progress import Progress, short


class DisplayProgress(Progress):
    """A text/plain display of the pull's lines and one line per layer, updated in place."""

    def __init__(self, interval: float = 0.1) -> None:
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._layers: dict[str, list[Any]] = {}  # digest -> [status, done, total]
        self._handle: Any = None
        self._last = 0.0
        self._interval = interval

    def text(self) -> str:
        """What the display shows now."""
        lines = list(self._messages[:1])
        for digest, (status, done, total) in self._layers.items():
            line = f"{short(digest)}: {status}"
            if status == "Downloading" and total:
                line += f" {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done // total}%)"
            lines.append(line)
        lines += self._messages[1:]
        return "\n".join(lines)

    def message(self, text: str) -> None:
        with self._lock:
            self._messages.append(text)
        self._refresh(force=True)

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        with self._lock:
            entry = self._layers.setdefault(digest, [status, 0, total])
            entry[0] = status
            if total is not None:
                entry[2] = total
        self._refresh(force=True)

    def advance(self, digest: str, n: int) -> None:
        with self._lock:
            if digest in self._layers:
                self._layers[digest][1] += n
        self._refresh()

    def _refresh(self, force: bool = False) -> None:
        from IPython.display import display

        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            self._last = now
            bundle = {"text/plain": self.text()}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
