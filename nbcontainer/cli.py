"""``nbcontainer``: the command line, with Docker's verbs and exit statuses (see README.md).

Every expected failure is a :class:`~nbcontainer.errors.ContainerError`, printed as one line
``nbcontainer: <what is wrong and what to do>`` with exit status 125; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from nbcontainer.errors import ContainerError, UsageError
from nbcontainer.options import CLI, add_run_options, did_you_mean, spec_from_args
from nbcontainer.paths import configured_root, store_root
from nbcontainer.spec import format_size

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any

# Modules that add their own subcommands through ``add_commands(subparsers)``.
COMMAND_MODULES = ("nbcontainer.images.commands", "nbcontainer.building.commands",
                   "nbcontainer.kernel.commands", "nbcontainer.net.commands",
                   "nbcontainer.registry.commands")


class ArgumentError(UsageError):
    """argparse found a bad command line."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so errors become exit status 125.

    No abbreviations (``--mem`` is an alias, not a prefix: Docker's flags are exact too),
    and a misspelled option or command gets "did you mean ...?".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(f"{did_you_mean(message, self)} (see `{self.prog} --help`)")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"nbcontainer: {text}\n")


# -- run / exec ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """``run [OPTIONS] IMAGE [COMMAND [ARG...]]``."""
    from nbcontainer.runtime import detach
    from nbcontainer.runtime.container import Container

    spec = spec_from_args(args, args.command, args.image, tty=bool(args.tty))
    root = store_root(args.root)
    if args.detach:
        cid = detach.start_detached(spec, root, auto_remove=args.rm)
        _out(cid)
        return 0
    # Like `docker run --name`: a named container's record stays (ps -a, logs, commit) until
    # `nbcontainer rm`; --rm or no name removes it with the run.
    stdio: dict[str, Any] = {}
    if spec.tty:
        # The container's stdio is its own terminal (runtime/terminal.py): nothing inside
        # holds this process's terminal, not even during setup.
        stdio = dict.fromkeys(("stdin", "stdout", "stderr"), subprocess.DEVNULL)
    # The CLI is single-threaded: it forks the container's helper itself (no second
    # interpreter start), as a zygote would.
    container = Container(spec, root=root, keep=spec.name is not None and not args.rm,
                          fork_helper=True, **stdio)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # Like docker's sig-proxy: each signal goes to the container's first process; a
        # second interrupt kills the whole container (a PID 1 without a handler ignores it).
        if signum == signal.SIGINT and signal.SIGINT in received:
            container.kill()
        received.append(signum)
        container.send_signal(signum)

    # Installed before start, so a Ctrl-C that lands while the container is being set up is
    # forwarded (or, before it exists, replayed) instead of killing the supervisor.
    previous = {s: signal.signal(s, forward)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        container.start()
        if spec.network is not None and args.net is not None:
            from nbcontainer.net import nat

            # Docker warns the same way; the setting is the machine's. Only when a network
            # was asked for by name: the default one is quiet (`info` reports it).
            if not nat.forwarding():
                _err(f"warning: {nat.FORWARDING_OFF}")
        for signum in received:
            container.send_signal(signum)
        if container.console is not None:
            from nbcontainer.runtime import terminal

            # Like docker: stdin goes in with -i, or when it is the user's terminal.
            result = terminal.relay(container, forward_stdin=args.interactive
                                    or os.isatty(0))
        else:
            result = container.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        container.cleanup()
    if result.oom_killed or result.timed_out:
        _err(f"container {container.name} {result.describe()}")
    return result.exit_code


def cmd_exec(args: argparse.Namespace) -> int:
    """``exec CONTAINER COMMAND [ARG...]``."""
    from nbcontainer.options import parse_env_list
    from nbcontainer.runtime import state as state_mod
    from nbcontainer.runtime.container import Exec
    from nbcontainer.spec import parse_user

    st = state_mod.find(store_root(args.root), args.container)
    proc = Exec(st, args.command, env=parse_env_list(args.env), workdir=args.workdir,
                user=parse_user(args.user) if args.user else None, fork_helper=True).start()
    previous = signal.signal(signal.SIGINT, lambda s, f: proc.send_signal(s))
    try:
        result = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        proc.cleanup()
    return result.exit_code


# -- inspection --------------------------------------------------------------------------------


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = max(0, time.time() - ts)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if delta >= size:
            return f"{int(delta // size)} {unit} ago"
    return f"{int(delta)} seconds ago"


def _status_text(st: Any) -> str:
    if st.status == "exited" or not st.is_running():
        code = "?" if st.exit_code is None else st.exit_code
        return f"Exited ({code}) {_ago(st.finished)}"
    if st.status == "paused":
        return f"Up {_ago(st.started).replace(' ago', '')} (Paused)"
    return f"Up {_ago(st.started).replace(' ago', '')}"


def cmd_ps(args: argparse.Namespace) -> int:
    """``ps [-a] [-q]``."""
    from nbcontainer.runtime import state as state_mod

    rows = [st for st in state_mod.all_states(store_root(args.root)) if args.all or st.is_running()]
    if args.quiet:
        for st in rows:
            _out(st.id)
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "ADDRESS", "PORTS",
              "NAMES")]
    for st in rows:
        command = " ".join(st.command)
        command = command if len(command) <= 30 else command[:27] + "..."
        net = st.network if st.is_running() and st.network else {}
        table.append((st.id, st.image, f'"{command}"', _ago(st.created), _status_text(st),
                      net.get("address", ""), ", ".join(net.get("ports", [])), st.name or ""))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        _out("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """``logs CONTAINER``: what a detached container wrote to stdout and stderr."""
    from nbcontainer.runtime import state as state_mod

    st = state_mod.find(store_root(args.root), args.container)
    path = state_mod.container_path(store_root(args.root), st.id) / "log"
    if not path.exists():
        raise UsageError(f"container {st.short} has no log: only detached (-d) containers "
                         "write one")
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                if out is not None:
                    out.write(chunk)
                else:
                    sys.stdout.write(chunk.decode(errors="replace"))
                continue
            if not args.follow or not st.is_running():
                break
            sys.stdout.flush()
            time.sleep(0.2)
            st = state_mod.load(store_root(args.root), st.id)
    sys.stdout.flush()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """``stop [-t SECONDS] CONTAINER...``."""
    from nbcontainer.runtime import manage

    for ref in args.containers:
        manage.stop(ref, grace=args.time, root=store_root(args.root))
        _out(ref)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """``rm [-f] CONTAINER...``."""
    from nbcontainer.runtime import manage

    status = 0
    for ref in args.containers:  # like docker rm: go on with the others, fail at the end
        try:
            manage.remove(ref, force=args.force, root=store_root(args.root))
            _out(ref)
        except ContainerError as err:
            _err(str(err))
            status = err.exit_status  # 125, as stop, exec and logs exit for an unknown name
    return status


def cmd_pause(args: argparse.Namespace) -> int:
    """``pause CONTAINER...``."""
    from nbcontainer.runtime import manage

    for ref in args.containers:
        manage.pause(ref, root=store_root(args.root))
        _out(ref)
    return 0


def cmd_unpause(args: argparse.Namespace) -> int:
    """``unpause CONTAINER...``."""
    from nbcontainer.runtime import manage

    for ref in args.containers:
        manage.unpause(ref, root=store_root(args.root))
        _out(ref)
    return 0


def stats_line(name: str, sample: Any, cpu_percent: float | None) -> str:
    """One ``stats`` row: name, CPU %, memory usage / limit, memory %, pids."""
    used = sample.memory_current or 0
    limit = sample.memory_limit
    mem_pct = f"{100 * used / limit:.2f}%" if limit else "-"
    cpu = "-" if cpu_percent is None else f"{cpu_percent:.2f}%"
    pids = "-" if sample.pids_current is None else str(sample.pids_current)
    return (f"{name:<20} {cpu:>8} {format_size(used):>10} / {format_size(limit):<10} "
            f"{mem_pct:>8} {pids:>5}")


def cmd_stats(args: argparse.Namespace) -> int:
    """``stats [--no-stream] CONTAINER``: one line per second (or one line)."""
    from nbcontainer.runtime import manage
    from nbcontainer.runtime import state as state_mod

    st = state_mod.find(store_root(args.root), args.container)
    cg = manage.open_container_cgroup(st)
    _out(f"{'NAME':<20} {'CPU %':>8} {'MEM USAGE':>10} / {'LIMIT':<10} {'MEM %':>8} {'PIDS':>5}")
    prev = cg.stats()
    prev_t = time.monotonic()
    count = 0
    while True:
        if not args.no_stream or count:
            time.sleep(args.interval)
        try:
            sample = cg.stats()
        except ContainerError:
            break
        now = time.monotonic()
        cpu = None
        if sample.cpu_usage_ns is not None and prev.cpu_usage_ns is not None and now > prev_t:
            cpu = 100 * (sample.cpu_usage_ns - prev.cpu_usage_ns) / 1e9 / (now - prev_t)
        _out(stats_line(st.short, sample, cpu))
        sys.stdout.flush()
        prev, prev_t = sample, now
        count += 1
        if args.no_stream or (args.count and count >= args.count) or not st.is_running():
            break
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """``gc``: remove what crashed runs left behind."""
    from nbcontainer.runtime import manage

    actions = manage.gc(store_root(args.root))
    from nbcontainer.images.store import ImageStore

    removed = ImageStore(store_root(args.root)).gc()
    actions += [f"removed unreferenced layer {x}" for x in removed.get("layers", [])]
    actions += [f"removed leftover of a crashed import {x}" for x in removed.get("tmp", [])]
    with contextlib.suppress(ImportError):
        from nbcontainer.kernel.proxy import remove_stale_rundirs

        remove_stale_rundirs()  # run directories of container kernels killed with -9
    for line in actions:
        _out(line)
    if not actions:
        _out("nothing to clean")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``info``: what this machine can do, and what to do about what it cannot."""
    from nbcontainer.doctor import report

    ok = True
    for check in report(configured_root(args.root)):  # info only looks: it mounts nothing
        mark = "ok " if check.ok else "NO "
        ok = ok and (check.ok or not check.required)
        _out(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            _out(f"       fix: {check.fix}")
        if check.note:
            _out(f"       note: {check.note}")
    return 0 if ok else 1


# -- the parser --------------------------------------------------------------------------------


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="run a command in a new container")
    add_run_options(run, CLI)
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background and print the container id")
    run.add_argument("--rm", action="store_true",
                     help="remove the container when it exits (the default unless named)")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="accepted for Docker compatibility: stdin is always passed through")
    run.add_argument("-t", "--tty", action="store_true",
                     help="give the container a terminal of its own (a pseudo-terminal, its "
                          "controlling terminal: job control, Ctrl-C, window size), relayed "
                          "to this one in raw mode; TERM is set")
    run.add_argument("image", help="image: host, busybox, scratch, none, a stored image, or a "
                                   "registry reference (pulled when missing, see --pull)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    run.set_defaults(func=cmd_run)


def _add_exec(sub: Any) -> None:
    exe = sub.add_parser("exec", help="run a command in a running container")
    exe.add_argument("-e", "--env", action="append", metavar="K=V")
    exe.add_argument("-w", "--workdir", metavar="DIR")
    exe.add_argument("-u", "--user", metavar="UID[:GID]")
    exe.add_argument("-i", "--interactive", action="store_true", help="accepted; stdin is passed")
    exe.add_argument("-t", "--tty", action="store_true", help="accepted; stdio is passed")
    exe.add_argument("container")
    exe.add_argument("command", nargs=argparse.REMAINDER)
    exe.set_defaults(func=cmd_exec)


def _add_ps(sub: Any) -> None:
    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    ps.add_argument("-q", "--quiet", action="store_true", help="only ids")
    ps.set_defaults(func=cmd_ps)


def _add_logs(sub: Any) -> None:
    logs = sub.add_parser("logs", help="output of a detached container")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("container")
    logs.set_defaults(func=cmd_logs)


def _add_stop(sub: Any) -> None:
    stop = sub.add_parser("stop", help="stop running containers (SIGTERM, then SIGKILL)")
    stop.add_argument("-t", "--time", type=float, default=10.0, help="grace seconds (10)")
    stop.add_argument("containers", nargs="+")
    stop.set_defaults(func=cmd_stop)


def _add_rm(sub: Any) -> None:
    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true", help="kill running ones first")
    rm.add_argument("containers", nargs="+")
    rm.set_defaults(func=cmd_rm)


def _add_pause(sub: Any) -> None:
    p = sub.add_parser("pause", help="freeze every process of containers")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_pause)


