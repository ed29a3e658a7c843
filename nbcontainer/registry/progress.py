"""Pull progress: per-layer bars on a terminal, plain lines elsewhere, or any callback.

A :class:`Progress` receives events from the downloading threads; the base class ignores
them. :class:`LineProgress` writes Docker-like lines (``<short digest>: Downloading``,
``... Pull complete``, ``... Already exists``) and, on a terminal, redraws one bar per layer
in place. The notebook front end passes its own subclass that updates one display.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO


def short(digest: str) -> str:
    """The 12 hex digits Docker shows for a layer."""
    return digest.removeprefix("sha256:")[:12]


class Progress:
    """Events of one pull; every method is called with the instance's lock free."""

    def message(self, text: str) -> None:
        """A whole line: the resolved manifest, the final digest, the status."""

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        """A layer's state changed: ``Waiting``, ``Downloading``, ``Already exists``..."""

    def advance(self, digest: str, n: int) -> None:
        """``n`` more bytes of ``digest`` arrived."""


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB"


class LineProgress(Progress):
    """Docker-like output on ``stream``: bars redrawn in place on a tty, else plain lines."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._state: dict[str, list[object]] = {}  # digest -> [status, done, total]
        self._drawn = 0

    def message(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self._drawn = 0 if not self.tty else self._drawn
            self.stream.flush()

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        with self._lock:
            if digest not in self._state:
                self._order.append(digest)
                self._state[digest] = [status, 0, total]
            entry = self._state[digest]
            entry[0] = status
            if total is not None:
                entry[2] = total
            if self.tty:
                self._redraw()
            elif status != "Waiting":
                self.stream.write(f"{short(digest)}: {status}"
                                  + (f" ({_mb(total)})" if total and status == "Downloading"
                                     else "") + "\n")
                self.stream.flush()

    def advance(self, digest: str, n: int) -> None:
        if not self.tty:
            return
        with self._lock:
            entry = self._state.get(digest)
            if entry is not None:
                entry[1] = int(entry[1]) + n  # type: ignore[call-overload]
                self._redraw()

    def _redraw(self) -> None:
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        for digest in self._order:
            status, done, total = self._state[digest]
            line = f"{short(digest)}: {status}"
            if status == "Downloading" and isinstance(total, int) and total:
                filled = int(30 * int(done) / total)  # type: ignore[call-overload]
                line += (f" [{'=' * filled}{'>' if filled < 30 else ''}{' ' * (29 - filled)}] "
                         f"{_mb(int(done))}/{_mb(total)}")  # type: ignore[call-overload]
            out.append(f"\x1b[2K{line}\n")
        self._drawn = len(self._order)
        self.stream.write("".join(out))
        self.stream.flush()
