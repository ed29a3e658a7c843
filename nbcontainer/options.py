"""The run options (docs/options.md): one table, and everything derived from it.

Each :class:`RunOption` says once what an option is: its flags and aliases, its value syntax,
its help, which front ends take it (the CLI, the magics, ``kernel install`` and the kernel), the
spec field it sets, whether a named container fixes it when created, and the cgroup
controller a limit needs. The CLI's, the magics' and the kernel's argparse parsers, the magics'
traitlet defaults, the kernelspec's ``argv``, a named container's fixed fields and the
controller check in :mod:`nbcontainer.cgroups` are all derived from :data:`RUN_OPTIONS`, so a
new option is one row here plus the code that applies it.

Pure: imports only :mod:`nbcontainer.spec` (argparse lazily, for the parsers).
"""

from __future__ import annotations

from nbcontainer._records import record
from nbcontainer.spec import ContainerSpec, make_spec

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    import argparse
    from typing import Any

CLI, MAGIC, KERNEL = "cli", "magic", "kernel"
EVERY_FRONT_END = frozenset({CLI, MAGIC, KERNEL})


@record(frozen=True)
class RunOption:
    """One run option, declared once.

    Attributes
    ----------
    dest
        The argparse dest, the :func:`~nbcontainer.spec.make_spec` keyword and the traitlet.
    flags
        Every spelling, the canonical ``--long`` one first among the long ones (``-m``,
        ``--memory``, ``--mem``).
    metavar, help
        For ``--help`` and ``%%container?``.
    kind
        ``value`` (one value), ``list`` (repeatable) or ``flag`` (no value).
    front_ends
        Which of ``cli``, ``magic``, ``kernel`` take it.
    field
        The :class:`~nbcontainer.spec.ContainerSpec` attribute it sets (dotted), if any.
    fixed
        True: a named container takes it when created and later cells may not change it;
        False: it applies to each cell's exec; None: neither (``--name``, ``--init``).
    controller
        The cgroup controller a limit needs (the check refuses it where that is missing).
    trait
        False when the magics have no configurable default for it.
    """

    dest: str
    flags: tuple[str, ...]
    metavar: str | None
    help: str
    kind: str = "value"
    front_ends: frozenset[str] = EVERY_FRONT_END
    field: str | None = None
    fixed: bool | None = True
    controller: str | None = None
    trait: bool = True

    @property
    def long_flag(self) -> str:
        """The canonical spelling, e.g. ``--memory``."""
        return next(f for f in self.flags if f.startswith("--"))

    def argv(self, value: Any) -> list[str]:
        """``value`` back in command-line form (``--memory=512m``); [] when unset."""
        if value is None or value is False:
            return []
        if self.kind == "flag":
            return [self.long_flag]
        if self.kind == "list":
            return [f"{self.long_flag}={item}" for item in value]
        return [f"{self.long_flag}={value}"]


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("memory", ("-m", "--memory", "--mem"), "SIZE",
              "memory limit, e.g. 100m or 1g (binary units)",
              field="limits.memory", controller="memory"),
    RunOption("memory_swap", ("--memory-swap",), "SIZE",
              "memory + swap limit; -1 for unlimited swap",
              field="limits.memory_swap", controller="memory"),
    RunOption("cpus", ("--cpus",), "FLOAT", "CPU quota, e.g. 0.5 = half a core",
              field="limits.cpus", controller="cpu"),
    RunOption("cpu_shares", ("--cpu-shares",), "N",
              "relative CPU weight (v1 shares; mapped to v2 weight)",
              field="limits.cpu_shares", controller="cpu"),
    RunOption("cpuset_cpus", ("--cpuset-cpus",), "LIST", "CPUs allowed, e.g. 0 or 0-1",
              field="limits.cpuset_cpus", controller="cpuset"),
    RunOption("pids_limit", ("--pids-limit",), "N", "maximum number of tasks",
              field="limits.pids_limit", controller="pids"),
    RunOption("ns", ("--ns",), "LIST",
              "namespaces: comma list of uts,ipc,pid,mount,net,user,cgroup, or all, or none "
              "(default uts,ipc,pid,mount,cgroup)", field="namespaces"),
    RunOption("net", ("--net", "--network"), "MODE",
              "bridge (the default: own netns on the bridge nbc0, an address, a default route, "
              "names), none (own netns, loopback only), host (the host's network: its "
              "loopback services too), container:NAME (another container's), or the name of a "
              "network made with `nbcontainer network create`; with --ns and no --net, net "
              "in the list means a bare netns", field="net"),
    RunOption("publish", ("-p", "--publish"), "[IP:]HPORT:CPORT[/PROTO]",
              "publish a container port on the host, e.g. 8080:80 (host address default "
              "127.0.0.1; 0.0.0.0:8080:80 for every address), repeatable",
              kind="list", field="publish"),
    RunOption("image", ("--image",), "NAME",
              "image for the rootfs (default host): a built-in, a stored image or a registry "
              "reference, pulled when missing (see --pull); none = run on the host's /",
              front_ends=frozenset({MAGIC, KERNEL}), field="image"),
    RunOption("pull", ("--pull",), "POLICY",
              "when to pull a registry image: missing (default: only if not in the store), "
              "always (check the registry for a newer manifest) or never",
              field="pull"),
    RunOption("platform", ("--platform",), "OS/ARCH[/VARIANT]",
              "the platform to pull from a multi-platform image, e.g. linux/arm64 (default: "
              "this machine's)", field="platform"),
    RunOption("hostname", ("--hostname",), "NAME", "hostname inside", field="hostname"),
    RunOption("env", ("-e", "--env"), "K=V", "environment variable (repeatable)",
              kind="list", field="env", fixed=False),
    RunOption("volumes", ("-v", "--volume"), "HOST:CTR[:ro]", "bind mount (repeatable)",
              kind="list", field="volumes"),
    RunOption("devices", ("--device",), "HOST[:CTR][:PERMS]",
              "allow a host device inside, e.g. /dev/fuse (default: only runc's standard "
              "devices)", kind="list", field="devices"),
    RunOption("workdir", ("-w", "--workdir"), "DIR", "working directory inside",
              field="workdir", fixed=False),
    RunOption("user", ("-u", "--user"), "UID[:GID]", "user to run as inside",
              field="user", fixed=False),
    RunOption("cap_add", ("--cap-add",), "CAP", "add a capability", kind="list",
              field="cap_add"),
    RunOption("cap_drop", ("--cap-drop",), "CAP", "drop a capability", kind="list",
              field="cap_drop"),
    RunOption("privileged", ("--privileged",), None,
              "all capabilities, no seccomp, no masked paths", kind="flag", field="privileged"),
    RunOption("security_opt", ("--security-opt",), "OPT",
              "seccomp=unconfined, seccomp=PROFILE.json (Docker's format; default: Docker's "
              "default profile), no-new-privileges[=false] (default on)",
              kind="list", field="security"),
    RunOption("timeout", ("--timeout",), "SECONDS",
              "wall-clock limit; the whole container is killed on expiry",
              field="timeout", fixed=False),
    RunOption("name", ("--name",), "NAME", "a named, persistent container",
              front_ends=frozenset({CLI, MAGIC}), field="name", fixed=None, trait=False),
    RunOption("init", ("--init",), None,
              "run a reaping, signal-forwarding init as PID 1 (like docker --init)",
              kind="flag", front_ends=frozenset({CLI, MAGIC}), field="init", fixed=None,
              trait=False),
)

