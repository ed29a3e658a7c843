"""``%%container``, ``%container`` and ``%%containerfile``: containers as IPython magics.

One family of magics in one module (IPython's own layout). Options are one argparse parser
built from :func:`nbcontainer.options.add_run_options`, so ``%%container?`` documents them and
their syntax is the CLI's; defaults are traitlets on :class:`ContainerMagics`, so
``c.ContainerMagics.memory = "512m"`` in ``ipython_config.py`` and ``%config`` both work.

A cell is run as: options -> validated specs (a bad option raises UsageError before anything
exists) -> per run: pipes, container (or an exec into a named one), meter thread, pump loop
(streaming output, live plot, interrupt) -> cleanup, always -> final frame, resource record,
outputs or an error saying why.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, MagicHelpFormatter
from traitlets import Bool, CaselessStrEnum, Float, List, Unicode

from nbcontainer import errors
from nbcontainer.notebook.cell import (
    CellPlot,
    default_streams,
    failure,
    record_line,
    stream_to_end,
)
from nbcontainer.notebook.plot import FRAME_RATE
from nbcontainer.notebook.streams import MAX_OUTPUT, Pipes
from nbcontainer.notebook.transfer import (
    BOOTSTRAP,
    Encoded,
    Program,
    TransferError,
    pack_inputs,
    parse_names,
    python_command,
    unpack_outputs,
)
from nbcontainer.options import (
    MAGIC,
    PLOT_ALIASES,
    PLOT_MODES,
    add_run_options,
    did_you_mean,
    given_options,
    options_for,
    per_exec_reset,
    spec_from_args,
    spec_value,
)
from nbcontainer.paths import store_root
from nbcontainer.spec import ContainerSpec, format_size

#: Errors that are the user's input, shown as UsageError (no traceback, nothing created).
USER_ERRORS = (errors.UsageError, errors.ImageNotFoundError, errors.ContainerNotFoundError,
               errors.NotRootError)


#: What runs a Python body on any image but host/none: the image's own interpreter.
IMAGE_PYTHON = "python3"


def run_option_traits() -> dict[str, Any]:
    """A configurable trait per run option of the magics (the defaults of every cell)."""
    traits: dict[str, Any] = {}
    for option in options_for(MAGIC):
        if not option.trait:
            continue
        text = f"default for {option.long_flag}: {option.help}"
        if option.kind == "list":
            traits[option.dest] = List(Unicode(), help=text).tag(config=True)
        elif option.kind == "flag":
            traits[option.dest] = Bool(False, help=text).tag(config=True)
        else:
            traits[option.dest] = Unicode("", help=text).tag(config=True)
    return traits


class ContainerCellError(Exception):
    """A container cell failed: the message says why in words, then the resource record.

    Raised (not printed) so that "Run All" stops at the failing cell. IPython shows
    ``_render_traceback_`` instead of a traceback through this module's internals.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class CellInterrupted(KeyboardInterrupt):
    """The stop button ended a magic: shown as a bare ``KeyboardInterrupt`` line.

    The container was already stopped and removed; a traceback through nbcontainer's pump
    loop would only hide that (SPEC section 4: the cell ends with KeyboardInterrupt). The
    payload's own traceback, if Python inside printed one, is in the cell's stderr.
    """

    def _render_traceback_(self) -> list[str]:
        return ["KeyboardInterrupt" + (f": {self}" if str(self) else "")]


# Jupyter shows the exception's class name as ``ename``: keep it the one users know.
CellInterrupted.__name__ = CellInterrupted.__qualname__ = "KeyboardInterrupt"


def short_interrupt(func: Any) -> Any:
    """Turn a KeyboardInterrupt anywhere in a magic into :class:`CellInterrupted`."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CellInterrupted:
            raise
        except KeyboardInterrupt:
            raise CellInterrupted() from None
    return wrapper


class HelpShown(Exception):
    """A magic's ``--help`` was printed: the cell runs nothing."""


#: ``%container SUBCOMMAND?`` (IPython would look up an object named SUBCOMMAND).
_SUBCOMMAND_HELP = re.compile(
    r"^(\s*)%container\s+((?:[A-Za-z][\w-]*\s+)*[A-Za-z][\w-]*)\s*\?{1,2}\s*$")


