"""Benchmark of the magics from a warm kernel through jupyter_client (as a notebook sees it).

1. Latency of a ``pass`` cell: ``%%container --mem 100m`` vs ``%%script python`` vs
   ``!python -c pass`` vs a plain ``pass``; every side runs this interpreter.
2. Sampler CPU cost: the meter thread at 20, 50 and 100 Hz on a live container cgroup, as CPU
   seconds of its thread per wall second (``time.thread_time``), and per sample; the rates
   take turns over 5 runs of 3 s, medians.
3. Live plot cost: a CPU-bound cell (a fixed loop) under ``--plot`` vs ``--no-plot``: the
   wall-time ratio says how much drawing in the kernel slows the container; the kernel
   process's extra CPU time (``/proc/PID/stat``) divided by the frames it published is what
   one frame costs the kernel.
4. The kernel process's memory (RSS and its peak) after these cells.
5. Allocation per cell in the kernel process (tracemalloc, started after the cells above, so
   imports and first-use caches are warm): each side runs through ``run_cell_magic`` inside a
   cell that reads ``tracemalloc.get_traced_memory()`` around it, so IPython's own work for a
   cell (the same for every cell) is not counted; peak (above the start) and net (left traced
   afterwards) per cell, median over the rounds. ``--trace-top N`` also prints the N source
   lines that allocated most, net, over the ``%%container`` rounds (a snapshot diff).

Sides of 1 and 3 run in a shuffled order each round with an idle gap before each cell (as
between cells a user runs), so one side's background work (a spare helper being refilled, a
teardown) is not charged to the next. Median and min.

Run as root: ``sudo .venv/bin/python bench/bench_magics.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, interpreter, median_min, order_note  # noqa: E402

from nbcontainer.notebook.meter import Meter  # noqa: E402

FRAMES = {"display_data", "update_display_data"}


def start_kernel(tmp: str) -> tuple[KernelManager, Any]:
    """A kernel running this interpreter, ``%load_ext nbcontainer`` done."""
    spec_dir = Path(tmp) / "kernels" / "bench"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench", "language": "python"}))
    km = KernelManager(kernel_name="bench",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))
    km.start_kernel(env={**os.environ})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    run(kc, "%load_ext nbcontainer")
    return km, kc


def run(kc: Any, code: str, timeout: float = 300,
        out: list[str] | None = None) -> tuple[float, int]:
    """Execute ``code``; wall time from request to idle, and the plot frames it published
    (``out``: collects what it printed)."""
    start = time.perf_counter()
    msg_id = kc.execute(code)
    frames = 0
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"cell timed out: {code!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "error":
            raise RuntimeError(f"cell failed: {code!r}: {msg['content']['evalue']}")
        if (msg["header"]["msg_type"] in FRAMES
                and "image/png" in msg["content"].get("data", {})):
            frames += 1
        if out is not None and msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - start, frames


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kernel_memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of process ``pid``, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore


def latency(kc: Any, rounds: int, gap: float) -> dict[str, list[float]]:
    """``pass`` cells in a shuffled order, after one warm-up each."""
    cells = {
        "%%container --mem 100m": "%%container --mem 100m --no-plot\npass",
        "%%script python": f"%%script {sys.executable}\npass",
        "!python -c pass": f"!{sys.executable} -c pass",
        "plain pass (kernel)": "pass",
    }
    for code in cells.values():
        run(kc, code)
    return interleave({name: lambda code=code: run(kc, code) for name, code in cells.items()},
                      rounds, gap=gap, seed=2)


class TimedMeter(Meter):
    """A meter that records the CPU time its sampling thread used."""

    cpu = 0.0

    def _run(self) -> None:
        t0 = time.thread_time()
        super()._run()
        self.cpu = time.thread_time() - t0


#: The workloads the sampler is measured on: memory holding still (the meter's fast samples
#: pause, meter.py says why), and memory moving all the time (4 MiB of tmpfs written and
#: removed every 20 ms: every sample sees a move, so the asked rate is taken throughout).
SAMPLER_WORKLOADS = {
    "still": ["sleep", "600"],
    "moving": ["sh", "-c", "while :; do head -c 4194304 /dev/zero > /dev/shm/m; usleep 20000; "
                           "rm /dev/shm/m; usleep 20000; done"],
}


def bare_loop(path: str, rate: float, seconds: float) -> tuple[float, int]:
    """The floor of a sample: a thread on the meter's schedule that waits as it does (poll on
    a pipe, with a timeout) and preads the memory file, and does nothing else. Returns its
    CPU seconds and samples."""
    out: list[float] = []

    def body() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        wake_r, wake_w = os.pipe()
        poll = select.poll()
        poll.register(wake_r, select.POLLIN)
        t0, n = time.thread_time(), 0
        due = time.monotonic()
        end = due + seconds
        while due < end:
            due += 1.0 / rate
            poll.poll(max(0.0, due - time.monotonic()) * 1000)
            int(os.pread(fd, 32, 0))
            n += 1
        out.extend((time.thread_time() - t0, n))
        for f in (fd, wake_r, wake_w):
            os.close(f)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out[0], int(out[1])


def sampler_cost(rates: tuple[float, ...], seconds: float, rounds: int,
                 command: list[str]) -> dict[float | str, tuple[float, float, float]]:
    """Per sampling rate on a live cgroup running ``command``: the meter thread's CPU
    (fraction of a core), CPU seconds per sample and samples per second, medians over
    ``rounds`` runs of ``seconds`` each (the rates take turns, so a busy moment of the machine
    does not land on one rate only); and, under the key ``"floor"``, :func:`bare_loop` at the
    highest rate, in the same turns."""
    from nbcontainer import Container, make_spec

    runs: dict[float | str, list[tuple[float, float, int]]] = {
        rate: [] for rate in (*rates, "floor")}
    c = Container(make_spec(command, image="busybox", memory="100m"),
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c.start()
    try:
        for _ in range(rounds):
            for rate in rates:
                meter = TimedMeter(c.cgroup, rate=rate)
                meter.start()
                time.sleep(seconds)
                series = meter.stop()
                runs[rate].append((meter.cpu / seconds, meter.cpu / max(1, series.samples),
                                   series.samples))
            assert c.cgroup is not None
            with c.cgroup.open_sampler(["memory_current"]) as kept:
                path = kept.paths["memory_current"]
            cpu, samples = bare_loop(path, max(rates), seconds)
            runs["floor"].append((cpu / seconds, cpu / max(1, samples), samples))
    finally:
        c.kill()
        c.cleanup()
    return {rate: (statistics.median(f for f, _, _ in values),
                   statistics.median(e for _, e, _ in values),
                   statistics.median(n for _, _, n in values) / seconds)
            for rate, values in runs.items()}


def plot_cost(kc: Any, pid: int, rounds: int, loop: int,
              gap: float) -> tuple[dict[str, list[float]], float, int]:
    """A CPU-bound cell with the live plot on and off, in a shuffled order; also the kernel's
    CPU seconds per frame (extra kernel CPU of the plotted cells over the unplotted ones, per
    frame they published) and the frames per plotted cell (median)."""
    body = f"x = 0\nfor i in range({loop}):\n    x += i\n"
    cells = {"--plot": f"%%container --plot\n{body}", "--no-plot": f"%%container --no-plot\n{body}"}
    cpu: dict[str, float] = {k: 0.0 for k in cells}
    frames: list[int] = []
    for code in cells.values():  # warm-up: matplotlib's import and first figure are not a frame
        run(kc, code)

    def cell(name: str) -> None:
        before = cpu_seconds(pid)
        _, n = run(kc, cells[name])
        cpu[name] += cpu_seconds(pid) - before
        if name == "--plot":
            frames.append(n)

    times = interleave({name: lambda name=name: cell(name) for name in cells}, rounds, gap=gap,
                       seed=3)
    per_frame = (cpu["--plot"] - cpu["--no-plot"]) / max(1, sum(frames))
    return times, per_frame, int(statistics.median(frames)) if frames else 0


#: One measured cell in the kernel: traced bytes around ``run_cell_magic`` (peak above the start,
#: net after it), printed as JSON on a line of its own.
TRACED_CELL = """\
import json as _json, tracemalloc as _tm
_tm.reset_peak()
_start = _tm.get_traced_memory()[0]
get_ipython().run_cell_magic({magic!r}, {line!r}, "pass\\n")
_now, _peak = _tm.get_traced_memory()
print("\\nTRACED " + _json.dumps([_peak - _start, _now - _start]))
"""


def allocation(kc: Any, rounds: int, gap: float, top: int) -> dict[str, tuple[float, float]]:
    """Median (peak, net) traced bytes per ``pass`` cell of each side, tracemalloc started
    after a warm-up of each; with ``top``, the lines that allocated most (net) over the
    ``%%container`` rounds."""
    sides = {"%%container pass": ("container", ""),
             "%%container --no-plot": ("container", "--no-plot"),
             "%%script python": ("script", sys.executable)}
    for magic, line in sides.values():
        run(kc, f"%%{magic} {line}\npass")
    run(kc, "import tracemalloc\ntracemalloc.start(25)")
    traced: dict[str, list[tuple[int, int]]] = {name: [] for name in sides}
    try:
        for magic, line in sides.values():  # warm-up under tracing (its first-use caches)
            run(kc, TRACED_CELL.format(magic=magic, line=line))
        if top:
            run(kc, "_snap0 = tracemalloc.take_snapshot()")
        for _ in range(rounds):
            for name, (magic, line) in sides.items():
                time.sleep(gap)
                out: list[str] = []
                run(kc, TRACED_CELL.format(magic=magic, line=line), out=out)
                peak, net = json.loads("".join(out).rsplit("TRACED ", 1)[1])
                traced[name].append((peak, net))
        if top:
            out = []
            run(kc, "_diff = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter("
                    "False, tracemalloc.__file__)]).compare_to(_snap0.filter_traces(["
                    "tracemalloc.Filter(False, tracemalloc.__file__)]), 'lineno')\n"
                    f"for _d in _diff[:{top}]:\n    print('   ', _d)", out=out)
            print("".join(out), end="")
    finally:
        run(kc, "tracemalloc.stop()")
    return {name: (statistics.median(p for p, _ in v), statistics.median(n for _, n in v))
            for name, v in traced.items()}


def report(title: str, times: dict[str, list[float]], base: str) -> None:
    """Median, min and the ratio of medians to ``base``."""
    print(title)
    ref = statistics.median(times[base])
    for name, values in times.items():
        med, low = median_min(values)
        print(f"  {name:<24} median {med * 1000:8.1f} ms   min {low * 1000:8.1f} ms"
              f"   x{med / ref:5.2f} of {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--plot-rounds", type=int, default=11)
    parser.add_argument("--alloc-rounds", type=int, default=10)
    parser.add_argument("--trace-top", type=int, default=0,
                        help="part 5: also print the N lines that allocated most (net)")
    parser.add_argument("--parts", default="1,2,3,4,5",
                        help="which parts to run, e.g. 2,3 (default: all)")
    parser.add_argument("--sampler-seconds", type=float, default=3.0)
    parser.add_argument("--sampler-rounds", type=int, default=5)
    parser.add_argument("--plot-loop", type=int, default=25_000_000,
                        help="iterations of the CPU-bound cell's loop (default: about 2-3 s)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="idle seconds before each timed cell (default 0.3)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_magics: run as root (containers need namespaces and cgroups)")
    with tempfile.TemporaryDirectory(prefix="nbc-bench-") as tmp:
        os.environ.setdefault("NBCONTAINER_ROOT", os.path.join(tmp, "store"))
        print(f"cpus: {os.cpu_count()}; kernel and every Python side: {interpreter()}")
        km, kc = start_kernel(tmp)
        parts = {int(p) for p in args.parts.split(",")}
        try:
            if 1 in parts:
                report(f"1. latency of a `pass` cell ({order_note(args.rounds, args.gap)})",
                       latency(kc, args.rounds, args.gap), "%%script python")
            if 2 in parts:
                print("2. sampler CPU cost (meter thread, fraction of one core; CPU per "
                      "sample; the rate asked for, and the rate achieved; median of "
                      f"{args.sampler_rounds} runs of {args.sampler_seconds:g} s)")
                for workload, command in SAMPLER_WORKLOADS.items():
                    print(f"  memory {workload}: {' '.join(command)}")
                    prefix = "" if workload == "still" else f"{workload} "
                    for rate, (frac, each, achieved) in sampler_cost(
                            (20.0, 50.0, 100.0), args.sampler_seconds, args.sampler_rounds,
                            command).items():
                        what = (f"{rate:g} Hz" if rate != "floor" else
                                "floor at 100 Hz (a bare loop: the same wait and one pread, "
                                "nothing else)")
                        print(f"  {prefix}{what}: {frac * 100:.3f} % of a core, "
                              f"{each * 1e6:.0f} us per sample, {achieved:.1f} samples/s "
                              "achieved")
            if 3 in parts:
                times, per_frame, frames = plot_cost(kc, km.provisioner.process.pid,
                                                     args.plot_rounds, args.plot_loop, args.gap)
                report(f"3. CPU-bound cell, live plot on vs off "
                       f"({order_note(args.plot_rounds, args.gap)})", times, "--no-plot")
                print(f"  kernel CPU per plot frame: {per_frame * 1000:.1f} ms "
                      f"({frames} frames per plotted cell, median)")
            if 4 in parts:
                rss, hwm = kernel_memory(km.provisioner.process.pid)
                print(f"4. kernel process memory after these cells (nbcontainer and "
                      f"matplotlib loaded): RSS {rss:.0f} MiB, peak {hwm:.0f} MiB")
            if 5 in parts:
                print(f"5. allocation in the kernel process per `pass` cell (tracemalloc, "
                      f"{args.alloc_rounds} rounds after a warm-up, {args.gap * 1000:.0f} ms "
                      f"idle before each; median; IPython's own per-cell work not counted)")
                for name, (peak, net) in allocation(kc, args.alloc_rounds, args.gap,
                                                    args.trace_top).items():
                    print(f"  {name:<24} peak {peak / 2**20:6.2f} MiB   net {net / 1024:8.1f} KiB")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


if __name__ == "__main__":
    main()
