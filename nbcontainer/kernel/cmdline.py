"""The kernel's options: the run options the kernel takes (docs/options.md), plus ``--plot``.

``kernel install`` parses them and stores them in ``kernel.json``'s ``argv``; the kernel
process parses the same list again when Jupyter starts it. One parser for both, so what
install accepted the kernel accepts; the run options themselves come from
:data:`nbcontainer.options.RUN_OPTIONS`.
"""

from __future__ import annotations

import argparse

from nbcontainer.errors import UsageError
from nbcontainer.options import KERNEL, add_run_options, options_argv, spec_from_args
from nbcontainer.spec import ContainerSpec

PLOT_CHOICES = ("auto", "on", "off")


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """The kernel's run options and ``--plot`` (parser needs conflict 'resolve')."""
    add_run_options(parser, KERNEL)
    parser.add_argument("--plot", choices=PLOT_CHOICES, default=None,
                        help="live memory plot per cell: auto (cells longer than ~0.5 s and "
                             "OOM kills; default), on, off; %%memplot changes it in a notebook")


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
    return out