#: The options by dest.
BY_DEST = {option.dest: option for option in RUN_OPTIONS}


def options_for(front_end: str) -> tuple[RunOption, ...]:
    """The options one front end (``cli``, ``magic``, ``kernel``) takes, in table order."""
    return tuple(o for o in RUN_OPTIONS if front_end in o.front_ends)


def limit_controllers() -> dict[str, tuple[str, str]]:
    """Limit field -> (the controller it needs, the flag a user typed), for the cgroup check."""
    return {o.field.split(".")[1]: (o.controller, o.long_flag)
            for o in RUN_OPTIONS if o.controller and o.field}


def add_run_options(parser: argparse.ArgumentParser, front_end: str) -> None:
    """Add the run options of ``front_end`` to an argparse parser, with every alias."""
    for option in options_for(front_end):
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help}
        if option.kind == "flag":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs["metavar"] = option.metavar
            if option.kind == "list":
                kwargs.update(action="append", default=None)
        parser.add_argument(*option.flags, **kwargs)


def spec_from_args(args: argparse.Namespace, command: list[str], image: str | None,
                   defaults: dict[str, Any] | None = None, **overrides: Any) -> ContainerSpec:
    """Build a validated spec from parsed options, falling back to ``defaults`` per option.

    ``image`` (the CLI's positional one) wins over ``--image``; ``overrides`` win over both.
    """
    defaults = defaults or {}
    values: dict[str, Any] = {}
    for option in RUN_OPTIONS:
        value = getattr(args, option.dest, None)
        values[option.dest] = defaults.get(option.dest) if value is None else value
    values["privileged"] = bool(values["privileged"])
    values["init"] = bool(values["init"])
    values["image"] = image or values["image"] or "host"
    values.update(overrides)
    return make_spec(command, **values)


