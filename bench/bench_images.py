"""Commit, import and layer-tar writing next to GNU tar, on tmpfs and on disk, in the same run.

``python bench/bench_images.py [--files N] [--big-mib M] [--rounds R] [--fs tmpfs,disk]``
(root). For each filesystem (tmpfs: ``/dev/shm``; disk: ``/var/tmp``), a store is made there and
a busybox container writes N small files (then, in a second container, one M MiB file) through
its root. On that container's upper directory, each of our operations is timed next to the GNU
tar command doing the same work (GNU tar always with ``--xattrs``, as ours keeps xattrs):

- commit of a *stopped* container (walk its upper directory hashing the layer tar, no tar
  written; rename the directory into the store; give the container a new upper) vs ``tar -cf``
  of that same directory (the issue's target: 1.5x). Each commit takes a fresh stopped
  container that wrote the same files (made, read once so that it is in the page cache as the
  running container's tree is, and removed after, untimed);
- commit of a *running* container (freeze, write the layer tar hashing the diff_id, extract it
  into the store with the safe extractor, publish, thaw: a second copy) vs ``tar -cf - | tar
  -xf -`` (archive and unpack) and vs ``tar -cf`` (archiving alone);
- import, :func:`extract_layer` (parse, check, write, hash the diff_id) vs ``tar -xf``, of a tar
  of that directory;
- tar writing, :func:`write_layer_tar` (the save/commit path, hashing the diff_id) vs ``tar -cf``.

Sides run in a shuffled order each round, each after removing the last run's output, a ``sync``
and an idle gap, so a side's write-back does not land in the next side's time. Median and min
per side; the ratio is of medians. On tmpfs the figures are CPU; on disk they also carry the
disk's state, which on a virtual disk drifts several-fold over minutes: read those with the min.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _common import interleave, interpreter, median_min, order_note  # noqa: E402

from nbcontainer import Container, make_spec  # noqa: E402
from nbcontainer.building.commit import commit  # noqa: E402
from nbcontainer.images.extract import extract_layer  # noqa: E402
from nbcontainer.images.layertar import write_layer_tar  # noqa: E402
from nbcontainer.images.store import ImageStore  # noqa: E402
from nbcontainer.runtime import manage, state  # noqa: E402

FILESYSTEMS = {"tmpfs": "/dev/shm", "disk": "/var/tmp"}


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


def tar(*args: str) -> Callable[[], object]:
    return lambda: subprocess.run(["tar", "--xattrs", *args], check=True)


def filled(store: ImageStore, fill: Callable[[str], None], keep: bool) -> Container:
    """A busybox container (kept if ``keep``) that wrote the tree and now sleeps."""
    c = Container(make_spec(["sleep", "100000"], image="busybox"), root=store.root,
                  stdin=subprocess.DEVNULL, keep=keep)
    c.start()
    while not os.path.isdir(f"/proc/{c.pid}/root/etc"):
        time.sleep(0.01)
    fill(f"/proc/{c.pid}/root")
    return c


def case(label: str, store: ImageStore, work: Path, fill: Callable[[str], None], rounds: int,
         gap: float) -> list[tuple[str, str, dict[str, list[float]], str, str]]:
    """Time every operation on one container's upper directory; rows for the table."""
    c = filled(store, fill, keep=False)
    stopped: list[Container] = []  # the next stopped container to commit, made untimed
    try:
        upper = str(c.upper_dir)
        out_tar, out_dir, layer = work / "out.tar", work / "out", work / "layer.tar"
        subprocess.run(["tar", "--xattrs", "-C", upper, "-cf", str(layer), "."], check=True)

        def clear() -> None:
            out_tar.unlink(missing_ok=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()
            for r in store.list_images():
                if r.name == "bench":
                    store.remove_image(r.ref)
            if stopped and stopped[0].state is not None and stopped[0].state.layers != \
                    state.load(store.root, stopped[0].id).layers:  # committed: a fresh one
                manage.remove(stopped.pop().id, root=store.root)
                store.gc()
            if not stopped:
                s = filled(store, fill, keep=True)
                s.kill()
                s.wait()
                s.cleanup()
                stopped.append(s)
            # read it once, as every round reads the running container's tree: both sides of
            # the stopped row then find it in the page cache (a tree read once only may have
            # been evicted by the other sides' writes meanwhile, which is not what is measured)
            subprocess.run(f"tar -cf - -C {stopped[0].upper_dir} . | cat > /dev/null",
                           shell=True, check=True)
            os.sync()  # no dirty pages from the last run (fair to whichever side is next)

        def extract() -> None:
            with open(layer, "rb") as f:
                extract_layer(f, out_dir)

        def write() -> None:
            with open(out_tar, "wb") as f:
                write_layer_tar(upper, f)

        times = interleave({
            "commit-stopped": lambda: commit(stopped[0].id, "bench:stopped", root=store.root),
            "tar-c-stopped": lambda: subprocess.run(
                ["tar", "--xattrs", "-cf", str(out_tar), "-C", str(stopped[0].upper_dir), "."],
                check=True),
            "commit": lambda: commit(c.id, "bench", root=store.root),
            "tar-cx": lambda: subprocess.run(
                f"tar --xattrs -cf - -C {upper} . | tar --xattrs -xf - -C {out_dir}",
                shell=True, check=True),
            "tar-c": tar("-cf", str(out_tar), "-C", upper, "."),
            "extract": extract,
            "tar-x": tar("-xf", str(layer), "-C", str(out_dir)),
            "write": write,
        }, rounds, gap=gap, reset=clear, seed=4)
        return [
            (label, "commit stopped (moved)", times, "commit-stopped", "tar-c-stopped"),
            (label, "commit running (copied)", times, "commit", "tar-cx"),
            (label, "commit running vs tar -cf", times, "commit", "tar-c"),
            (label, "import (extract a layer)", times, "extract", "tar-x"),
            (label, "write a layer tar", times, "write", "tar-c"),
        ]
    finally:
        c.kill()
        c.wait()
        c.cleanup()
        for s in stopped:
            manage.remove(s.id, root=store.root)


GNU_LABEL = {"tar-cx": "tar -cf - | tar -xf -", "tar-c": "tar -cf", "tar-x": "tar -xf",
             "tar-c-stopped": "tar -cf, same tree"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--big-mib", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--gap", type=float, default=0.2, help="idle seconds before each timed run")
    p.add_argument("--fs", default="tmpfs,disk", help="comma list of: tmpfs, disk")
    args = p.parse_args(argv)
    gnu = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    print(f"{interpreter()}; {gnu.splitlines()[0]} (always with --xattrs); "
          f"{order_note(args.rounds, args.gap)}, after a sync")
    for fs in args.fs.split(","):
        base = FILESYSTEMS[fs]
        with tempfile.TemporaryDirectory(dir=base, prefix="nbc-bench-") as tmp:
            work = Path(tmp)
            store = ImageStore(work / "store")
            rows = case(f"{args.files} small files", store, work,
                        lambda root: fill_small(root, args.files), args.rounds, args.gap)
            rows += case(f"one {args.big_mib} MiB file", store, work,
                         lambda root: fill_big(root, args.big_mib), args.rounds, args.gap)
        kind = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", base], capture_output=True,
                              text=True).stdout.split()[0]
        print()
        print(f"on {fs} ({base}, {kind}); seconds")
        print(f"{'tree':<22} {'ours (operation)':<26} {'median':>7} {'min':>7}  {'GNU tar':<22} "
              f"{'median':>7} {'min':>7} {'ratio':>8}")
        for label, what, times, ours, theirs in rows:
            om, ol = median_min(times[ours])
            gm, gl = median_min(times[theirs])
            print(f"{label:<22} {what:<26} {om:>7.3f} {ol:>7.3f}  {GNU_LABEL[theirs]:<22} "
                  f"{gm:>7.3f} {gl:>7.3f} {om / gm:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
