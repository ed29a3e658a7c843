"""Images: resolve a name to an ordered list of layer directories plus a small config.

This first version knows the built-in images only (``host``, ``busybox``, ``scratch``); the
content-addressed store, import, export, build and commit extend it behind the same
:func:`resolve` call.
"""

from __future__ import annotations

from nbcontainer.images.builtin import ImageConfig, ResolvedImage, resolve

__all__ = ["ImageConfig", "ResolvedImage", "resolve"]
