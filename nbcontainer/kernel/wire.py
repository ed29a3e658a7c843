"""Jupyter wire-protocol frames, read just enough to route them.

The relay forwards frames byte for byte (the inner kernel shares the outer key, so signatures
stay valid) and only decodes the few JSON frames it routes by: the header, and for replies and
a few IOPub messages the parent header. Decoding the content of every message would cost time
on each cell for nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DELIM = b"<IDS|MSG>"


@dataclass
class Frames:
    """One multipart message split at the delimiter: routing identities, then the message."""

    frames: list[bytes]
    at: int  # index of the delimiter

    @classmethod
    def parse(cls, frames: list[bytes]) -> Frames:
        """Find the delimiter; ValueError when there is none (not a Jupyter message)."""
        return cls(frames, frames.index(DELIM))

    @property
    def idents(self) -> list[bytes]:
        """The routing prefix (ROUTER identities, or an IOPub topic)."""
        return self.frames[: self.at]

    def _json(self, offset: int) -> dict[str, Any]:
        try:
            value = json.loads(self.frames[self.at + offset])
        except (IndexError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def header(self) -> dict[str, Any]:
        """The message's own header."""
        return self._json(2)

    def parent(self) -> dict[str, Any]:
        """The header of the request this message answers (empty for none)."""
        return self._json(3)

    def content(self) -> dict[str, Any]:
        """The decoded content (only decoded on demand: it can be large)."""
        return self._json(5)

    def raw_content(self) -> bytes:
        """The content frame undecoded, for cheap substring checks."""
        return self.frames[self.at + 5] if len(self.frames) > self.at + 5 else b""
