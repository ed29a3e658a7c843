"""The run options of SPEC section 2, declared once for the CLI, the magics and the kernel.

Both front ends build an :mod:`argparse` parser with :func:`add_run_options` and turn the
parsed namespace into a :class:`~nbcontainer.spec.ContainerSpec` with :func:`spec_from_args`,
so names, syntax and error messages cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

from nbcontainer.spec import ContainerSpec, make_spec

RUN_OPTION_DESTS = (
    "memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "pids_limit", "ns", "net",
    "hostname", "env", "volume", "workdir", "user", "cap_add", "cap_drop", "privileged",
    "timeout", "name", "init",
)


def add_run_options(parser: argparse.ArgumentParser, *, magic: bool = False) -> None:
    """Add the shared run options; ``magic`` adds ``--mem`` and ``--image`` (the magic's forms)."""
    memory_flags = ["-m", "--memory"] + (["--mem"] if magic else [])
    parser.add_argument(*memory_flags, dest="memory", metavar="SIZE",
                        help="memory limit, e.g. 100m or 1g (binary units)")
    parser.add_argument("--memory-swap", dest="memory_swap", metavar="SIZE",
                        help="memory + swap limit; -1 for unlimited swap")
    parser.add_argument("--cpus", metavar="FLOAT", help="CPU quota, e.g. 0.5 = half a core")
    parser.add_argument("--cpu-shares", dest="cpu_shares", metavar="N",
                        help="relative CPU weight (v1 shares; mapped to v2 weight)")
    parser.add_argument("--cpuset-cpus", dest="cpuset_cpus", metavar="LIST",
                        help="CPUs allowed, e.g. 0 or 0-1")
    parser.add_argument("--pids-limit", dest="pids_limit", metavar="N",
                        help="maximum number of tasks")
    parser.add_argument("--ns", metavar="LIST",
                        help="namespaces: comma list of uts,ipc,pid,mount,net,user,cgroup, or "
                             "all, or none (default uts,ipc,pid,mount,cgroup)")
    parser.add_argument("--net", metavar="MODE", choices=None,
                        help="host (share the host's network) or none (own netns, loopback)")
    parser.add_argument("--hostname", metavar="NAME", help="hostname inside")
    parser.add_argument("-e", "--env", action="append", metavar="K=V", default=None,
                        help="environment variable (repeatable)")
    parser.add_argument("-v", "--volume", action="append", metavar="HOST:CTR[:ro]", default=None,
                        help="bind mount (repeatable)")
    parser.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside")
    parser.add_argument("-u", "--user", metavar="UID[:GID]", help="user to run as inside")
    parser.add_argument("--cap-add", dest="cap_add", action="append", metavar="CAP", default=None,
                        help="add a capability")
    parser.add_argument("--cap-drop", dest="cap_drop", action="append", metavar="CAP",
                        default=None, help="drop a capability")
    parser.add_argument("--privileged", action="store_true", default=None,
                        help="all capabilities, no masked paths")
    parser.add_argument("--timeout", metavar="SECONDS",
                        help="wall-clock limit; the whole container is killed on expiry")
    parser.add_argument("--name", metavar="NAME", help="a named, persistent container")
    parser.add_argument("--init", action="store_true", default=None,
                        help="run a reaping, signal-forwarding init as PID 1 (like docker --init)")
    if magic:
        parser.add_argument("--image", metavar="NAME",
                            help="image for the rootfs (default host); none = run on the host's /")


def spec_from_args(args: argparse.Namespace, command: list[str], image: str,
                   defaults: dict[str, Any] | None = None, **overrides: Any) -> ContainerSpec:
    """Build a validated spec from parsed options, falling back to ``defaults`` per option."""
    defaults = defaults or {}

    def pick(dest: str) -> Any:
        value = getattr(args, dest, None)
        return defaults.get(dest) if value is None else value

    values = dict(
        memory=pick("memory"), memory_swap=pick("memory_swap"), cpus=pick("cpus"),
        cpu_shares=pick("cpu_shares"), cpuset_cpus=pick("cpuset_cpus"),
        pids_limit=pick("pids_limit"), ns=pick("ns"), net=pick("net"),
        hostname=pick("hostname"), env=pick("env"), volumes=pick("volume"),
        workdir=pick("workdir"), user=pick("user"), cap_add=pick("cap_add"),
        cap_drop=pick("cap_drop"), privileged=bool(pick("privileged")),
        timeout=pick("timeout"), name=pick("name"), init=bool(pick("init")),
    )
    values.update(overrides)
    return make_spec(command, image=image, **values)


def parse_env_list(items: list[str] | None) -> dict[str, str]:
    """``-e K=V`` items as a dict, each validated."""
    from nbcontainer.spec import parse_env

    return dict(parse_env(item) for item in (items or ()))
