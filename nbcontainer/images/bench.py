"""Throughput of layer extraction and layer tar writing, next to GNU tar in the same run.

``python -m nbcontainer.images.bench [--dir D] [--files N] [--big-mib M]`` builds two layers
(N small files; one M MiB file), then times, best of 3: GNU ``tar -xf`` vs our
:func:`extract_layer` (import path: parse, write, hash the diff_id) and ``tar -cf`` vs our
:func:`write_layer_tar` (commit/save path). Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nbcontainer.images.extract import extract_layer
from nbcontainer.images.layertar import write_layer_tar


def _best(fn: Callable[[], object], reset: Callable[[], None], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        reset()
        os.sync()  # start each run with no dirty pages from the last one (fair to both)
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _fresh(path: Path) -> Callable[[], None]:
    def reset() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    return reset


def bench_case(work: Path, label: str, src: Path) -> list[str]:
    """Time extract and create for one source tree; return report lines."""
    tarball = work / f"{label}.tar"
    subprocess.run(["tar", "-C", str(src), "--xattrs", "-cf", str(tarball), "."], check=True)
    out = work / "out"
    lines = []

    def ours_x() -> None:
        with open(tarball, "rb") as f:
            extract_layer(f, out)

    gnu_x = _best(lambda: subprocess.run(["tar", "-xf", str(tarball), "-C", str(out)],
                                         check=True), _fresh(out))
    our_x = _best(ours_x, _fresh(out))
    size = tarball.stat().st_size / (1 << 20)
    lines.append(f"{label}: extract  GNU tar {gnu_x:.3f}s  ours {our_x:.3f}s  "
                 f"ratio {our_x / gnu_x:.2f}x  ({size:.0f} MiB tar, ours also hashes diff_id)")
    null = work / "null.tar"
    gnu_c = _best(lambda: subprocess.run(["tar", "-C", str(src), "-cf", str(null), "."],
                                         check=True), lambda: None)

    def ours_c() -> None:
        with open(null, "wb") as f:
            write_layer_tar(src, f)

    our_c = _best(ours_c, lambda: None)
    lines.append(f"{label}: create   GNU tar {gnu_c:.3f}s  ours {our_c:.3f}s  "
                 f"ratio {our_c / gnu_c:.2f}x  (commit/save path, ours also hashes diff_id)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="work directory (default: a fresh temporary one)")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--big-mib", type=int, default=200)
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
              f"work dir {work}")
        cases = ((f"{args.files}-small-files", small), (f"one-{args.big_mib}-MiB-file", big))
        for label, src in cases:
            for line in bench_case(work, label, src):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
