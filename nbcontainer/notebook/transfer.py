"""Moving a Python cell and its ``-i``/``-o`` variables into a container and back.

The cell travels on the container's stdin, not through a file: that works the same for a new
container, an exec into a named one and ``--image none``, and needs no bind mount (a mount
point would have to be created somewhere, and with ``--image none`` that would be the host's
own filesystem). The payload is the kernel's interpreter running :data:`BOOTSTRAP`, which reads
one pickled :class:`Program` from stdin, loads the inputs, runs the body as ``__main__`` and
writes the requested outputs, pickled, to an extra pipe whose number it is told. Only plain
types cross the boundary in the envelope itself; each variable is pickled separately so an
error names the variable at fault (rpy2's ``%%R -i/-o`` convention).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Exit status of the bootstrap when an input variable cannot be loaded inside the container.
INPUT_ERROR_STATUS = 3

#: The program the kernel's interpreter runs inside the container (``python -u -c``).
#: Kept small and stdlib-only; it must not import nbcontainer (``--image`` may not have it).
BOOTSTRAP = r"""
import sys, os, pickle, linecache, traceback
def _nbc_main():
    env = pickle.loads(sys.stdin.buffer.read())
    sys.stdin = open(os.devnull)
    import __main__
    ns = __main__.__dict__
    for name, blob in env["inputs"].items():
        try:
            ns[name] = pickle.loads(blob)
        except Exception as err:
            sys.stderr.write(f"nbcontainer: -i {name}: cannot be loaded inside the container: "
                             f"{type(err).__name__}: {err}\n")
            return 3
    source = env["source"]
    linecache.cache["<cell>"] = (len(source), None, source.splitlines(True), "<cell>")
    status = 0
    try:
        exec(compile(source, "<cell>", "exec"), ns)
    except SystemExit as err:
        code = err.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")
    except BaseException as err:
        traceback.print_exception(type(err), err, err.__traceback__.tb_next)
        status = 130 if isinstance(err, KeyboardInterrupt) else 1
    if status == 0 and env["outputs"]:
        out = {}
        for name in env["outputs"]:
            if name not in ns:
                out[name] = ("missing", None)
                continue
            try:
                out[name] = ("ok", pickle.dumps(ns[name], protocol=pickle.HIGHEST_PROTOCOL))
            except Exception as err:
                out[name] = ("error", f"{type(err).__name__}: {err}")
        data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(env["out_fd"], "wb") as f:
            f.write(data)
    sys.stdout.flush()
    sys.stderr.flush()
    return status
sys.exit(_nbc_main())
"""


class TransferError(Exception):
    """A variable could not be moved in or out; the message names it and says why."""


@dataclass(frozen=True)
class Program:
    """What a Python cell sends into the container: the body, the inputs, the output names."""

    source: str
    inputs: Mapping[str, bytes]
    outputs: tuple[str, ...]
    out_fd: int | None

    def encode(self) -> bytes:
        """The stdin of the bootstrap: one pickle of plain types."""
        return pickle.dumps({"source": self.source, "inputs": dict(self.inputs),
                             "outputs": list(self.outputs), "out_fd": self.out_fd},
                            protocol=pickle.HIGHEST_PROTOCOL)


def python_command(executable: str) -> list[str]:
    """The payload argv for a Python body: unbuffered, so output streams as it is produced."""
    return [executable, "-u", "-c", BOOTSTRAP]


def parse_names(text: str | None, option: str) -> tuple[str, ...]:
    """``x,y`` -> ``("x", "y")``, each an identifier; raises ValueError with a sentence."""
    if not text:
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"{option}: {name!r} is not a Python variable name; give a comma "
                             "list of names, e.g. x,y")
    return names


def pack_inputs(names: tuple[str, ...], namespace: Mapping[str, Any]) -> dict[str, bytes]:
    """Pickle each named variable of the notebook, naming the one that cannot be sent."""
    packed: dict[str, bytes] = {}
    for name in names:
        if name not in namespace:
            raise TransferError(f"-i {name}: no variable {name!r} in the notebook; define it "
                                "first or remove it from -i")
        try:
            packed[name] = pickle.dumps(namespace[name], protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 - pickling raises many types
            kind = type(namespace[name]).__name__
            raise TransferError(
                f"-i {name}: a value of type {kind} cannot be pickled ({type(err).__name__}: "
                f"{err}); send something picklable, e.g. plain data, instead"
            ) from err
    return packed


def unpack_outputs(names: tuple[str, ...], data: bytes) -> dict[str, Any]:
    """Load the variables the container sent back, or say which one is missing and why."""
    if not names:
        return {}
    if not data:
        raise TransferError(f"-o {','.join(names)}: the cell sent nothing back")
    received: dict[str, tuple[str, Any]] = pickle.loads(data)
    values: dict[str, Any] = {}
    problems = []
    for name in names:
        kind, payload = received.get(name, ("missing", None))
        if kind == "missing":
            problems.append(f"-o {name}: the cell did not define {name!r}")
        elif kind == "error":
            problems.append(f"-o {name}: its value cannot be pickled ({payload})")
        else:
            try:
                values[name] = pickle.loads(payload)
            except Exception as err:  # noqa: BLE001
                problems.append(f"-o {name}: cannot be loaded in the notebook "
                                f"({type(err).__name__}: {err})")
    if problems:
        raise TransferError("; ".join(problems))
    return values
