"""Throughput of layer extraction and layer tar writing, next to GNU tar in the same run.

``python -m nbcontainer.images.bench [--dir D] [--files N] [--big-mib M] [--rounds R]`` builds
two layers (N small files; one M MiB file), then times GNU ``tar -xf`` vs our
:func:`extract_layer` (import path: parse, write, hash the diff_id) and ``tar -cf`` vs our
:func:`write_layer_tar` (commit/save path). The two sides alternate round by round (which goes
first alternates too), each run after removing the last output and a ``sync``, so the drift of
a virtual disk (file creation here varies several-fold over minutes) hits both alike. Prints
medians and the ratio of medians, one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nbcontainer.images.extract import extract_layer
from nbcontainer.images.layertar import write_layer_tar


def interleaved(sides: dict[str, Callable[[], object]], reset: Callable[[], None],
                rounds: int) -> dict[str, list[float]]:
    """Wall times of each side over ``rounds`` rounds, sides alternating, each after ``reset``."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            reset()
            os.sync()  # start each run with no dirty pages from the last one (fair to both)
            t = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t)
    return times


def compare(label: str, what: str, times: dict[str, list[float]], note: str) -> str:
    """One report line: median (min) of GNU tar and ours, ratio of the medians."""
    gnu, ours = times["gnu"], times["ours"]
    g, o = statistics.median(gnu), statistics.median(ours)
    return (f"{label}: {what:<7} GNU tar {g:.3f}s (min {min(gnu):.3f})  ours {o:.3f}s "
            f"(min {min(ours):.3f})  ratio {o / g:.2f}x  ({note})")


def _fresh(path: Path) -> Callable[[], None]:
    def reset() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    return reset


def bench_case(work: Path, label: str, src: Path, rounds: int) -> list[str]:
    """Time extract and create for one source tree; return report lines."""
    tarball = work / f"{label}.tar"
    subprocess.run(["tar", "-C", str(src), "--xattrs", "-cf", str(tarball), "."], check=True)
    out = work / "out"

    def ours_x() -> None:
        with open(tarball, "rb") as f:
            extract_layer(f, out)

    extract = interleaved({
        "gnu": lambda: subprocess.run(["tar", "-xf", str(tarball), "-C", str(out)], check=True),
        "ours": ours_x,
    }, _fresh(out), rounds)
    size = tarball.stat().st_size / (1 << 20)
    null = work / "null.tar"

    def ours_c() -> None:
        with open(null, "wb") as f:
            write_layer_tar(src, f)

    create = interleaved({
        "gnu": lambda: subprocess.run(["tar", "-C", str(src), "-cf", str(null), "."],
                                      check=True),
        "ours": ours_c,
    }, lambda: None, rounds)
    return [
        compare(label, "extract", extract, f"{size:.0f} MiB tar, ours also hashes diff_id"),
        compare(label, "create", create, "commit/save path, ours also hashes diff_id"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="work directory (default: a fresh temporary one)")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--big-mib", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        small = work / "small"
        for i in range(args.files):
            d = small / f"d{i // 100:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}.txt").write_bytes(b"x" * (i % 512 + 1))
        big = work / "big"
        big.mkdir()
        with open(big / "blob.bin", "wb") as f:
            for _ in range(args.big_mib):
                f.write(os.urandom(1 << 20))
        gnu = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
        print(f"python {sys.version.split()[0]} ({sys.executable}); {gnu.splitlines()[0]}; "
              f"work dir {work}; {args.rounds} interleaved rounds, medians")
        cases = ((f"{args.files}-small-files", small), (f"one-{args.big_mib}-MiB-file", big))
        for label, src in cases:
            for line in bench_case(work, label, src, args.rounds):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
