"""How a container ended, with its resource figures, and that end said in words."""

from __future__ import annotations

import signal as signal_mod

from nbcontainer._records import record
from nbcontainer.spec import format_size


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9, or ``signal 42`` for one without a name."""
    try:
        return signal_mod.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@record(frozen=True)
class Result:
    """The end of a container (or of one exec in it) and what it used.

    ``exit_code`` follows the shell's convention and docker run's: the command's status,
    ``128+N`` when killed by signal N, ``137`` when OOM-killed, ``124`` on ``--timeout``.
    """

    exit_code: int
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    wall_time: float = 0.0
    cpu_time: float | None = None
    memory_peak: int | None = None
    memory_limit: int | None = None
    oom_kills: int = 0
    pids_peak: int | None = None
    timeout: float | None = None
    oom_cause: str | None = None  # "limit": its own memory limit; "outside": a parent's or
    #                               the machine's OOM killer

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """Why it ended, in one sentence: exit code, signal, OOM kill at the limit, timeout."""
        if self.timed_out:
            return f"timed out after {self.timeout or self.wall_time:g} s and was killed"
        if self.oom_killed:
            limit = format_size(self.memory_limit)
            peak = format_size(self.memory_peak)
            what = "was OOM-killed" if self.signal == signal_mod.SIGKILL else (
                f"had {self.oom_kills} process(es) OOM-killed and exited with code "
                f"{self.exit_code}")
            if self.oom_cause == "outside":
                return (f"{what} by the kernel, though not at its own memory limit (peak "
                        f"usage {peak}, limit {limit}): a parent cgroup (the notebook's or "
                        "the hub's) or the whole machine ran out of memory")
            return (f"{what}: it reached the memory limit of {limit} (peak usage {peak}); "
                    "raise --memory to give it more")
        if self.signal is not None:
            return f"was killed by signal {self.signal} ({signal_name(self.signal)})"
        if self.exit_code == 127:
            return "exited with code 127: command not found"
        if self.exit_code == 126:
            return "exited with code 126: command not executable"
        return f"exited with code {self.exit_code}"

    def summary(self) -> str:
        """The one-line resource record: wall, CPU, peak/limit, OOM kills, pids, status."""
        cpu = "n/a" if self.cpu_time is None else f"{self.cpu_time:.2f} s"
        pids = "n/a" if self.pids_peak is None else str(self.pids_peak)
        status = "ok" if self.ok else self.describe()
        return (f"wall {self.wall_time:.2f} s | cpu {cpu} | memory peak "
                f"{format_size(self.memory_peak)} / limit {format_size(self.memory_limit)} | "
                f"OOM kills {self.oom_kills} | max pids {pids} | {status}")