def _add_unpause(sub: Any) -> None:
    p = sub.add_parser("unpause", help="thaw every process of containers")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_unpause)


def _add_stats(sub: Any) -> None:
    stats = sub.add_parser("stats", help="live resource usage of a running container")
    stats.add_argument("--no-stream", action="store_true", help="print one line and exit")
    stats.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    stats.add_argument("--count", type=int, default=0, help="stop after N lines")
    stats.add_argument("container")
    stats.set_defaults(func=cmd_stats)


def _add_gc(sub: Any) -> None:
    gc = sub.add_parser("gc", help="remove what crashed runs left behind")
    gc.set_defaults(func=cmd_gc)


def _add_info(sub: Any) -> None:
    info = sub.add_parser("info", help="kernel features and what is missing, and why")
    info.set_defaults(func=cmd_info)


#: The core subcommands, each added by its own function (``build_parser(only=...)``).
_CORE_PARSERS = {
    "run": _add_run,
    "exec": _add_exec,
    "ps": _add_ps,
    "logs": _add_logs,
    "stop": _add_stop,
    "rm": _add_rm,
    "pause": _add_pause,
    "unpause": _add_unpause,
    "stats": _add_stats,
    "gc": _add_gc,
    "info": _add_info,
}

CORE_COMMANDS = frozenset(_CORE_PARSERS)


