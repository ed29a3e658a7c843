"""Round trip of a ``pass`` cell on the container kernel next to a stock ipykernel, interleaved.

Run as root: ``.venv/bin/python bench/bench_kernel.py [--rounds N] [--starts N]``. Both kernels
are installed into a temporary Jupyter path (never the system's): ``python3`` is a stock
ipykernel on this interpreter, ``nbcontainer`` the container kernel with default options. A
round trip is from ``execute_request`` sent to both the ``execute_reply`` and the ``idle``
status received, as nbclient waits for them. The two kernels run in a shuffled order each
round with an idle gap before each cell, so drift on a shared machine hits both alike and
neither's background work lands in the other's time. Prints median, min and the ratio of
medians; ``--starts`` also times kernel start-up (start to first kernel_info reply). Both
kernels run this interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import interleave, interpreter, median_min, order_note  # noqa: E402


def install(prefix: Path, memory: str | None, extra: list[str]) -> None:
    """The two kernelspecs, into ``prefix``."""
    from jupyter_client.kernelspec import KernelSpecManager

    from nbcontainer.kernel import kernelspec

    stock = Path(tempfile.mkdtemp())
    (stock / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (stock)", "language": "python"}))
    KernelSpecManager().install_kernel_spec(str(stock), "python3", prefix=str(prefix))
    shutil.rmtree(stock)
    options = ([f"--memory={memory}"] if memory else []) + extra
    kernelspec.install("nbcontainer", prefix=str(prefix), run_options=options)


def round_trip(kc: Any, code: str = "pass") -> float:
    """Seconds from sending ``code`` to having its reply and its idle status."""
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    got_reply = got_idle = False
    while not (got_reply and got_idle):
        if not got_reply:
            reply = kc.get_shell_msg(timeout=30)
            got_reply = reply["parent_header"].get("msg_id") == msg_id
        if not got_idle:
            msg = kc.get_iopub_msg(timeout=30)
            got_idle = (msg["parent_header"].get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.05,
                        help="idle seconds before each timed cell (default 0.05)")
    parser.add_argument("--memory", default=None, help="--memory for the container kernel")
    parser.add_argument("--plot", choices=("auto", "on", "off"), default=None,
                        help="--plot for the container kernel (default: its default, auto)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    prefix = Path(tempfile.mkdtemp(prefix="nbck-bench-"))
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    install(prefix, args.memory, [f"--plot={args.plot}"] if args.plot else [])
    from jupyter_client.manager import start_new_kernel

    names = ("python3", "nbcontainer")
    starts: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.starts):
        for name in names:
            t0 = time.perf_counter()
            km, kc = start_new_kernel(kernel_name=name, startup_timeout=60)
            starts[name].append(time.perf_counter() - t0)
            kc.stop_channels()
            km.shutdown_kernel()
    kernels = {n: start_new_kernel(kernel_name=n, startup_timeout=60) for n in names}
    try:
        for _ in range(args.warmup):
            for name in names:
                round_trip(kernels[name][1])
        times = interleave({n: lambda n=n: round_trip(kernels[n][1]) for n in names},
                           args.rounds, gap=args.gap, seed=5)
    finally:
        for km, kc in kernels.values():
            kc.stop_channels()
            km.shutdown_kernel()
        subprocess.run(["rm", "-rf", str(prefix)], check=False)
    print(f"`pass` cell round trip (ms), {order_note(args.rounds, args.gap)}, after "
          f"{args.warmup} warm-up rounds; both kernels run {interpreter()}")
    print(f"{'kernel':<14}{'median':>9}{'min':>9}{'start median':>15}")
    for name in names:
        med, low = median_min(times[name])
        smed = f"{statistics.median(starts[name]) * 1000:.0f}" if starts[name] else "-"
        print(f"{name:<14}{med * 1000:>9.2f}{low * 1000:>9.2f}{smed:>15}")
    m_stock, l_stock = median_min(times["python3"])
    m_ctr, l_ctr = median_min(times["nbcontainer"])
    line = f"ratio container/stock: median {m_ctr / m_stock:.2f}x, min {l_ctr / l_stock:.2f}x"
    if args.starts:
        s_ctr, s_stock = (statistics.median(starts[n]) for n in ("nbcontainer", "python3"))
        line += f"; start-up {s_ctr / s_stock:.2f}x"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
