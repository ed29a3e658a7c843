"""The registry subcommands of the CLI: pull, push, login, logout (``%container pull`` too).

Each handler returns an exit status; failures are nbcontainer errors the CLI prints as one
line with exit status 125.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from nbcontainer.errors import RegistryError, UsageError
from nbcontainer.reference import DEFAULT_DOMAIN, parse, parse_registry


def cmd_pull(args: argparse.Namespace) -> int:
    """``pull [--platform P] [-q] REF``: progress on stdout, the reference at the end."""
    from nbcontainer.registry.progress import LineProgress, Progress
    from nbcontainer.registry.pull import pull

    ref = parse(args.reference)
    progress = Progress() if args.quiet else LineProgress(sys.stdout)
    result = pull(ref, platform=args.platform, root=getattr(args, "root", None),
                  progress=progress)
    if not args.quiet:
        print(f"Status: {'Downloaded newer image' if result.fetched else 'Image is up to date'} "
              f"for {ref.familiar}")
    print(str(ref))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """``push IMAGE REF``: upload what the registry lacks, then the manifest."""
    from nbcontainer.registry.progress import LineProgress, Progress
    from nbcontainer.registry.push import push

    progress = Progress() if args.quiet else LineProgress(sys.stdout)
    result = push(args.image, args.reference, root=getattr(args, "root", None),
                  progress=progress)
    print(f"{result.reference}: digest: {result.digest} size: {result.size}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise UsageError("login: no password: pipe it in with --password-stdin (stdin is not a "
                         "terminal to ask on)")
    if not password:
        raise UsageError("login: the password is empty")
    return password


def cmd_login(args: argparse.Namespace) -> int:
    """``login [-u USER] [--password-stdin] [REGISTRY]``: check the credentials, keep them."""
    from nbcontainer.registry.client import RegistryClient
    from nbcontainer.registry.credentials import Credentials, store_credentials

    registry = parse_registry(args.registry or DEFAULT_DOMAIN)
    user = args.username
    if not user:
        if args.password_stdin or not sys.stdin.isatty():
            raise UsageError("login: give the user name with -u USER")
        user = input("Username: ").strip()
    creds = Credentials(user, _read_password(args))
    api = "registry-1.docker.io" if registry == DEFAULT_DOMAIN else registry
    client = RegistryClient(registry, api, credentials=creds)
    try:
        client.ping(f"the login of {user!r}")
    except RegistryError as err:
        raise RegistryError(f"login to {registry} failed: {err}") from None
    where = store_credentials(registry, creds)
    print(f"Login Succeeded (credentials kept in {where})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    """``logout [REGISTRY]``: forget the credentials kept for it."""
    from nbcontainer.registry.credentials import erase_credentials

    registry = parse_registry(args.registry or DEFAULT_DOMAIN)
    if erase_credentials(registry):
        print(f"Removing login credentials for {registry}")
    else:
        print(f"Not logged in to {registry}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register pull, push, login and logout on argparse subparsers."""
    p = subparsers.add_parser("pull", help="pull an image from a registry")
    p.add_argument("reference", metavar="REF",
                   help="[REGISTRY[:PORT]/]REPO[:TAG|@sha256:DIGEST], e.g. python:3.12")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="pick this platform from a multi-platform image (default: this "
                        "machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the reference")
    p.set_defaults(func=cmd_pull)

    p = subparsers.add_parser("push", help="push a stored image to a registry")
    p.add_argument("image", metavar="IMAGE", help="a stored image")
    p.add_argument("reference", metavar="REF", help="where to: [REGISTRY[:PORT]/]REPO[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-layer lines")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser("login", help="log in to a registry (Docker's config.json)")
    p.add_argument("-u", "--username", metavar="USER")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("registry", nargs="?", metavar="REGISTRY",
                   help="host[:port] (default: Docker Hub)")
    p.set_defaults(func=cmd_login)

    p = subparsers.add_parser("logout", help="forget a registry's credentials")
    p.add_argument("registry", nargs="?", metavar="REGISTRY",
                   help="host[:port] (default: Docker Hub)")
    p.set_defaults(func=cmd_logout)
