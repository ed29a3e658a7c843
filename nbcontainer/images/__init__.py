"""Images: resolve a name to an ordered list of layer directories plus a small config.

:func:`resolve` knows the built-ins (``host``, ``busybox``, ``scratch``), the content-addressed
store (``name[:tag]``) and image ids (``sha256:<hex>``, which is how build steps run). Import and
save live in :mod:`.oci`, build in :mod:`.build`, commit in :mod:`.commit`.
"""

from __future__ import annotations

from nbcontainer.images.builtin import ImageConfig, ResolvedImage, resolve

__all__ = ["ImageConfig", "ResolvedImage", "resolve"]
