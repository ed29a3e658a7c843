"""Commit throughput next to GNU tar, in the same run, on the same container upper directory.

``python bench/bench_images.py [--files N] [--big-mib M] [--rounds R]`` (root) starts a busybox
container, writes N small files (then, in a second container, one M MiB file) through its root,
and times, as medians of R interleaved rounds (the order alternates each round):

- ``commit``: freeze, write the layer tar (hashing the diff_id), extract it into a staging
  directory with the safe extractor, publish, thaw: everything ``nbcontainer commit`` does;
- GNU ``tar -cf FILE -C upper .``: archiving alone;
- GNU ``tar -cf - -C upper . | tar -xf - -C DIR``: archive and unpack, the same work as ours.

Each timed run starts after ``sync`` with the previous run's output removed.
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

from nbcontainer import Container, make_spec
from nbcontainer.building.commit import commit
from nbcontainer.images.bench import interleaved
from nbcontainer.images.store import ImageStore


def fill_small(root: str, count: int) -> None:
    for i in range(count):
        d = os.path.join(root, "data", f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
            f.write(b"x" * (i % 512 + 1))


def fill_big(root: str, mib: int) -> None:
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    with open(os.path.join(root, "data", "blob.bin"), "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def case(label: str, store: ImageStore, work: Path, fill: Callable[[str], None],
         rounds: int) -> None:
    c = Container(make_spec(["sleep", "100000"], image="busybox"), root=store.root,
                  stdin=subprocess.DEVNULL)
    c.start()
    try:
        while not os.path.isdir(f"/proc/{c.pid}/root/etc"):
            time.sleep(0.01)
        fill(f"/proc/{c.pid}/root")
        upper = str(c.upper_dir)
        out_tar = work / "gnu.tar"
        out_dir = work / "gnu-x"

        def clear() -> None:
            out_tar.unlink(missing_ok=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()
            for r in store.list_images():
                if r.name == "bench":
                    store.remove_image(r.ref)

        times = interleaved({
            "commit": lambda: commit(c.id, "bench", root=store.root),
            "tar-c": lambda: subprocess.run(["tar", "-cf", str(out_tar), "-C", upper, "."],
                                            check=True),
            "tar-cx": lambda: subprocess.run(
                f"tar -cf - -C {upper} . | tar -xf - -C {out_dir}", shell=True, check=True),
        }, clear, rounds)
        ours, gnu_c, gnu_cx = (statistics.median(times[k]) for k in ("commit", "tar-c", "tar-cx"))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(upper)
                   for f in fs)
        print(f"{label}: commit {ours:.3f}s | GNU tar -cf {gnu_c:.3f}s ({ours / gnu_c:.1f}x) | "
              f"GNU tar -cf | tar -xf {gnu_cx:.3f}s ({ours / gnu_cx:.2f}x) | "
              f"{size / (1 << 20):.0f} MiB of file data", flush=True)
    finally:
        c.kill()
        c.wait()
        c.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--big-mib", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", help="work directory (default: a temporary one under /var/tmp)")
    args = p.parse_args(argv)
    gnu = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp") as tmp:
        work = Path(tmp)
        store = ImageStore(work / "store")
        print(f"python {sys.version.split()[0]} ({sys.executable}); {gnu.splitlines()[0]}; "
              f"store {store.root}", flush=True)
        case(f"{args.files} small files", store, work,
             lambda root: fill_small(root, args.files), args.rounds)
        case(f"one {args.big_mib} MiB file", store, work,
             lambda root: fill_big(root, args.big_mib), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
