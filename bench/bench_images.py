"""Commit throughput next to GNU tar, in the same run, on the same container upper directory.

``python bench/bench_images.py [--files N] [--big-mib M] [--repeat R]`` (root) starts a busybox
container, writes N small files (then, in a second container, one M MiB file) through its root,
and times, best of R:

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nbcontainer import Container, make_spec
from nbcontainer.images.commit import commit
from nbcontainer.images.store import ImageStore


def best(fn: Callable[[], object], reset: Callable[[], None], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, each after ``reset`` and a sync."""
    times = []
    for _ in range(repeat):
        reset()
        os.sync()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


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
         repeat: int) -> None:
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

        ours = best(lambda: commit(c.id, "bench", root=store.root), clear, repeat)
        gnu_c = best(lambda: subprocess.run(["tar", "-cf", str(out_tar), "-C", upper, "."],
                                            check=True), clear, repeat)
        gnu_cx = best(lambda: subprocess.run(
            f"tar -cf - -C {upper} . | tar -xf - -C {out_dir}", shell=True, check=True),
            clear, repeat)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(upper)
                   for f in fs)
        print(f"{label}: commit {ours:.3f}s | GNU tar -cf {gnu_c:.3f}s ({ours / gnu_c:.1f}x) | "
              f"GNU tar -cf | tar -xf {gnu_cx:.3f}s ({ours / gnu_cx:.1f}x) | "
              f"{size / (1 << 20):.0f} MiB of file data", flush=True)
    finally:
        c.kill()
        c.wait()
        c.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--big-mib", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="work directory (default: a temporary one under /var/tmp)")
    args = p.parse_args(argv)
    gnu = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp") as tmp:
        work = Path(tmp)
        store = ImageStore(work / "store")
        print(f"python {sys.version.split()[0]} ({sys.executable}); {gnu.splitlines()[0]}; "
              f"store {store.root}", flush=True)
        case(f"{args.files} small files", store, work,
             lambda root: fill_small(root, args.files), args.repeat)
        case(f"one {args.big_mib} MiB file", store, work,
             lambda root: fill_big(root, args.big_mib), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
