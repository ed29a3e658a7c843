"""The kernel's run options: SPEC section 2's, plus ``--image`` and ``--plot``.

``kernel install`` parses them and stores them in ``kernel.json``'s ``argv``; the kernel
process parses the same list again when Jupyter starts it. One parser for both, so what
install accepted the kernel accepts.
"""

from __future__ import annotations

import argparse

from nbcontainer.errors import UsageError
from nbcontainer.options import RUN_OPTION_DESTS, add_run_options, spec_from_args
from nbcontainer.spec import ContainerSpec

PLOT_CHOICES = ("auto", "on", "off")
#: Run options that make no sense for a kernel: each kernel owns one unnamed container.
#: (``--name`` is also the kernelspec's name in ``kernel install``.)
EXCLUDED = ("name",)


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """The shared run options, ``--image`` and ``--plot`` (parser needs conflict 'resolve')."""
    add_run_options(parser)
    parser.add_argument("--image", default="host", metavar="NAME",
                        help="image for the container (default host: this machine's / "
                             "read-only, so this Python and ipykernel are inside)")
    parser.add_argument("--plot", choices=PLOT_CHOICES, default=None,
                        help="live memory plot per cell: auto (cells longer than ~0.5 s and "
                             "OOM kills; default), on, off; %%memplot changes it in a notebook")


def spec_from_kernel_args(args: argparse.Namespace) -> ContainerSpec:
    """A validated spec (UsageError otherwise); the command is the kernel's, set at start."""
    if getattr(args, "container_name", None):
        raise UsageError("--name: a kernel's container has no name; each kernel gets its own")
    return spec_from_args(args, [], args.image, init=True, name=None)


def run_options_argv(args: argparse.Namespace) -> list[str]:
    """The options given, back in command-line form (``--memory=512m``), for ``kernel.json``."""
    out: list[str] = []
    for dest in RUN_OPTION_DESTS:
        if dest in EXCLUDED or dest == "init":
            continue
        value = getattr(args, dest, None)
        flag = "--" + dest.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, list):
            out.extend(f"{flag}={item}" for item in value)
        else:
            out.append(f"{flag}={value}")
    if args.image != "host":
        out.append(f"--image={args.image}")
    if args.plot is not None:
        out.append(f"--plot={args.plot}")
    return out
