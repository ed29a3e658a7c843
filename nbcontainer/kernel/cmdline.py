"""The kernel's options: the run options the kernel takes (docs/options.md), plus ``--plot``.

``kernel install`` parses them and stores them in ``kernel.json``'s ``argv``; the kernel
process parses the same list again when Jupyter starts it. One parser for both, so what
install accepted the kernel accepts; the run options themselves come from
:data:`nbcontainer.options.RUN_OPTIONS`.
"""

from __future__ import annotations

import argparse
import os

from nbcontainer.errors import UsageError
from nbcontainer.options import (
    KERNEL,
    PLOT_MODES,
    add_run_options,
    options_argv,
    plot_mode,
    spec_from_args,
)
from nbcontainer.spec import ContainerSpec

PLOT_CHOICES = PLOT_MODES


def _plot_arg(text: str) -> str:
    """argparse type for --plot: auto, on, off, or an older spelling of on/off."""
    try:
        return plot_mode(text)
    except UsageError:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}; use auto, on or off") from None


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """The kernel's run options and ``--plot`` (parser needs conflict 'resolve')."""
    add_run_options(parser, KERNEL)
    parser.add_argument("--plot", type=_plot_arg, default=None, metavar="{auto,on,off}",
                        help="live memory plot per cell: auto (cells longer than ~0.5 s, and "
                             "cells whose container died; default), on, off (as the magics' "
                             "ContainerMagics.plot; always/never accepted for on/off); "
                             "%%memplot changes it in a notebook")
    parser.add_argument("--no-notebook-dir", dest="notebook_dir", action="store_false",
                        default=True,
                        help="do not bind the notebook's directory into the container (by "
                             "default it is bound read-write at the same path and is the "
                             "working directory, so files a cell writes appear next to the "
                             "notebook)")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const="off",
                        help="no live memory plot (--plot=off), as %%%%container --no-plot")


def with_notebook_dir(spec: ContainerSpec, directory: str) -> tuple[ContainerSpec, str | None]:
    """The notebook's directory bound read-write at the same path, and the working directory.

    Jupyter starts a kernel in the notebook's directory, and a notebook user expects a file
    the code writes there (``df.to_csv("out.csv")``) to appear next to the notebook, not in
    the container's throwaway layer. Returns (spec, why not) with a sentence when it is not
    bound: ``/`` is never bound (the host's root, writable inside, would undo the container).
    """
    from nbcontainer.spec import Volume

    if os.path.realpath(directory) == "/":
        return spec, ("the kernel started in /, which is not bound into the container; files "
                      "written there stay in the container and go with it")
    if any(v.container.rstrip("/") == directory.rstrip("/") for v in spec.volumes):
        return spec.with_(workdir=spec.workdir or directory), None
    return spec.with_(volumes=(*spec.volumes, Volume(directory, directory)),
                      workdir=spec.workdir or directory), None


def spec_from_kernel_args(args: argparse.Namespace) -> ContainerSpec:
    """A validated spec (UsageError otherwise); the command is the kernel's, set at start."""
    if getattr(args, "container_name", None):
        raise UsageError("--name: a kernel's container has no name; each kernel gets its own")
    return spec_from_args(args, [], None, init=True, name=None)


def run_options_argv(args: argparse.Namespace) -> list[str]:
    """The options given, back in command-line form (``--memory=512m``), for ``kernel.json``."""
    out = options_argv(args, KERNEL)
    if args.plot is not None:
        out.append(f"--plot={args.plot}")
    if not getattr(args, "notebook_dir", True):
        out.append("--no-notebook-dir")
    return out