def given_options(args: argparse.Namespace) -> list[RunOption]:
    """The options actually given on a command line (not left to defaults)."""
    return [o for o in RUN_OPTIONS if getattr(args, o.dest, None) is not None]


def options_argv(args: argparse.Namespace, front_end: str) -> list[str]:
    """The options given, back in command-line form, e.g. for ``kernel.json``'s argv."""
    out: list[str] = []
    for option in options_for(front_end):
        out += option.argv(getattr(args, option.dest, None))
    return out


def spec_value(spec: ContainerSpec, option: RunOption) -> Any:
    """The spec's value of what ``option`` sets (``spec.limits.memory`` for ``--memory``)."""
    value: Any = spec
    for part in (option.field or "").split("."):
        value = getattr(value, part)
    return value


def per_exec_reset(spec: ContainerSpec) -> ContainerSpec:
    """``spec`` without the settings that apply per exec (env, workdir, user, timeout)."""
    blank = ContainerSpec()
    return spec.with_(**{o.field: getattr(blank, o.field) for o in RUN_OPTIONS
                         if o.fixed is False and o.field})


def reference_table() -> str:
    """The options as a Markdown table (docs/options.md is this, checked by a test)."""
    names = {CLI: "CLI", MAGIC: "%%container", KERNEL: "kernel"}
    rows = ["| option | value | meaning | front ends | named container |",
            "| --- | --- | --- | --- | --- |"]
    for o in RUN_OPTIONS:
        flags = ", ".join(f"`{f}`" for f in o.flags)
        fronts = ", ".join(names[f] for f in (CLI, MAGIC, KERNEL) if f in o.front_ends)
        scope = {True: "fixed when created", False: "per cell", None: "-"}[o.fixed]
        kind = " (repeatable)" if o.kind == "list" else ""
        rows.append(f"| {flags} | {o.metavar or '-'}{kind} | {o.help} | {fronts} | {scope} |")
    return "\n".join(rows) + "\n"


def parse_env_list(items: list[str] | None) -> dict[str, str]:
    """``-e K=V`` items as a dict, each validated."""
    from nbcontainer.spec import parse_env

    return dict(parse_env(item) for item in (items or ()))


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and of its subcommands, at any depth."""
    import argparse

    found: set[str] = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def did_you_mean(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's ``message`` with "did you mean --xyz?" for a misspelled option or command.

    Every front end's parser calls this from its ``error`` (Python 3.14's argparse has
    ``suggest_on_error``; this is the same idea for 3.10+).
    """
    import argparse
    import difflib
    import re

    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        flags = sorted(option_strings(parser))
        for word in unknown.group(1).split():
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
                if close:
                    return f"{message}; did you mean {close[0]}?"
        return message
    choice = re.search(r"invalid choice: '([^']*)'", message)
    if choice:
        choices = [c for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                   for c in a.choices]
        choices += re.findall(r"'([^']*)'", message.split("choose from", 1)[-1])
        close = difflib.get_close_matches(choice.group(1), choices, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]}?"
    return message


#: The live memory plot's setting, spelled the same in every front end: the magics' traitlet
#: ``ContainerMagics.plot``, the kernel's ``--plot`` and ``%memplot``. (``%%container --plot``
#: and ``--no-plot`` are per-cell shorthands for ``on`` and ``off``.)
PLOT_MODES = ("auto", "on", "off")
#: Older spellings, still accepted: the traitlet used always/never.
PLOT_ALIASES = {"always": "on", "never": "off"}


def plot_mode(text: str) -> str:
    """``auto``, ``on`` or ``off`` from any accepted spelling (UsageError otherwise)."""
    from nbcontainer.errors import UsageError

    word = str(text).strip().lower()
    word = PLOT_ALIASES.get(word, word)
    if word not in PLOT_MODES:
        raise UsageError(f"plot: unknown mode {text!r}; use auto, on or off")
    return word
