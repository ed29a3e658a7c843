"""Run every benchmark and regenerate ``bench/RESULTS.md`` from their output.

``sudo .venv/bin/python bench/run_all.py`` (root) runs each benchmark script, one after another,
with this interpreter (so every Python side of every comparison runs the same Python), and
writes their printed tables into RESULTS.md under the date and the machine's facts (kernel, CPU
model, cores, cgroup layout, Python, load). Nothing in RESULTS.md is written by hand; the
figures quoted in README.md and docs/ are generated from it by ``bench/quote.py``.

``--quick`` is the CI smoke run: every benchmark with few rounds and small inputs (well under
two minutes on 2 CPUs), so a benchmark that no longer runs fails CI. It prints the tables and
writes nothing unless ``--out`` names a file.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import cgroup_layout, cpu_model, load  # noqa: E402

# (section id, title, script, full arguments, quick arguments). The section id is what
# bench/quote.py refers to; keep it stable when a title changes.
BENCHMARKS = [
    ("start", "Container start: nbcontainer vs runc and crun, on this machine's cgroup layout",
     "bench_start.py", ["--rounds", "30"], ["--rounds", "5", "--gap", "0.05"]),
    ("start-no-unified", "Container start with the cgroup2 mount hidden (so crun can run; not "
     "this machine's layout)", "bench_start.py",
     ["--rounds", "30", "--layout", "no-unified", "--no-attach"],
     ["--rounds", "2", "--gap", "0", "--layout", "no-unified", "--no-attach"]),
    ("start-v2vm", "Container start inside a pure cgroup v2 VM (QEMU TCG, about 10x slower than "
     "this host): nbcontainer vs crun, as most users' machines are laid out",
     "bench_start.py", ["--v2vm", "--rounds", "10"],
     ["--v2vm", "--rounds", "1", "--gap", "0", "--no-attach"]),
    ("magics", "Notebook cells: %%container vs %%script python; sampler; live plot",
     "bench_magics.py", [],
     ["--rounds", "5", "--gap", "0.05", "--plot-rounds", "1", "--plot-loop", "5000000",
      "--sampler-seconds", "0.5"]),
    ("kernel", "Container kernel round trip vs stock ipykernel", "bench_kernel.py", [],
     ["--rounds", "20", "--warmup", "3", "--starts", "0", "--gap", "0"]),
    ("network", "Networking: start with a bridge (vs --net none and runc with the CNI bridge "
     "plugin); TCP throughput over the bridge, a veth pair and a published port",
     "bench_network.py", [], ["--quick"]),
    ("overlay", "Overlay mount time by layer count", "bench_overlay.py", ["--rounds", "10"],
     ["--rounds", "1"]),
    ("images", "Commit, import and tar writing next to GNU tar (tmpfs and disk)",
     "bench_images.py", [],
     ["--files", "500", "--big-mib", "10", "--rounds", "1", "--gap", "0"]),
    ("registry", "Pull from a local registry vs skopeo copy + umoci unpack; a second pull",
     "bench_registry.py", [],
     ["--layers", "3", "--layer-mib", "2", "--rounds", "1", "--gap", "0"]),
]


def machine() -> list[str]:
    """The facts a reader needs to compare two RESULTS.md files."""
    return [
        f"- kernel: Linux {platform.release()} ({platform.machine()})",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- cgroup layout: {cgroup_layout()}",
        f"- Python: {platform.python_version()} ({sys.executable}"
        + (f", a venv of {getattr(sys, '_base_executable', sys.base_prefix)}"
           if sys.prefix != sys.base_prefix else "")
        + "); every Python side of every comparison runs this interpreter (never a `python3` "
        "found on PATH, which can be a shim that imports more at start-up)",
    ]


def run(script: str, args: list[str]) -> tuple[str, float, int]:
    """Run one benchmark; its stdout (plus the tail of stderr if it failed), seconds, status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          text=True, cwd=HERE.parent, timeout=3600, env=env)
    output = "\n".join(line for line in proc.stdout.strip().splitlines()
                       if "Kernel is running over TCP" not in line)
    if proc.returncode != 0:
        output += f"\n(exit status {proc.returncode})\n{proc.stderr.strip()[-2000:]}"
    return output, time.monotonic() - t0, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the CI smoke run: few rounds, small inputs; writes no file "
                             "unless --out is given")
    parser.add_argument("--out", default=None,
                        help="file to write (default: bench/RESULTS.md, or none with --quick)")
    parser.add_argument("--note", default="",
                        help="a sentence on the conditions (e.g. 'the machine was busy')")
    parser.add_argument("--only", default="", help="comma list of section ids to run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_all: run as root (containers need namespaces and cgroups)")
    out = args.out or (None if args.quick else str(HERE / "RESULTS.md"))
    only = set(filter(None, args.only.split(",")))
    started = time.gmtime()
    load_before = load()
    # Cached bytecode for every side, even where PYTHONDONTWRITEBYTECODE is set.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "nbcontainer")],
                   check=False)
    sections: list[str] = []
    status = 0
    t_all = time.monotonic()
    for sid, title, script, full, quick in BENCHMARKS:
        bench_args = quick if args.quick else full
        if bench_args is None or (only and sid not in only):
            continue
        print(f"== {title}", flush=True)
        output, seconds, code = run(script, bench_args)
        status = status or code
        print(output, flush=True)
        sections.append(f"<!-- section:{sid} -->\n## {title}\n\n"
                        f"`bench/{script} {' '.join(bench_args)}` ({seconds:.0f} s)\n\n"
                        f"```\n{output}\n```\n")
    print(f"all benchmarks: {time.monotonic() - t_all:.0f} s", flush=True)
    if out is None:
        return status
    head = [
        "# Benchmark results\n",
        f"Generated by `bench/run_all.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', started)}; do not edit by hand (README.md and "
        "docs/ quote this file through `bench/quote.py`).\n",
        "Machine:\n\n" + "\n".join(machine()) + f"\n- load average (1 min) at the start: "
        f"{load_before}, at the end: {load()}\n",
    ]
    if args.note:
        head.append(f"Conditions: {args.note}\n")
    Path(out).write_text("\n".join(head + sections))
    print(f"wrote {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
