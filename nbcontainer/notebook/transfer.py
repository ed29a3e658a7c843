"""Moving a Python cell and its ``-i``/``-o`` variables into a container and back.

The cell travels on the container's stdin, not through a file: that works the same for a new
container, an exec into a named one and ``--image none``, and needs no bind mount (a mount
point would have to be created somewhere, and with ``--image none`` that would be the host's
own filesystem). The payload is a Python interpreter running :data:`BOOTSTRAP`, which reads one
:class:`Program` from stdin, loads the inputs, runs the body as ``__main__`` and writes the
requested outputs to an extra pipe whose number it is told.

Both directions use :mod:`nbcontainer.notebook.dataformat`, a data-only format: what a container
writes is decoded into plain values, numpy arrays and pandas objects, and never into code (a
pickle from the container could run anything on the host, as root). The bootstrap carries the
format's source, so it works in whatever Python the container has (3.8 or later). Each variable
is encoded separately so an error names the variable at fault (rpy2's ``%%R -i/-o``
convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbcontainer.notebook import dataformat
from nbcontainer.notebook.dataformat import Encoded, TransferError, encode, loads, refusal

__all__ = ["BOOTSTRAP", "Encoded", "INPUT_ERROR_STATUS", "Program", "TransferError", "pack_inputs",
           "parse_names", "python_command", "unpack_outputs"]

#: Exit status of the bootstrap when an input variable cannot be loaded inside the container.
INPUT_ERROR_STATUS = 3

#: The longest refusal text from a container shown in the notebook.
MAX_REASON = 2000

# The bootstrap: Python 3.8 syntax, stdlib only, nothing of nbcontainer installed (the image
# may not have it). Its only top-level name, _nbc_main, is removed before the cell runs.
_BOOTSTRAP = r"""
def _nbc_main():
    import sys, os, types, linecache, traceback
    # A zygote's forked interpreter has the format imported already (Zygote.preload): a cell
    # then compiles and imports nothing of it; any other interpreter compiles this copy.
    fmt = sys.modules.get("nbcontainer.notebook.dataformat")
    if fmt is None:
        fmt = types.ModuleType("_nbc_dataformat")
        exec(compile(@SOURCE@, "<nbcontainer dataformat>", "exec"), fmt.__dict__)
    ns = sys.modules["__main__"].__dict__
    ns.pop("_nbc_main", None)
    try:
        env = fmt.loads(sys.stdin.buffer.read(), views=True)
        source, inputs, outputs = env["source"], env["inputs"], env["outputs"]
        out_fd = env["out_fd"]
    except (fmt.TransferError, KeyError, TypeError) as err:
        sys.stderr.write(f"nbcontainer: the cell cannot be read inside the container: {err}\n")
        return 3
    sys.stdin = open(os.devnull)
    for name, blob in inputs.items():
        try:
            ns[name] = fmt.loads(blob)
        except fmt.TransferError as err:
            sys.stderr.write(f"nbcontainer: -i {name}: cannot be loaded inside the container: "
                             f"{err}\n")
            return 3
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
    if status == 0 and outputs:
        out = {}
        for name in outputs:
            if name not in ns:
                out[name] = ("missing",)
                continue
            try:
                out[name] = ("ok", fmt.encode(ns[name]))
            except fmt.TransferError as err:
                out[name] = ("refused", fmt.refusal(err, "-o", name))
            except Exception as err:  # a library's own value that fails while it is read
                out[name] = ("refused", f"cannot bring back a value of type "
                             f"{fmt.type_name(type(ns[name]))} ({type(err).__name__}: {err})")
        with os.fdopen(out_fd, "wb") as f:
            fmt.encode(out).write(f)
    sys.stdout.flush()
    sys.stderr.flush()
    return status
raise SystemExit(_nbc_main())
"""


def _bootstrap() -> str:
    source = Path(dataformat.__file__).read_text(encoding="utf-8")
    return _BOOTSTRAP.replace("@SOURCE@", repr(source))


#: The program the interpreter runs inside the container (``python -u -c``, or in the
#: zygote's forked interpreter). Stdlib-only, Python 3.8+; it must not import nbcontainer.
BOOTSTRAP = _bootstrap()


@dataclass(frozen=True)
class Program:
    """What a Python cell sends into the container: the body, the inputs, the output names."""

    source: str
    inputs: Mapping[str, Encoded]
    outputs: tuple[str, ...]
    out_fd: int | None

    def encode(self) -> bytes:
        """The stdin of the bootstrap, in the data format."""
        return bytes(encode({"source": self.source, "inputs": dict(self.inputs),
                             "outputs": list(self.outputs), "out_fd": self.out_fd}))


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


def pack_inputs(names: tuple[str, ...], namespace: Mapping[str, Any]) -> dict[str, Encoded]:
    """Encode each named variable of the notebook, naming the one that cannot be sent."""
    packed: dict[str, Encoded] = {}
    for name in names:
        if name not in namespace:
            raise TransferError(f"-i {name}: no variable {name!r} in the notebook; define it "
                                "first or remove it from -i")
        try:
            packed[name] = encode(namespace[name])
        except TransferError as err:
            raise TransferError(f"-i {name}: {refusal(err, '-i', name)}") from None
    return packed


def unpack_outputs(names: tuple[str, ...], data: bytes) -> dict[str, Any]:
    """Decode the variables the container sent back, or say which one is missing and why.

    ``data`` is what the container wrote: it may be anything, so every part is checked and
    nothing in it is run.
    """
    if not names:
        return {}
    if not data:
        raise TransferError(f"-o {','.join(names)}: the cell sent nothing back")
    try:
        received = loads(data, views=True)
    except TransferError as err:
        raise TransferError(f"-o {','.join(names)}: what the container sent back cannot be "
                            f"read: {err}") from None
    if type(received) is not dict:
        raise TransferError(f"-o {','.join(names)}: the container sent back a "
                            f"{type(received).__name__}, not the variables")
    values: dict[str, Any] = {}
    problems = []
    for name in names:
        entry: Any = received.get(name)
        status = entry[0] if type(entry) is tuple and entry else None
        if type(status) is not str:
            problems.append(f"-o {name}: the container sent nothing for {name!r}")
        elif status == "missing" and len(entry) == 1:
            problems.append(f"-o {name}: the cell did not define {name!r}")
        elif status == "refused" and len(entry) == 2 and type(entry[1]) is str:
            reason = entry[1] if len(entry[1]) <= MAX_REASON else entry[1][:MAX_REASON] + "..."
            problems.append(f"-o {name}: {reason}")
        elif status == "ok" and len(entry) == 2 and type(entry[1]) is memoryview:
            try:
                values[name] = loads(entry[1])
            except TransferError as err:
                problems.append(f"-o {name}: what the container sent cannot be read: {err}")
        else:
            problems.append(f"-o {name}: the container sent a malformed entry for {name!r}")
    if problems:
        raise TransferError("; ".join(problems))
    return values
