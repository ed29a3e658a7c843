"""nbcontainer: Linux containers built from namespaces, cgroups and overlayfs, for Jupyter.

Public API (imports are lazy so ``import nbcontainer`` stays cheap, which matters for the
container helper that starts a fresh interpreter per container)::

    from nbcontainer import make_spec, run, Container
    result = run(make_spec(["sh", "-c", "echo hi"], image="busybox", memory="100m"))

``%load_ext nbcontainer`` registers the ``%%container`` magics.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is slow to import; the helper must start fast

if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["Container", "Exec", "Result", "make_spec", "run", "load_ipython_extension",
           "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name in ("Container", "Exec", "run"):
        from nbcontainer.runtime import container

        return getattr(container, name)
    if name == "Result":
        from nbcontainer.runtime.result import Result

        return Result
    if name == "make_spec":
        from nbcontainer.spec import make_spec

        return make_spec
    raise AttributeError(name)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbcontainer``: register %%container, %container and %%containerfile."""
    from nbcontainer.notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbcontainer``: remove the containers this session owns."""
    from nbcontainer.notebook.magics import unload_ipython_extension as unload

    unload(ipython)
