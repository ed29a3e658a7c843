"""``nbcontainer kernel install | list | remove``: the container kernel's kernelspecs.

Registered on the CLI through ``add_commands(subparsers)``; handlers return an exit status and
raise nbcontainer errors, which the CLI prints as one line (exit 125).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbcontainer.errors import UsageError
from nbcontainer.kernel import kernelspec
from nbcontainer.kernel.cmdline import add_kernel_options, run_options_argv, spec_from_kernel_args
from nbcontainer.spec import format_size


def cmd_install(args: argparse.Namespace) -> int:
    """Validate the run options, then write the kernelspec."""
    spec = spec_from_kernel_args(args)
    if args.user_install and (args.sys_prefix or args.prefix):
        raise UsageError("kernel install: give one place to install: --user, --sys-prefix or "
                         "--prefix P")
    prefix = sys.prefix if args.sys_prefix else args.prefix
    options = run_options_argv(args)
    display_name = args.display_name or kernelspec.display_name_for(args.kernel_name, options)
    path = kernelspec.install(args.kernel_name, user=args.user_install, prefix=prefix,
                              display_name=display_name, run_options=options, spec=spec)
    print(f"Installed kernelspec {args.kernel_name} ({display_name!r}) in {path}")
    return 0


class _UserAction(argparse.Action):
    """``--user`` alone: install for this user (jupyter's meaning, SPEC section 5);
    ``--user UID[:GID]``: the container's user, as ``-u`` and ``run --user`` (SPEC section 2).

    ``kernel install`` has no positional arguments, so a value after ``--user`` can only be
    the container's user.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values is None:
            namespace.user_install = True
        else:
            namespace.user = values


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
    where.add_argument("--user-install", dest="user_install", action="store_true",
                       default=False,
                       help="install for the current user (~/.local/share/jupyter/kernels) "
                            "instead of system-wide; `--user` alone means the same")
    # Overrides the run options' --user: alone it is the install location (jupyter's --user),
    # with a value the container's user (as -u, which stays a run option).
    install.add_argument("--user", nargs="?", action=_UserAction, dest="user", default=None,
                         metavar="UID[:GID]",
                         help="alone: install for the current user (as --user-install); "
                              "with a value: the user to run as inside, as -u")
    where.add_argument("--sys-prefix", action="store_true",
                       help="install into sys.prefix (e.g. a virtualenv or conda env)")
    where.add_argument("--prefix", metavar="P", help="install under P/share/jupyter/kernels")
    # Overrides the run options' --name (a container name): here it names the kernelspec.
    install.add_argument("--name", dest="kernel_name", default=kernelspec.KERNEL_NAME,
                         metavar="N", help=f"kernelspec name (default {kernelspec.KERNEL_NAME})")
    install.add_argument("--display-name", default=None, metavar="D",
                         help="name shown in Jupyter (default: derived from the name and the "
                              f"options, e.g. 'Python 3 (container c512: memory 512m)'; "
                              f"{kernelspec.DISPLAY_NAME!r} without either)")
    install.set_defaults(func=cmd_install)

    lst = sub.add_parser("list", help="list installed container kernels")
    lst.set_defaults(func=cmd_list)

    rm = sub.add_parser("remove", help="remove installed container kernels")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=cmd_remove)
