"""The runtime: containers (:class:`Container`), execs into them (:class:`Exec`), results.

Lazy: the container helper imports :mod:`nbcontainer.child.helper` through this package, and
must not pay for the supervisor's imports (subprocess, cgroups, images) at every start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is slow to import; the helper must start fast

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Container", "Exec", "Result", "run"]


def __getattr__(name: str) -> Any:
    if name in ("Container", "Exec", "run"):
        from nbcontainer.runtime import container

        return getattr(container, name)
    if name == "Result":
        from nbcontainer.runtime.result import Result

        return Result
    raise AttributeError(name)
