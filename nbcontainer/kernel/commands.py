"""``nbcontainer kernel install | list | remove``: the container kernel's kernelspecs.

Registered on the CLI through ``add_commands(subparsers)``; handlers return an exit status and
raise nbcontainer errors, which the CLI prints as one line (exit 125).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbcontainer.kernel import kernelspec
from nbcontainer.kernel.cmdline import add_kernel_options, run_options_argv, spec_from_kernel_args
from nbcontainer.spec import format_size


def cmd_install(args: argparse.Namespace) -> int:
    """Validate the run options, then write the kernelspec."""
    spec = spec_from_kernel_args(args)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = kernelspec.install(args.kernel_name, user=args.user_install, prefix=prefix,
                              display_name=args.display_name,
                              run_options=run_options_argv(args), spec=spec)
    print(f"Installed kernelspec {args.kernel_name} ({args.display_name!r}) in {path}")
    return 0


def _describe(data: dict[str, Any]) -> str:
    meta = (data.get("metadata") or {}).get("nbcontainer") or {}
    limits = (meta.get("spec") or {}).get("limits") or {}
    opts = " ".join(meta.get("run_options") or []) or "(defaults)"
    mem = f"memory {format_size(limits['memory'])}" if limits.get("memory") else "no memory limit"
    return f"{mem}; options: {opts}"


def cmd_list(args: argparse.Namespace) -> int:
    """List installed container kernels with their options."""
    for name, (directory, data) in kernelspec.installed().items():
        print(f"{name}  {data.get('display_name', '')!r}  {directory}\n    {_describe(data)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove container kernelspecs by name."""
    for name in args.names:
        print(f"Removed {kernelspec.remove(name)}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``kernel install | list | remove`` on the CLI's subparsers."""
    kernel = subparsers.add_parser("kernel", help="the container kernel for Jupyter")
    sub = kernel.add_subparsers(dest="kernel_cmd", metavar="COMMAND", parser_class=type(kernel))
    sub.required = True

    install = sub.add_parser(
        "install", conflict_handler="resolve",
        help="install a kernelspec whose cells run in a container with these options",
        description="Install a Jupyter kernelspec whose notebooks run every cell inside one "
                    "container created with these run options. Install one per profile, e.g. "
                    "--name c512 --display-name 'Python 3 (container, 512 MiB)' -m 512m.")
    add_kernel_options(install)
    where = install.add_mutually_exclusive_group()
    # Its own dest: the run options' -u/--user (dest "user") is the container's user.
    where.add_argument("--user", dest="user_install", action="store_true",
                       help="install for the current user instead of system-wide")
    where.add_argument("--sys-prefix", action="store_true",
                       help="install into sys.prefix (e.g. a virtualenv or conda env)")
    where.add_argument("--prefix", metavar="P", help="install under P/share/jupyter/kernels")
    # Overrides the run options' --name (a container name): here it names the kernelspec.
    install.add_argument("--name", dest="kernel_name", default=kernelspec.KERNEL_NAME,
                         metavar="N", help=f"kernelspec name (default {kernelspec.KERNEL_NAME})")
    install.add_argument("--display-name", default=kernelspec.DISPLAY_NAME, metavar="D",
                         help=f"name shown in Jupyter (default {kernelspec.DISPLAY_NAME!r})")
    install.set_defaults(func=cmd_install)

    lst = sub.add_parser("list", help="list installed container kernels")
    lst.set_defaults(func=cmd_list)

    rm = sub.add_parser("remove", help="remove installed container kernels")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=cmd_remove)
