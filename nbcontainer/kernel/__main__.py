"""``python -m nbcontainer.kernel -f CONNECTION_FILE [RUN OPTIONS]``: what kernel.json starts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from nbcontainer.errors import ContainerError
from nbcontainer.kernel.cmdline import add_kernel_options, spec_from_kernel_args, with_notebook_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then serve until shutdown. A bad option is one line on stderr (the server log)."""
    parser = argparse.ArgumentParser(prog="python -m nbcontainer.kernel",
                                     conflict_handler="resolve")
    parser.add_argument("-f", "--connection-file", required=True)
    add_kernel_options(parser)
    # In the kernel, --name would be the container's: refused with a clear message.
    parser.add_argument("--name", dest="container_name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        spec = spec_from_kernel_args(args)
        with open(args.connection_file) as f:
            connection = json.load(f)
        note = None
        if args.notebook_dir:
            # Jupyter starts the kernel in the notebook's directory.
            spec, note = with_notebook_dir(spec, os.getcwd())
        if note:
            sys.stderr.write(f"nbcontainer kernel: {note}\n")
    except (ContainerError, OSError, ValueError) as err:
        sys.stderr.write(f"nbcontainer kernel: {err}\n")
        return 125
    from nbcontainer.kernel.proxy import KernelProxy

    return KernelProxy(connection, spec, plot=args.plot or "auto").run()


if __name__ == "__main__":
    sys.exit(main())