def subcommand_help(lines: list[str]) -> list[str]:
    """An input transformer: ``%container stats?`` becomes ``%container stats --help``.

    It runs before IPython's own ``?`` handling (``input_transformers_cleanup``), which
    would otherwise answer "Object `stats` not found". ``%container?`` alone stays IPython's
    help for the magic.
    """
    return [_SUBCOMMAND_HELP.sub(r"\1%container \2 --help", line.rstrip("\n"))
            + ("\n" if line.endswith("\n") else "") for line in lines]


class _HelpFormatter(MagicHelpFormatter):
    """IPython's magic help layout, without the ``%`` it puts before a prog that has one."""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = "::\n\n  ") -> None:
        super().add_usage(usage, actions, groups, prefix)


class _Parser(MagicArgumentParser):
    """A magic's argparse parser whose errors name the magic and point at its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.allow_abbrev = False  # exact flags, as the CLI's (MagicArgumentParser lacks the kwarg)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {did_you_mean(message, self)}; see {self.prog}? for "
                         "the options")


def build_cell_parser() -> _Parser:
    """The ``%%container`` parser: the shared run options plus the magic's own."""
    parser = _Parser(
        prog="%%container",
        description="Run the cell in a new container (or, with --name, in a persistent one). "
                    "The body is Python, run by the kernel's own interpreter, unless a COMMAND "
                    "is given (sh, bash, python3 -u, ...), which reads the body on stdin.",
        epilog="A comma list for --memory or --cpus (e.g. --memory 50m,100m,200m) runs the cell "
               "once per value and overlays the memory curves in one plot.",
    )
    add_run_options(parser, MAGIC)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--plot", dest="plot", action="store_const", const="on", default=None,
                       help="always show the live memory plot (plot mode on)")
    group.add_argument("--no-plot", dest="plot", action="store_const", const="off",
                       help="never show it (default: shown when the cell runs longer than "
                            "about half a second)")
    parser.add_argument("-i", "--input", dest="inputs", action="append", metavar="VAR[,VAR]",
                        help="notebook variables to copy into the container, as data "
                             "(Python bodies)")
    parser.add_argument("-o", "--output", dest="outputs", action="append", metavar="VAR[,VAR]",
                        help="variables to bring back into the notebook afterwards, as data "
                             "(Python bodies)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG ...]",
                        help="the program that reads the body on stdin (default: Python)")
    return parser


EXEC_HELP = """usage: %container exec NAME COMMAND [ARG ...]

Run COMMAND inside the running container NAME (a named container of this kernel, or one
started elsewhere), its output streamed into the cell; a failing command raises
ContainerCellError saying why."""


