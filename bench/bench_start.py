"""Container start latency: nbcontainer (API and CLI) next to crun, runc and bwrap, interleaved.

Run as root: ``.venv/bin/python bench/bench_start.py [--rounds N]``. Prints medians, p90 and
ratios against ``crun run`` measured in the same run, commands interleaved so machine drift
cancels. Every side runs ``/bin/true``: nbcontainer on the ``host`` and ``busybox`` images,
crun/runc on an OCI bundle whose rootfs is the busybox image.

crun 1.8 refuses hybrid cgroup layouts (v1 controllers plus an empty cgroup2 mount, like this
machine's); so on such a machine the whole benchmark re-executes itself in a private mount
namespace that hides the empty cgroup2 mount, and every side runs there alike.

"API" starts a fresh single-threaded helper interpreter per container (``python -I -S``);
"API + zygote" forks the helper from a pre-started interpreter (what the magics and a
long-running supervisor use); "CLI" is a whole ``nbcontainer run`` process.
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
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def hybrid_unified_mount() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup/unified" for line in f)


def reexec_without_unified() -> None:
    """Re-run this script in a private mount namespace without the empty cgroup2 mount."""
    if os.environ.get("NBC_BENCH_NS") or not hybrid_unified_mount():
        return
    script = ("umount /sys/fs/cgroup/unified && exec \"$@\"")
    os.environ["NBC_BENCH_NS"] = "1"
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                          "sh", sys.executable, *sys.argv])


def make_bundle(tmp: Path, busybox_layer: str) -> Path:
    bundle = tmp / "bundle"
    (bundle).mkdir()
    shutil.copytree(busybox_layer, bundle / "rootfs", symlinks=True)
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    reexec_without_unified()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from nbcontainer import make_spec, run
    from nbcontainer.images import resolve

    tmp = Path(tempfile.mkdtemp(prefix="nbc-bench-"))
    os.environ["NBCONTAINER_ROOT"] = str(tmp / "store")
    busybox = resolve("busybox").layers[0]
    bundle = make_bundle(tmp, busybox)
    devnull = subprocess.DEVNULL
    host_spec = make_spec(["/bin/true"], image="host")
    busybox_spec = make_spec(["/bin/true"], image="busybox")
    cli = [sys.executable, "-m", "nbcontainer", "run", "host", "/bin/true"]
    counter = iter(range(10**9))

    def oci(tool: str) -> None:
        name = f"nbcbench{next(counter)}"
        subprocess.run([tool, "run", "--bundle", str(bundle), name], check=True,
                       stdout=devnull, stderr=devnull)

    sides: dict[str, Callable[[], object]] = {
        "nbcontainer API (host image)": lambda: run(host_spec, zygote=False),
        "nbcontainer API (busybox image)": lambda: run(busybox_spec, zygote=False),
        "API + zygote (host image)": lambda: run(host_spec, zygote=True),
        "API + zygote (busybox image)": lambda: run(busybox_spec, zygote=True),
        "nbcontainer CLI (host image)": lambda: subprocess.run(cli, check=True),
        "crun run (busybox bundle)": lambda: oci("crun"),
    }
    if shutil.which("runc"):
        sides["runc run (busybox bundle)"] = lambda: oci("runc")
    if shutil.which("bwrap"):
        # bubblewrap: namespaces and a read-only bind of / (no cgroup, no overlay).
        bwrap = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
                 "--proc", "/proc", "/bin/true"]
        sides["bwrap --unshare-all"] = lambda: subprocess.run(bwrap, check=True)
    samples: dict[str, list[float]] = {k: [] for k in sides}
    for fn in sides.values():  # warm-up: build the busybox layer, page in binaries
        fn()
    for _ in range(args.rounds):
        for name, fn in sides.items():
            samples[name].append(timed(fn))
    attach = attach_paths(lambda: run(host_spec, zygote=True), args.rounds)
    shutil.rmtree(tmp, ignore_errors=True)
    from nbcontainer.runtime.zygote import Zygote

    Zygote.shutdown()

    base = statistics.median(samples["crun run (busybox bundle)"])
    print(f"container start of /bin/true, {args.rounds} interleaved rounds, "
          f"interpreter {sys.executable} (Python {sys.version.split()[0]})")
    print(f"{'what':<34} {'median ms':>10} {'p90 ms':>9} {'vs crun':>8}")
    for name, values in samples.items():
        values.sort()
        med = statistics.median(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"{name:<34} {med:>10.1f} {p90:>9.1f} {med / base:>7.2f}x")
    print()
    print("API + zygote (host image), cold (0.3 s idle before each start, as between cells) "
          "and back-to-back; with and without a spare helper attached ahead of time")
    print(f"{'what':<34} {'median ms':>10} {'p90 ms':>9}")
    for name, values in attach.items():
        values.sort()
        print(f"{name:<34} {statistics.median(values):>10.1f} "
              f"{values[int(0.9 * (len(values) - 1))]:>9.1f}")


def attach_paths(start: Callable[[], object], rounds: int) -> dict[str, list[float]]:
    """The v1 cgroup attach waits an RCU grace period after a quiet spell: starts measured
    cold and back-to-back, through the normal path and through spare helpers."""
    from nbcontainer.runtime.spare import spares as spare_pool
    from nbcontainer.runtime.zygote import Zygote

    spares = spare_pool(Zygote.get())
    out: dict[str, list[float]] = {}
    for spare in (False, True):
        if spare:
            spares.enable()
        else:
            spares.close()
        label = "spare" if spare else "no spare"
        for gap in (0.3, 0.0):
            time.sleep(0.3)
            values = []
            for _ in range(rounds):
                time.sleep(gap)
                values.append(timed(start))
            out[f"{label}, {'cold' if gap else 'back-to-back'}"] = values
    spares.close()
    return out


if __name__ == "__main__":
    main()
