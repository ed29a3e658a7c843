"""cli.exit_now: the CLI's exit without the interpreter's teardown keeps what an exit shows."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": REPO})


def test_exit_now_runs_atexit_flushes_and_keeps_the_status() -> None:
    done = _run("import atexit, sys\n"
                "atexit.register(lambda: print('atexit ran'))\n"
                "from nbcontainer.cli import exit_now\n"
                "sys.stdout.write('buffered, no newline')\n"
                "sys.stderr.write('err')\n"
                "exit_now(3)\n")
    assert done.returncode == 3
    assert done.stdout == "buffered, no newlineatexit ran\n"
    assert done.stderr == "err"


def test_exit_now_with_another_thread_waits_for_it() -> None:
    done = _run("import threading, time\n"
                "from nbcontainer.cli import exit_now\n"
                "t = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done')))\n"
                "t.start()\n"
                "exit_now(4)\n")
    assert done.returncode == 4
    assert done.stdout == "thread done\n"


def test_exit_now_with_a_closed_stdout_says_so_in_its_status() -> None:
    done = _run("import io, os, sys\n"
                "from nbcontainer.cli import exit_now\n"
                "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
                "sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, 'w', False)))\n"
                "sys.stdout.write('x' * 10)  # buffered: the pipe's end is seen at the flush\n"
                "exit_now(0)\n")
    assert done.returncode == 120
