"""PID 1 of a container that asked for an init (``--init``, a named or a kernel's container).

A process that is PID 1 of its namespace ignores every signal it has no handler for, and
orphans are reparented to it: without a proper init, Ctrl-C does nothing and zombies pile up.
This one forwards signals to the payload, reaps every zombie, and exits with the payload's
status (tini's job, like ``docker run --init``). Without a payload it is an idle init that
keeps a named container's namespaces alive until told to stop (Kubernetes' pause container).
"""

from __future__ import annotations

import contextlib
import os
import signal

TYPE_CHECKING = False  # typing is slow to import; this runs in every container's helper
if TYPE_CHECKING:
    from collections.abc import Callable

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def run(start_payload: Callable[[], None] | None, report_exit: Callable[[int], None]) -> None:
    """Be PID 1 until the payload ends; never returns.

    Parameters
    ----------
    start_payload
        Runs in a forked child and never returns (it execs the payload); None: idle.
    report_exit
        Called with the payload's wait status before this process exits with its code.
    """
    payload = 0
    if start_payload is not None:
        payload = os.fork()
        if payload == 0:
            start_payload()
            os._exit(127)  # not reached: start_payload execs or exits

    def forward(signum: int, _frame: object) -> None:
        if payload:
            with contextlib.suppress(ProcessLookupError):
                os.kill(payload, signum)
        elif signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os._exit(0)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            if not payload:
                signal.pause()
                continue
            os._exit(0)
        except InterruptedError:
            continue
        if pid == payload:
            report_exit(status)
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))
