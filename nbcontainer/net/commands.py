"""The network subcommands of the CLI: ``network create | ls | rm``.

``add_commands(subparsers)`` registers them; failures are nbcontainer errors, which the CLI
prints as one sentence with exit status 125.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbcontainer.net import nat, networks


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_network_create(args: argparse.Namespace) -> int:
    """``network create NAME [--subnet CIDR]``: prints the network's name."""
    network = networks.create(args.name, args.subnet)
    _out(network["name"])
    if not nat.forwarding():
        sys.stderr.write(f"nbcontainer: warning: {nat.FORWARDING_OFF}\n")
    return 0


def cmd_network_ls(args: argparse.Namespace) -> int:
    """``network ls``: name, bridge, subnet, gateway, containers."""
    rows = [("NAME", "BRIDGE", "SUBNET", "GATEWAY", "CONTAINERS")]
    for network in networks.list_networks():
        rows.append((network["name"], network["bridge"], network["subnet"],
                     network["gateway"], str(len(network["leases"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_network_rm(args: argparse.Namespace) -> int:
    """``network rm NAME...``: refused while a container uses it."""
    for name in args.names:
        networks.remove(name)
        _out(name)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``network`` and its verbs on argparse subparsers."""
    network = subparsers.add_parser("network", help="manage networks (bridges, subnets)")
    verbs = network.add_subparsers(dest="network_cmd", metavar="COMMAND", required=True,
                                   parser_class=type(network))
    p = verbs.add_parser("create", help="create a network: a bridge and a subnet")
    p.add_argument("name")
    p.add_argument("--subnet", metavar="CIDR", help="IPv4 subnet, e.g. 10.89.1.0/24 "
                   "(default: a free /24 of 10.89.0.0/16)")
    p.set_defaults(func=cmd_network_create)
    p = verbs.add_parser("ls", help="list networks")
    p.set_defaults(func=cmd_network_ls)
    p = verbs.add_parser("rm", help="remove networks no container uses")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_network_rm)
