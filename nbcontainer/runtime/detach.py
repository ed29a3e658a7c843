"""Detached containers (``run -d``): a small monitor process is their supervisor.

The CLI starts ``python -m nbcontainer.runtime.detach`` in a new session, hands it the spec on
stdin, and waits only until the monitor says the container started (its id) or why it did not.
The monitor then waits for the container, records how it ended, and removes it if asked.
Because the monitor is the container's supervisor, the PR_SET_PDEATHSIG chain and ``gc`` work
for detached containers exactly as for foreground ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nbcontainer.errors import ContainerError, SetupError
from nbcontainer.spec import ContainerSpec, spec_from_dict, spec_to_dict


def start_detached(spec: ContainerSpec, root: Path, auto_remove: bool = False) -> str:
    """Start ``spec`` under a monitor process; return the container id once it runs."""
    request = {"spec": spec_to_dict(spec), "root": str(root), "auto_remove": auto_remove}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbcontainer.runtime.detach"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.stdout.close()
    try:
        reply = json.loads(line) if line else {"error": "the monitor process died at start"}
    except ValueError:
        reply = {"error": f"the monitor process said {line[:200]!r}"}
    if "error" in reply:
        proc.wait()
        raise SetupError(reply["error"])
    return str(reply["id"])


def _monitor() -> int:
    from nbcontainer.runtime.container import Container

    request = json.loads(sys.stdin.read())
    spec = spec_from_dict(request["spec"])
    devnull = os.open(os.devnull, os.O_RDWR)
    container = Container(spec, root=request["root"], stdin=devnull, log=True,
                          keep=not request.get("auto_remove"))
    out = sys.stdout
    try:
        container.start()
    except ContainerError as err:
        out.write(json.dumps({"error": str(err)}) + "\n")
        out.flush()
        return 125
    except Exception as err:  # noqa: BLE001 - the CLI shows it as one sentence
        out.write(json.dumps({"error": f"unexpected failure: {err!r}"}) + "\n")
        out.flush()
        return 125
    out.write(json.dumps({"id": container.id}) + "\n")
    out.flush()
    os.dup2(devnull, 1)
    try:
        container.wait()
    finally:
        container.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(_monitor())
