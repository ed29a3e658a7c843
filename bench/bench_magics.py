"""Benchmark of the magics from a warm kernel through jupyter_client (as a notebook sees it).

1. Latency of a ``pass`` cell: ``%%container --mem 100m`` vs ``%%script python`` vs
   ``!python -c pass``, interleaved (so drift hits all three alike); median and p90, ratios.
2. Sampler CPU cost: the meter thread at 20 and 100 Hz on a live container cgroup, as CPU
   seconds of this process per wall second (``time.thread_time`` of the sampling thread).
3. Live plot cost: a CPU-bound cell (a fixed loop) under ``--plot`` vs ``--no-plot``,
   interleaved; the wall-time ratio says how much drawing in the kernel slows the container.

Run as root: ``sudo .venv/bin/python bench/bench_magics.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbcontainer.notebook.meter import Meter  # noqa: E402


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


def run(kc: Any, code: str, timeout: float = 300) -> tuple[float, str]:
    """Execute ``code``; wall time from request to idle, and the status."""
    start = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"cell timed out: {code!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "error":
            raise RuntimeError(f"cell failed: {code!r}: {msg['content']['evalue']}")
        if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - start, "ok"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def latency(kc: Any, rounds: int) -> dict[str, list[float]]:
    """Interleaved ``pass`` cells, after one warm-up each."""
    cells = {
        "%%container --mem 100m": "%%container --mem 100m --no-plot\npass",
        "%%script python": f"%%script {sys.executable}\npass",
        "!python -c pass": f"!{sys.executable} -c pass",
        "plain pass (kernel)": "pass",
    }
    for code in cells.values():
        run(kc, code)
    times: dict[str, list[float]] = {k: [] for k in cells}
    for _ in range(rounds):
        for name, code in cells.items():
            times[name].append(run(kc, code)[0])
    return times


class TimedMeter(Meter):
    """A meter that records the CPU time its sampling thread used."""

    cpu = 0.0

    def _run(self) -> None:
        t0 = time.thread_time()
        super()._run()
        self.cpu = time.thread_time() - t0


def sampler_cost(rates: tuple[float, ...], seconds: float) -> dict[float, float]:
    """CPU use of the meter thread (fraction of a core) per sampling rate, on a live cgroup."""
    from nbcontainer import Container, make_spec

    out: dict[float, float] = {}
    c = Container(make_spec(["sleep", "600"], image="busybox", memory="100m"),
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c.start()
    try:
        for rate in rates:
            meter = TimedMeter(c.cgroup, rate=rate)
            meter.start()
            time.sleep(seconds)
            series = meter.stop()
            out[rate] = meter.cpu / seconds
            print(f"  {rate:g} Hz: {series.samples} samples in {seconds:g} s "
                  f"({series.samples / seconds:.1f}/s achieved)")
    finally:
        c.kill()
        c.cleanup()
    return out


def plot_cost(kc: Any, rounds: int) -> dict[str, list[float]]:
    """A CPU-bound cell (about 2-3 s) with the live plot on and off, interleaved."""
    body = "x = 0\nfor i in range(25_000_000):\n    x += i\n"
    cells = {"--plot": f"%%container --plot\n{body}", "--no-plot": f"%%container --no-plot\n{body}"}
    times: dict[str, list[float]] = {k: [] for k in cells}
    for _ in range(rounds):
        for name, code in cells.items():
            times[name].append(run(kc, code)[0])
    return times


def report(title: str, times: dict[str, list[float]], base: str) -> None:
    """Median, p90 and the ratio of medians to ``base``."""
    print(title)
    ref = statistics.median(times[base])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<24} median {med * 1000:8.1f} ms   p90 {pct(values, 90) * 1000:8.1f} ms"
              f"   x{med / ref:5.2f} of {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--plot-rounds", type=int, default=5)
    parser.add_argument("--sampler-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_magics: run as root (containers need namespaces and cgroups)")
    with tempfile.TemporaryDirectory(prefix="nbc-bench-") as tmp:
        os.environ.setdefault("NBCONTAINER_ROOT", os.path.join(tmp, "store"))
        print(f"cpus: {os.cpu_count()}, python: {sys.version.split()[0]}, "
              f"store: {os.environ['NBCONTAINER_ROOT']}")
        km, kc = start_kernel(tmp)
        try:
            report(f"1. latency of a `pass` cell ({args.rounds} interleaved rounds)",
                   latency(kc, args.rounds), "%%script python")
            print("2. sampler CPU cost (meter thread, fraction of one core)")
            for rate, frac in sampler_cost((20.0, 50.0, 100.0), args.sampler_seconds).items():
                print(f"  {rate:g} Hz: {frac * 100:.3f} % of a core")
            report(f"3. CPU-bound cell, live plot on vs off ({args.plot_rounds} rounds)",
                   plot_cost(kc, args.plot_rounds), "--no-plot")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


if __name__ == "__main__":
    main()
