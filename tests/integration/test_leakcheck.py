"""The leak check itself (tests/conftest.py) sees what a test leaves, by what it is.

A helper forked by the zygote runs the zygote's code and so shares its command line; it must
still be flagged. The zygote that ``Zygote.running()`` reports is not a leak.
"""

from __future__ import annotations

import os
import socket
import time

import psutil
import pytest
from conftest import leaks, snapshot

from nbcontainer.runtime.zygote import Zygote

pytestmark = pytest.mark.root


def test_a_leaked_zygote_helper_is_flagged_and_the_zygote_is_not() -> None:
    Zygote.shutdown()
    before = snapshot()
    zygote = Zygote.get()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        helper = zygote.spawn(theirs.fileno(), (devnull, devnull, devnull), ())
    finally:
        theirs.close()
        os.close(devnull)
    try:
        # The helper waits for its config on the socket we keep open: a leaked helper.
        assert psutil.Process(helper.pid).ppid() == zygote.pid
        extra = leaks(before, wait=0)
        flagged = {pid for pid, _ in extra.get("processes", ())}
        assert flagged == {helper.pid}, extra
    finally:
        ours.close()  # EOF: the helper exits, the zygote reaps it
        helper.wait(10)
        Zygote.shutdown()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(helper.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaks(before)


def test_a_process_that_merely_looks_like_the_zygote_is_flagged() -> None:
    """Same command line as a zygote, but not the one ``Zygote.running()`` reports."""
    import subprocess
    import sys

    before = snapshot()
    code = "import time  # nbcontainer.runtime.zygote\ntime.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "nbcontainer.runtime.zygote"])
    try:
        deadline = time.monotonic() + 10
        flagged: set[int] = set()
        while proc.pid not in flagged and time.monotonic() < deadline:
            flagged = {pid for pid, _ in leaks(before, wait=0).get("processes", ())}
        assert proc.pid in flagged
    finally:
        proc.kill()
        proc.wait()
    assert not leaks(before)
