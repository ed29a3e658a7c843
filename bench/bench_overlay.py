"""Overlay mount time for 1, 10, 100 and 500 layers, as the container child mounts it.

Run as root: ``.venv/bin/python bench/bench_overlay.py [--rounds N]``. Each round forks a
child that enters a new mount namespace, makes every mount private (so nothing reaches the
host) and times :func:`nbcontainer.child.rootfs.mount_overlay` over N small layer directories (the
same call, short-symlink lowerdir and all, that a container start makes). The layer count is
what overlayfs allows at most (500); the mount(2) options stay under one page thanks to the
short links.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcontainer import _libc  # noqa: E402
from nbcontainer.child import rootfs  # noqa: E402


def make_layers(base: Path, count: int) -> list[str]:
    layers = []
    for i in range(count):
        layer = base / f"layer{i:03d}"
        (layer / "etc").mkdir(parents=True)
        (layer / "etc" / f"file{i}").write_text(f"layer {i}\n")
        layers.append(str(layer))
    return layers


def time_mount(container_dir: Path, layers: list[str]) -> float:
    """Seconds for one overlay mount in a throw-away mount namespace (a forked child)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _libc.unshare(_libc.CLONE_NEWNS)
            rootfs.make_private()
            t0 = time.perf_counter()
            merged, _ = rootfs.mount_overlay(str(container_dir), layers)
            elapsed = time.perf_counter() - t0
            assert len(os.listdir(os.path.join(merged, "etc"))) == len(layers)
            os.write(w, repr(elapsed).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return float(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nbc-overlay-"))
    try:
        layers = make_layers(tmp / "layers", 500)
        print(f"overlay mount of N layers ({args.rounds} rounds each, Python "
              f"{sys.version.split()[0]})")
        print(f"{'layers':>6} {'median ms':>10} {'min ms':>8}")
        for count in (1, 10, 100, 500):
            samples = []
            for r in range(args.rounds):
                cdir = tmp / f"c{count}-{r}"
                for sub in ("upper", "work"):
                    (cdir / sub).mkdir(parents=True)
                samples.append(time_mount(cdir, layers[:count]) * 1000)
                shutil.rmtree(cdir)
            print(f"{count:>6} {statistics.median(samples):>10.2f} {min(samples):>8.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
