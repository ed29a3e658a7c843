"""The dedicated Jupyter kernel: every cell runs inside one container (docs/kernel.md).

Jupyter starts :mod:`nbcontainer.kernel` (``python -m nbcontainer.kernel -f CONN [OPTIONS]``),
a small process on the host that owns a container running a stock ipykernel and relays the
Jupyter protocol to it (:mod:`~nbcontainer.kernel.proxy`). Because the kernel inside is a real
ipykernel, completion, inspection, history, ``input()``, comms and rich output all work as
usual; because the relay lives outside, it survives the container: an OOM kill becomes an error
in the cell, the next cell runs in a fresh container, and the per-cell memory plot is drawn from
the side that is still alive.

Modules: :mod:`~.kernelspec` (install), :mod:`~.commands` (``nbcontainer kernel ...``),
:mod:`~.wire` (message frames), :mod:`~.inner` (the container and its sockets),
:mod:`~.display` (where the per-cell plot goes), :mod:`~.proxy` (the relay), :mod:`~.extension`
(``%memplot``, loaded inside the container).
"""

from __future__ import annotations

from nbcontainer.kernel.kernelspec import DISPLAY_NAME, KERNEL_NAME, install

__all__ = ["DISPLAY_NAME", "KERNEL_NAME", "install"]
