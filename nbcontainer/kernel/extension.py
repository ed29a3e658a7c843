"""Loaded by the ipykernel inside the container: ``%memplot on|off|auto``.

The plot is drawn by the relay outside (the side that survives an OOM kill), which reads the
same line from the cell's code before passing it in; this magic validates it and says what
happens, so a typo is an error in the cell rather than a silent no-op.
"""

from __future__ import annotations

import os
from typing import Any

CHOICES = ("on", "off", "auto", "always", "never")  # always/never: older spellings


def memplot(line: str) -> None:
    """``%memplot on|off|auto``: the live memory plot for this kernel's cells.

    ``on`` draws it for every cell, ``off`` never, ``auto`` for cells that run longer than
    about half a second (and for a cell whose container was OOM-killed). It takes effect with
    the cell that contains the magic.
    """
    from IPython.core.error import UsageError

    arg = line.strip()
    if not arg:
        print(f"live memory plot: {os.environ.get('NBCONTAINER_KERNEL_PLOT', 'auto')}")
        return
    if arg not in CHOICES:
        raise UsageError(f"%memplot: unknown mode {arg!r}; use on, off or auto")
    arg = {"always": "on", "never": "off"}.get(arg, arg)
    os.environ["NBCONTAINER_KERNEL_PLOT"] = arg
    print(f"live memory plot: {arg}")


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%memplot``."""
    ipython.register_magic_function(memplot, "line", "memplot")