def build_stats_parser() -> _Parser:
    """The ``%container stats`` parser."""
    parser = _Parser(prog="%container stats", add_help=True,
                     description="Live memory plot of a running named container.")
    parser.add_argument("container", metavar="NAME")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this long (default: until interrupted or it ends)")
    return parser


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment: an unquoted ``#`` that starts a word.

    docs/magics.md writes ``%container exec lab ls /tmp  # streamed``; as in sh(1), ``#``
    inside a word (``-e COLOUR=#fff``) or inside quotes is not a comment.
    """
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def split_args(line: str, prog: str) -> list[str]:
    """Shell-split a magic's line (a trailing ``# comment`` dropped), turning a quoting error
    into a UsageError."""
    try:
        return shlex.split(strip_comment(line))
    except ValueError as err:
        raise UsageError(f"{prog}: {err} in {line!r}") from None


def comparison_values(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """Which option a comparison run varies (memory or cpus) and its values; (None, []).

    A memory comparison may pair ``--memory-swap`` value for value (:func:`paired_swap`)."""
    varied = [(dest, getattr(args, dest)) for dest in ("memory", "cpus")
              if getattr(args, dest) and "," in getattr(args, dest)]
    if not varied:
        return None, []
    if len(varied) > 1:
        raise UsageError("%%container: compare one option at a time: give a comma list to "
                         "--memory or to --cpus, not both")
    dest, text = varied[0]
    values = [v.strip() for v in text.split(",")]
    if any(not v for v in values):
        raise UsageError(f"--{dest}: empty value in the comma list {text!r}; give values like "
                         "50m,100m,200m")
    if args.name:
        raise UsageError("%%container: a comparison run makes one container per value, so it "
                         "cannot use --name; drop --name or give a single value")
    return dest, values


def paired_swap(args: argparse.Namespace, dest: str | None, count: int) -> list[str] | None:
    """``--memory-swap`` as a comma list, one value per ``--memory`` value of a comparison
    (``--memory 50m,100m --memory-swap 50m,100m``: no run may swap), or None if it is one
    value for every run."""
    text = getattr(args, "memory_swap", None)
    if not text or "," not in text:
        return None
    values = [v.strip() for v in text.split(",")]
    if dest != "memory" or len(values) != count or any(not v for v in values):
        raise UsageError(f"--memory-swap {text}: a comma list pairs one value with each value "
                         "of a --memory comparison (as many values, in the same order), e.g. "
                         "--memory 50m,100m --memory-swap 50m,100m")
    return values


@dataclass
class CellRun:
    """One container run of a cell: its spec, label, result and samples."""

    spec: ContainerSpec
    label: str
    result: Any = None
    output: bytes = b""
    output_overflowed: bool = False
    interrupted: bool = False


@magics_class
class ContainerMagics(Magics):
    """The ``%%container`` magics and their configurable defaults.

    Every run option has a trait of the same name (``volumes`` for ``-v``); an empty string
    means "not set" (the runtime's default).
    """

    # One configurable default per run option of the table (``volumes`` for ``-v``).
    locals().update(run_option_traits())
    plot = CaselessStrEnum([*PLOT_MODES, *PLOT_ALIASES], "auto",
                           help="live memory plot: auto (cells longer than plot_after, and "
                                "failed cells), on or off, as the kernel's --plot and "
                                "%memplot (always/never: older spellings of on/off)").tag(
        config=True)
    plot_after = Float(0.5, help="auto mode shows the plot once a cell ran this long (s)").tag(
        config=True)
    frame_rate = Float(FRAME_RATE, help="live plot frames per second, at most (each costs the "
                                        "kernel CPU time: bench/RESULTS.md)").tag(config=True)
    sample_rate = Float(25.0, help="cgroup samples per second (peak and OOM kills come from "
                                   "kernel counters at any rate)").tag(
        config=True)
    fast_start = Bool(True, help="run Python bodies on the host or none image in a forked, "
                                 "pre-started copy of the kernel's interpreter (a zygote) "
                                 "instead of a new one").tag(config=True)
    interrupt_grace = Float(1.5, help="seconds between SIGINT and killing the container on "
                                      "interrupt").tag(config=True)
    root = Unicode("", help="store root (default $NBCONTAINER_ROOT or "
                            "/var/lib/nbcontainer)").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.parser = build_cell_parser()
        self.named: dict[str, tuple[Any, ContainerSpec]] = {}
        self.last: list[tuple[str, Any]] = []
        self.owner = f"kernel:{os.getpid()}"
        from nbcontainer.runtime.zygote import Zygote

        # Every Python cell's bootstrap uses the -i/-o data format: the zygote imports it once.
        Zygote.preload("nbcontainer.notebook.dataformat")
        if not can_build():
            self.magics["cell"].pop("containerfile", None)
        atexit.register(self.shutdown)

    # -- configuration -----------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        """The traitlet defaults keyed by the parser's dests; unset ones left out."""
        out: dict[str, Any] = {}
        for option in options_for(MAGIC):
            value = getattr(self, option.dest, None) if option.trait else None
            if value not in (None, "", [], False):
                out[option.dest] = list(value) if isinstance(value, list) else value
        return out

    def store(self) -> str | None:
        """The store root, or None for the runtime's default."""
        return self.root or None

    def store_path(self) -> Path:
        """The store root as the runtime resolves it."""
        return store_root(self.store())

    def parse(self, line: str) -> argparse.Namespace:
        """Parse a ``%%container`` line (UsageError on bad input; HelpShown after --help)."""
        try:
            args = self.parser.parse_args(split_args(line, "%%container"))
        except SystemExit:  # --help was printed: run nothing
            raise HelpShown() from None
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        return args

    def specs(self, args: argparse.Namespace) -> list[tuple[str, ContainerSpec]]:
        """(label, validated spec) for each run the line asks for; nothing is created."""
        python_body = not args.command
        command = python_command(sys.executable) if python_body else list(args.command)
        dest, values = comparison_values(args)
        runs: list[tuple[str, dict[str, Any]]] = (
            [(f"--{dest} {v}", {dest: v}) for v in values] if dest else [("", {})])
        swaps = paired_swap(args, dest, len(values))
        if swaps is not None:
            runs = [(label, {**override, "memory_swap": swap})
                    for (label, override), swap in zip(runs, swaps, strict=True)]
        out = []
        for label, override in runs:
            try:
                spec = spec_from_args(args, command, None, defaults=self.defaults(),
                                      **override)
            except errors.ContainerError as err:
                raise UsageError(str(err)) from None
            if python_body and spec.image not in ("host", "none"):
                # The kernel's interpreter is a host path: an image runs its own python3, found
                # on the image's PATH (the bootstrap and the -i/-o format are Python 3.8+).
                spec = spec.with_(command=tuple(python_command(IMAGE_PYTHON)))
            out.append((label, spec))
        if (args.inputs or args.outputs) and not python_body:
            raise UsageError("-i/-o move Python variables and work with Python bodies only; "
                             f"drop the COMMAND ({' '.join(args.command)}) or -i/-o")
        return out

    def pull_first(self, runs: list[tuple[str, ContainerSpec]]) -> list[tuple[str, ContainerSpec]]:
        """Apply ``--pull`` once for the cell, with its progress in one display updated in
        place; the containers then find the image stored (and do not pull it again)."""
        if not runs or not runs[0][1].has_rootfs or runs[0][1].name in self.named:
            return runs
        from nbcontainer.notebook.pullprogress import DisplayProgress
        from nbcontainer.registry.policy import ensure_image

        spec = runs[0][1]
        try:
            pulled = ensure_image(spec.image, spec.pull, spec.platform, self.store(),
                                  DisplayProgress())
        except errors.ImageNotFoundError as err:
            raise UsageError(str(err)) from None
        except errors.ContainerError as err:
            raise ContainerCellError(f"the image could not be pulled: {err}") from None
        if pulled is None:
            return runs
        return [(label, s.with_(pull="missing")) for label, s in runs]

    def pull_line(self, argv: list[str]) -> None:
        """``%container pull [--platform P] REF`` with one display updated in place."""
        from nbcontainer.cli import build_parser
        from nbcontainer.notebook.pullprogress import DisplayProgress
        from nbcontainer.reference import parse
        from nbcontainer.registry.pull import pull

        try:
            args = build_parser().parse_args(["pull", *argv])
            ref = parse(args.reference)
            pull(ref, platform=args.platform, root=self.store(), progress=DisplayProgress())
        except errors.ContainerError as err:
            raise UsageError(f"%container pull: {err}") from None
        print(str(ref))

    # -- %%container ---------------------------------------------------------------------------

    @cell_magic("container")
    @short_interrupt
    def container_cell(self, line: str, cell: str) -> None:
        """Run the cell in a container; see ``%%container?``."""
        try:
            args = self.parse(line)
        except HelpShown:
            return
        runs = self.pull_first(self.specs(args))
        python_body = not args.command
        try:
            inputs = parse_names(",".join(args.inputs or []), "-i")
            outputs = parse_names(",".join(args.outputs or []), "-o")
            packed = pack_inputs(inputs, self.shell.user_ns if self.shell else {})
        except (TransferError, ValueError) as err:
            raise UsageError(str(err)) from None
        mode = args.plot or self.plot
        title = "container memory" + (f" ({args.name})" if args.name else "")
        plot = CellPlot(mode, after=self.plot_after, fps=self.frame_rate,
                        rate=self.sample_rate, title=title)
        done: list[CellRun] = []
        try:
            for label, spec in runs:
                run = CellRun(spec, label)
                done.append(run)
                target = self.named_target(spec, args) if spec.name else None
                if target is not None:  # the image the cell really runs in, for the hints
                    run.spec = spec.with_(image=getattr(target, "spec", target).image)
                self.run_one(run, cell, python_body, packed, outputs, plot, target)
                if run.interrupted:
                    break
        finally:
            self.last = [(r.label, r.result) for r in done if r.result is not None]
            # A failed run keeps its last frame however fast it ended (auto mode only waits
            # for slow cells that succeed).
            plot.finish("\n".join(self.record_lines()) or "container memory",
                        force=any(r.result is not None and not r.result.ok for r in done))
        self.conclude(done, outputs, python_body, plot)

    def record_lines(self) -> list[str]:
        """The resource records of the last cell, one line per run."""
        return [record_line(label, result) for label, result in self.last]

    def conclude(self, done: list[CellRun], outputs: tuple[str, ...], python_body: bool,
                 plot: CellPlot) -> None:
        """Interrupt, error or outputs, after everything is cleaned up and drawn."""
        if any(r.interrupted for r in done):
            sys.stderr.write("".join(f"{line}\n" for line in self.record_lines()))
            raise CellInterrupted()
        if plot.failed:
            sys.stderr.write(f"nbcontainer: the live plot failed: {plot.failed}\n")
        failed = [r for r in done if not r.result.ok]
        if len(done) > 1:
            for line in self.record_lines():
                sys.stdout.write(line + "\n")
        if failed:
            if len(done) == 1:
                run = failed[0]
                what = f"the cell in container {run.spec.name}" if run.spec.name else \
                    "the container"
                message = f"{failure(what, run.result)}{self.hint(run, python_body)}\n" \
                          f"{run.result.summary()}"
            else:
                message = f"{len(failed)} of {len(done)} runs failed:\n" + "\n".join(
                    f"{r.label}: {failure('the container', r.result)}" for r in failed)
            raise ContainerCellError(message)
        if outputs:
            if done[-1].output_overflowed:
                raise ContainerCellError(
                    f"-o {','.join(outputs)}: the values sent back are larger than "
                    f"{format_size(MAX_OUTPUT)}; bring back less (e.g. a summary), or write "
                    "the data to a volume (-v)")
            try:
                values = unpack_outputs(outputs, done[-1].output)
            except TransferError as err:
                raise ContainerCellError(str(err)) from None
            if self.shell is not None:
                self.shell.user_ns.update(values)

    @staticmethod
    def hint(run: CellRun, python_body: bool) -> str:
        """A why for the commonest surprise: a Python body in an image without the kernel's
        interpreter."""
        if python_body and run.result.exit_code == 127 and run.spec.image not in ("host",
                                                                                 "none"):
            return (f" (a Python body on an image runs the image's own {IMAGE_PYTHON}, and image "
                    f"{run.spec.image} has none on its PATH; give a COMMAND, e.g. "
                    f"`%%container --image {run.spec.image} sh`)")
        return ""

    def run_one(self, run: CellRun, cell: str, python_body: bool, packed: dict[str, Encoded],
                outputs: tuple[str, ...], plot: CellPlot, target: Any = None) -> None:
        """Run one container (or exec into ``target``) to its end; fill ``run``."""
        from nbcontainer.runtime.container import Container

        pipes = Pipes(with_output_fd=python_body and bool(outputs))
        try:
            if python_body:
                data = Program(cell, packed, outputs, pipes.out_w).encode()
            else:
                data = cell.encode()
            data = pipes.prefill(data)
            # A Python body on an image whose paths are the host's can run in the zygote's
            # forked interpreter: no interpreter start-up per cell.
            fast = python_body and self.fast_start and run.spec.image in ("host", "none")
            extra: dict[str, Any] = {"python": BOOTSTRAP, "zygote": True} if fast else {}
            try:
                if target is None:
                    spec = run.spec.with_(command=()) if fast else run.spec
                    proc: Any = Container(spec, root=self.store(), owner=self.owner,
                                          **pipes.child_kwargs(), **extra)
                    # The meter starts while the container builds its root (on the other CPU).
                    proc.while_starting = lambda: plot.watch(proc.cgroup, run.label)
                    proc.start()
                else:
                    proc = start_exec(target, run.spec, self.store(),
                                      {**pipes.child_kwargs(), **extra},
                                      command=[] if fast else None)
                    plot.watch(proc.cgroup, run.label, new=False)
            except USER_ERRORS as err:
                plot.end_run(keep=False)
                raise UsageError(str(err)) from None
            except errors.ContainerError as err:
                plot.end_run(keep=False)
                raise ContainerCellError(f"the container could not start: {err}") from None
            run.result, run.interrupted = stream_to_end(
                proc, pipes, data, default_streams(self.interrupt_grace), plot)
            run.output = bytes(pipes.output)
            run.output_overflowed = pipes.overflowed
        finally:
            pipes.close()

    # -- named containers ----------------------------------------------------------------------

    def named_target(self, spec: ContainerSpec, args: argparse.Namespace) -> Any:
        """The kernel's container of that name (created on first use), or another running one."""
        from nbcontainer.runtime import state as state_mod
        from nbcontainer.runtime.container import Container

        name = spec.name
        assert name is not None
        fixed = _fixed(spec)
        if name in self.named:
            container, created_with = self.named[name]
            if container.poll() is None:
                differ = sorted({o.long_flag for o in given_options(args) if o.fixed
                                 and spec_value(fixed, o) != spec_value(created_with, o)})
                if differ:
                    raise UsageError(
                        f"container {name} already runs with other {', '.join(differ)}; its "
                        "options are fixed by the cell that created it: drop them here, or "
                        f"remove it with `%container rm -f {name}` first")
                return container
            ended = container.poll()
            container.cleanup()
            del self.named[name]
            sys.stderr.write(f"nbcontainer: container {name} had ended ({ended.describe()}); "
                             "starting a new one: files and processes of the old one are gone\n")
        else:
            with contextlib.suppress(errors.ContainerNotFoundError):
                st = state_mod.find(self.store_path(), name)
                if st.is_running():
                    return st
        container = Container(fixed, root=self.store(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              keep=False, owner=self.owner, idle=True)
        try:
            container.start()
        except USER_ERRORS as err:
            raise UsageError(str(err)) from None
        except errors.ContainerError as err:
            raise ContainerCellError(f"container {name} could not start: {err}") from None
        self.named[name] = (container, fixed)
        return container

    def shutdown(self) -> None:
        """Remove every container this kernel owns (kernel shutdown, unload, atexit)."""
        while self.named:
            _, (container, _) = self.named.popitem()
            with contextlib.suppress(Exception):
                container.kill()
            with contextlib.suppress(Exception):
                container.cleanup()
        from nbcontainer.runtime.spare import spares
        from nbcontainer.runtime.zygote import Zygote

        zygote = Zygote.running()
        if zygote is not None:
            spares(zygote).close()

    # -- %container ----------------------------------------------------------------------------

    @line_magic("container")
    @short_interrupt
    def container_line(self, line: str) -> None:
        """``%container SUBCOMMAND ...``: the CLI's subcommands, output into the cell.

        ``%container last`` shows the last cell's resource record; ``%container stats NAME
        [--duration S]`` a live memory plot of a running named container; ``%container exec
        NAME CMD ...`` runs a command inside it with output streamed; everything else (``ps``,
        ``rm``, ``stop``, ``logs``, ``images``, ``history``, ``info``, ...) is ``nbcontainer
        SUBCOMMAND``.
        """
        argv = split_args(line, "%container")
        try:
            self._container_line(argv)
        except SystemExit as stop:  # argparse after --help (printed): the cell just ends
            if stop.code not in (0, None):
                raise UsageError(f"%container {' '.join(argv[:1])}: exited with status "
                                 f"{stop.code}") from None
        except PermissionError as err:  # not root: one sentence, as the CLI says it
            from nbcontainer import cli

            raise UsageError(cli.permission_sentence(argv, err)) from None

    def _container_line(self, argv: list[str]) -> None:
        sub = argv[0] if argv else "--help"
        if sub == "last":
            if not self.last:
                print("no %%container cell has run yet in this kernel")
            for text in self.record_lines():
                print(text)
            return
        if sub == "stats":
            self.stats(build_stats_parser().parse_args(argv[1:]))
            return
        if sub == "exec":
            self.exec_line(argv[1:])
            return
        if sub == "pull":
            self.pull_line(argv[1:])
            return
        if sub == "run":
            raise UsageError("%container run: use the cell magic instead: `%%container [OPTIONS] "
                             "[COMMAND]` with the body in the cell")
        from nbcontainer import cli
        from nbcontainer.notebook.progress import for_notebook
        from nbcontainer.progress import shown_by

        with shown_by(for_notebook):  # import, commit, build: one display updated in place
            cli.main(argv, root=self.store())
        sys.stdout.flush()

    def exec_line(self, argv: list[str]) -> None:
        """``%container exec NAME CMD ...`` with streamed output; an error if it fails."""
        from nbcontainer.runtime import state as state_mod

        if argv[:1] in (["-h"], ["--help"]):
            print(EXEC_HELP)
            return
        if len(argv) < 2:
            raise UsageError("%container exec: give a container and a command, e.g. "
                             "`%container exec web ls /`")
        name, command = argv[0], argv[1:]
        try:
            target = self.named[name][0] if name in self.named else \
                state_mod.find(self.store_path(), name)
        except USER_ERRORS as err:
            raise UsageError(str(err)) from None
        pipes = Pipes()
        try:
            try:
                proc = start_exec(target, None, self.store(), pipes.child_kwargs(), command)
            except USER_ERRORS + (errors.ContainerStateError,) as err:
                raise UsageError(str(err)) from None
            result, interrupted = stream_to_end(proc, pipes, b"",
                                                default_streams(self.interrupt_grace))
        finally:
            pipes.close()
        if interrupted:
            raise CellInterrupted()
        if not result.ok:
            raise ContainerCellError(failure(f"{' '.join(command)} in container {name}", result))

    def stats(self, args: argparse.Namespace) -> None:
        """Live plot of a running container until ``--duration``, its end, or an interrupt."""
        from nbcontainer.runtime import manage
        from nbcontainer.runtime import state as state_mod

        try:
            st = state_mod.find(self.store_path(), args.container)
            cgroup = manage.open_container_cgroup(st)
        except errors.ContainerError as err:
            raise UsageError(str(err)) from None
        plot = CellPlot("on", after=0.0, fps=self.frame_rate, rate=self.sample_rate,
                        title=f"{st.short}: memory").watch(cgroup, st.short, new=False)
        if plot.meter is None:
            raise UsageError(f"%container stats: the cgroup of container {st.short} cannot be "
                             "read; is it still running? (`%container ps`)")
        end = None if args.duration is None else time.monotonic() + args.duration
        try:
            while (end is None or time.monotonic() < end) and st.is_running():
                plot.tick()
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            series = plot.end_run()
        assert series is not None
        now = f"{series.memory[-1]:.1f} MiB" if series.memory else "n/a"
        text = (f"{st.short}: memory {now}, peak {format_size(series.peak)} / limit "
                f"{format_size(series.limit)}, OOM kills {series.oom_kills} during "
                f"{series.times[-1] if series.times else 0:.1f} s")
        plot.finish(text)
        print(text)

    # -- %%containerfile ------------------------------------------------------------------------

    @cell_magic("containerfile")
    @short_interrupt
    def containerfile(self, line: str, cell: str) -> None:
        """``%%containerfile NAME [BUILD OPTIONS]``: build image NAME from the cell.

        The build context is the notebook's working directory; each step is printed with
        whether the cache served it.
        """
        from nbcontainer import cli
        from nbcontainer.notebook.progress import for_notebook
        from nbcontainer.progress import shown_by

        argv = split_args(line, "%%containerfile")
        if not argv or argv[0].startswith("-"):
            raise UsageError("%%containerfile: give the image name first, e.g. "
                             "`%%containerfile myimage`")
        with tempfile.TemporaryDirectory(prefix="nbcontainer-build-") as tmp:
            path = os.path.join(tmp, "Containerfile")
            with open(path, "w") as f:
                f.write(cell)
            with shown_by(for_notebook):
                status = cli.main(["build", "-t", argv[0], "-f", path, *argv[1:],
                                   os.getcwd()], root=self.store())
        sys.stdout.flush()
        if status != 0:
            raise ContainerCellError(f"building image {argv[0]} failed (status {status}); the "
                                     "reason is printed above")


def _fixed(spec: ContainerSpec) -> ContainerSpec:
    """A named container's own spec: an idle init; per-cell settings go to each exec."""
    return per_exec_reset(spec).with_(command=(), init=True)


def start_exec(target: Any, spec: ContainerSpec | None, root: str | None,
               stdio: dict[str, Any], command: list[str] | None = None) -> Any:
    """Start an exec into ``target`` (our Container, or another's record), per-cell settings
    from ``spec``."""
    from nbcontainer.runtime.container import Container, Exec

    argv = list(command if command is not None else spec.command)  # type: ignore[union-attr]
    kwargs: dict[str, Any] = dict(stdio)
    if spec is not None:
        kwargs.update(env=dict(spec.env), workdir=spec.workdir, timeout=spec.timeout,
                      user=spec.user)
    if isinstance(target, Container):
        return target.exec(argv, **kwargs)
    return Exec(target, argv, root=root, **kwargs).start()


def can_build() -> bool:
    """True when the CLI has ``build`` (then %%containerfile is registered and delegates to it)."""
    from nbcontainer import cli

    try:
        parser = cli.build_parser()
    except Exception:  # noqa: BLE001 - a half-installed images package must not break loading
        return False
    return any(isinstance(a, argparse._SubParsersAction) and "build" in a.choices
               for a in parser._actions)


CELL_DOC = (
    "Run the cell in a container.\n\n"
    "Examples::\n\n"
    "    %%container --mem 100m\n"
    "    big = bytearray(50 << 20)\n\n"
    "    %%container --image busybox sh\n"
    "    echo $$; hostname\n\n"
    "    %%container -i data -o total\n"
    "    total = sum(data)\n\n"
    + build_cell_parser().format_help()
)
ContainerMagics.container_cell.__doc__ = CELL_DOC  # type: ignore[assignment]

_loaded: ContainerMagics | None = None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; a reload replaces (and cleans up after) the previous instance."""
    global _loaded
    if _loaded is not None:
        unload_ipython_extension(ipython)
    magics = ContainerMagics(shell=ipython)
    ipython.register_magics(magics)
    _loaded = magics
    if subcommand_help not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(subcommand_help)
    put_scripts_on_path()
    if magics.fast_start and os.geteuid() == 0:
        # Start the zygote now, while the user reads: the first cell should not wait for it,
        # and keep a helper attached to a cgroup ahead of each cell (runtime/spare.py).
        from nbcontainer.runtime.spare import spares
        from nbcontainer.runtime.zygote import Zygote

        spares(Zygote.get()).enable()


def put_scripts_on_path() -> str | None:
    """Make ``!nbcontainer ...`` work in a kernel whose PATH lacks this environment's scripts.

    ``.venv/bin/jupyter lab`` starts kernels with the server's PATH, which need not contain
    ``.venv/bin`` (nobody activated the venv), so ``!nbcontainer info`` would be "command not
    found". Prepend the scripts directory of the running interpreter when the ``nbcontainer``
    command there is not already what PATH finds. Returns the directory added, if any.
    """
    import shutil
    import sysconfig

    scripts = sysconfig.get_path("scripts")
    ours = os.path.join(scripts, "nbcontainer")
    if not os.access(ours, os.X_OK) or shutil.which("nbcontainer") is not None:
        return None
    os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", os.defpath)])
    return scripts


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the containers this kernel owns and unregister the magics."""
    global _loaded
    magics, _loaded = _loaded, None
    if magics is None:
        return
    magics.shutdown()
    atexit.unregister(magics.shutdown)
    with contextlib.suppress(ValueError):
        ipython.input_transformers_cleanup.remove(subcommand_help)
    for kind, name in (("cell", "container"), ("line", "container"), ("cell", "containerfile")):
        ipython.magics_manager.magics[kind].pop(name, None)
    with contextlib.suppress(ValueError):
        ipython.configurables.remove(magics)


__all__ = ["ContainerCellError", "ContainerMagics", "load_ipython_extension",
           "unload_ipython_extension"]
