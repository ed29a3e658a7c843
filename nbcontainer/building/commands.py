"""The CLI's ``build`` and ``commit``: images made from containers.

``add_commands(subparsers)`` registers them like :mod:`nbcontainer.images.commands`; failures
are nbcontainer errors, which the CLI prints as one line (exit 125).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _print(text: str) -> None:
    print(text, flush=True)


def _same_terminal() -> bool:
    """stdout and stderr both a terminal: the steps' lines go above the progress line."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def cmd_build(args: argparse.Namespace) -> int:
    """Build an image from a Containerfile, printing each step as it runs."""
    from nbcontainer import progress as progress_mod
    from nbcontainer.building.build import build

    # The steps' lines and RUN output on stdout, as before; on a terminal the progress line
    # (stderr) stays below them.
    with progress_mod.default() as progress:
        build(args.context, args.tag, containerfile=args.file, root=getattr(args, "root", None),
              out=progress.write if _same_terminal() else _print,
              progress=progress)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    """Store a container's changes as a new image and print its id."""
    from nbcontainer import progress as progress_mod
    from nbcontainer.building.commit import commit

    with progress_mod.default() as progress:
        record = commit(args.container, args.image, root=getattr(args, "root", None),
                        message=args.message, pause=not args.no_pause, progress=progress)
    print(record.id)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register build and commit on argparse subparsers."""
    p = subparsers.add_parser(
        "build", help="build an image from a Containerfile (FROM, RUN, COPY, ENV, WORKDIR, CMD, "
                      "LABEL), with a layer cache")
    p.add_argument("-t", "--tag", required=True, help="NAME[:TAG] of the image to build")
    p.add_argument("-f", "--file", help="the Containerfile (default: DIR/Containerfile, "
                                        "else DIR/Dockerfile)")
    p.add_argument("context", metavar="DIR", help="build context: COPY sources come from here")
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("commit", help="store a container's changes as a new image")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("image", metavar="IMAGE", help="NAME[:TAG] of the new image")
    p.add_argument("-m", "--message", help="comment kept in the image's history")
    p.add_argument("--no-pause", action="store_true",
                   help="do not freeze a running container while committing")
    p.set_defaults(func=cmd_commit)