def build_parser(extras: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``extras`` adds the images and kernel subcommands (slower imports);
    ``only`` (a core command) builds that one subcommand alone, as ``main`` does when the
    command line names one: each parser argparse makes costs gettext lookups and formatter
    set-up, ~0.5 ms, and a container start from the shell needs one."""
    parser = _Parser(prog="nbcontainer",
                     description="Linux containers from namespaces, cgroups and overlayfs.")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, add in _CORE_PARSERS.items():
        if only is None or name == only:
            add(sub)
    if only is not None:
        return parser
    for module in COMMAND_MODULES if extras else ():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mod.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None, root: str | os.PathLike[str] | None = None) -> int:
    """Run the command line; return the exit status.

    ``root`` is the store (default ``$NBCONTAINER_ROOT`` or /var/lib/nbcontainer): a caller in
    the same process, like ``%container SUBCOMMAND``, passes its own instead of changing the
    environment.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # `run` and friends need not import the image codecs or jupyter_client: a container
        # start from the shell should not pay for them.
        core = bool(argv) and argv[0] in CORE_COMMANDS
        args = build_parser(extras=not core, only=argv[0] if core else None).parse_args(argv)
        args.root = None if root is None else str(root)
        if args.cmd in ("run", "exec") and args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if args.cmd == "exec" and not args.command:
            raise UsageError("exec needs a command, e.g. `nbcontainer exec web sh`")
        if args.cmd not in ("info", "gc", "ps", "images", "history") and os.geteuid() == 0:
            from nbcontainer.runtime import manage

            with contextlib.suppress(ContainerError, OSError):
                manage.gc(store_root(args.root))
        return int(args.func(args))
    except ContainerError as err:
        _err(str(err))
        return err.exit_status
    except PermissionError as err:
        # The one place a raw EACCES/EPERM becomes a sentence: the store and the cgroups are
        # root's (0700), so without root every command that reads them ends here.
        _err(permission_sentence(argv, err))
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


def permission_sentence(argv: Sequence[str], err: PermissionError) -> str:
    """What a permission error means for the command that hit it, in one sentence."""
    command = " ".join(["nbcontainer", *[a for a in argv[:1] if not a.startswith("-")]])
    what = f"{err.filename}" if err.filename else "a file of the store"
    if os.geteuid() != 0:
        return (f"needs root: `{command}` cannot open {what} (the store and the cgroups "
                "belong to root); run it as root, e.g. with sudo")
    return f"`{command}`: permission denied on {what}: {err.strerror}"


def entry() -> None:
    """Console-script entry point (``python -m nbcontainer`` too)."""
    exit_now(main())


def exit_now(status: int) -> None:
    """End the process with ``status`` without the interpreter's teardown.

    Why: the teardown frees every module and object the imports made, 4-5 ms measured (with
    ``gc.freeze()`` already keeping the collector out of it), a twentieth of a container
    start from the shell. What a normal exit does that is seen outside the process still
    happens: the atexit handlers run and the standard streams are flushed. A normal exit
    also waits for other non-daemon threads, so with any other thread alive this exits the
    normal way.
    """
    import atexit
    import threading

    gc.freeze()
    if threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 - what Py_FinalizeEx would run first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or a closed stream
            status = status or 120  # as the interpreter's exit says a failed flush
    os._exit(status)


if __name__ == "__main__":
    entry()
