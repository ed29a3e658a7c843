"""Parse the Containerfile subset nbcontainer builds: FROM, RUN, COPY, ENV, WORKDIR, CMD, LABEL.

Pure text in, instructions out; no I/O, so every syntax error is found (with its line number)
before a build creates anything. The grammar follows Docker's where it matters to a class:
``\\`` continues a line, ``#`` lines are comments (also inside a continuation), keywords are
case-insensitive, a JSON array is the exec form and anything else the shell form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from nbcontainer.errors import UsageError

SUPPORTED = ("FROM", "RUN", "COPY", "ENV", "WORKDIR", "CMD", "LABEL")
_VAR = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class ContainerfileError(UsageError):
    """A Containerfile that cannot be built; the message starts with ``line N:``."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, its argument text, and the line it starts on."""

    line: int
    keyword: str
    args: str

    @property
    def text(self) -> str:
        """The instruction as written (normalised keyword): what history and the cache key use."""
        return f"{self.keyword} {self.args}"

    def fail(self, message: str) -> ContainerfileError:
        """An error pointing at this instruction."""
        return ContainerfileError(f"line {self.line}: {self.keyword}: {message}")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines. Returns (first line no, text)."""
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue  # comments vanish even inside a continuation, as in Docker
        if not parts:
            start = number
        line = raw.rstrip()
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        out.append((start, " ".join(p.strip() for p in parts if p.strip())))
        parts = []
    if parts:
        out.append((start, " ".join(p.strip() for p in parts if p.strip())))
    return out


def parse(text: str) -> list[Instruction]:
    """Split a Containerfile into instructions, checking keywords and the FROM rules.

    Raises :class:`ContainerfileError` (a UsageError) with the line number on anything outside
    the subset, so nothing is built from a file that would fail half-way for a syntax reason.
    """
    instructions: list[Instruction] = []
    for number, line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword not in SUPPORTED:
            raise ContainerfileError(
                f"line {number}: unsupported instruction {keyword}; supported: "
                + ", ".join(SUPPORTED))
        if not args:
            raise ContainerfileError(f"line {number}: {keyword} needs an argument")
        instructions.append(Instruction(number, keyword, args))
    if not instructions:
        raise ContainerfileError("the Containerfile is empty; start it with FROM, e.g. "
                                 "`FROM busybox`")
    if instructions[0].keyword != "FROM":
        first = instructions[0]
        raise ContainerfileError(f"line {first.line}: the first instruction must be FROM "
                                 f"(found {first.keyword})")
    for ins in instructions[1:]:
        if ins.keyword == "FROM":
            raise ContainerfileError(f"line {ins.line}: only one FROM is supported "
                                     "(multi-stage builds are not)")
    return instructions


def exec_form(args: str) -> list[str] | None:
    """The argv of a JSON-array argument (exec form), or None for the shell form."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None  # Docker, too, treats a malformed array as a shell command
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def command_argv(ins: Instruction) -> list[str]:
    """RUN/CMD argument as argv: exec form as given, shell form through ``/bin/sh -c``."""
    argv = exec_form(ins.args)
    return argv if argv is not None else ["/bin/sh", "-c", ins.args]


def expand(value: str, env: dict[str, str]) -> str:
    """Substitute ``$VAR`` and ``${VAR}`` from the build's environment (``\\$`` keeps a $)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "\\$":
            return "$"
        return env.get(m.group(1) or m.group(2), "")
    return _VAR.sub(sub, value)


def key_values(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str]]:
    """ENV/LABEL pairs: ``K=V K2="v 2"`` (quotes as in a shell) or the legacy ``K value``."""
    first = ins.args.split(None, 1)
    if "=" not in first[0]:
        if len(first) < 2:
            raise ins.fail(f"use KEY=VALUE or KEY VALUE (got {ins.args!r})")
        return [(first[0], expand(first[1], env))]
    try:
        words = shlex.split(ins.args, posix=True)
    except ValueError as err:
        raise ins.fail(f"cannot split {ins.args!r}: {err}") from err
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ins.fail(f"{word!r} is not KEY=VALUE")
        pairs.append((key, expand(value, env)))
    return pairs


def copy_args(ins: Instruction, env: dict[str, str]) -> tuple[list[str], str]:
    """COPY sources and destination (JSON array or whitespace-separated; no flags)."""
    words = exec_form(ins.args)
    if words is None:
        try:
            words = shlex.split(ins.args, posix=True)
        except ValueError as err:
            raise ins.fail(f"cannot split {ins.args!r}: {err}") from err
    flags = [w for w in words if w.startswith("--")]
    if flags:
        raise ins.fail(f"options such as {flags[0]} are not supported; use COPY SRC... DEST")
    if len(words) < 2:
        raise ins.fail("needs at least one source and a destination, e.g. `COPY app.py /app/`")
    words = [expand(w, env) for w in words]
    return words[:-1], words[-1]
