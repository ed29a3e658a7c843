"""Pulling from a registry: nbcontainer pull vs ``skopeo copy`` + ``umoci unpack``, same run.

``python bench/bench_registry.py [--layers N] [--layer-mib M] [--rounds R] [--gap S]`` (root).
Debian's ``docker-registry`` is started on 127.0.0.1 (a free port, storage in a temporary
directory on disk, /var/tmp), and an image of N layers of about M MiB each (uncompressed: one
incompressible file and many small text files per layer; gzip'd) is copied into it with skopeo.

Sides, each from nothing (its store or OCI layout and bundle removed before, then ``sync`` and
an idle gap):

- ``nbcontainer pull`` (the CLI, interpreter start included): manifest, config, the layers
  (three at a time), each verified and unpacked into the store with the safe extractor;
- ``nbcontainer pull`` through the API (``registry.pull.pull``, no interpreter start);
- ``skopeo copy docker://... oci:DIR`` then ``umoci unpack --image DIR BUNDLE``: the same
  download and verification, then the same unpacking into a directory tree.

Then a second pull of the image already present (one manifest request; the config is not even
fetched), through the API and through the CLI.

Median and min per side; ratios are of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import cli_command, interleave, interpreter, median_min, order_note  # noqa: E402
from oci_registry import Layer, LocalRegistry, skopeo_copy, write_image, write_layout  # noqa: E402

from nbcontainer.registry.pull import pull  # noqa: E402


def make_layers(count: int, mib: int) -> list[Layer]:
    layers = []
    text = (b"The quick brown fox jumps over the lazy dog. " * 500)[:20000]
    for i in range(count):
        files: dict[str, bytes | tuple[str, str]] = {
            f"layer{i}/blob.bin": os.urandom(max(1, mib * 6 // 10) << 20)}
        small = max(1, (mib << 20) * 4 // 10 // len(text))
        for j in range(small):
            files[f"layer{i}/text/{j:04d}.txt"] = text + str(j).encode()
        layers.append(Layer(files, "gzip"))
    return layers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--layer-mib", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gap", type=float, default=1.0)
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo", "umoci"):
        if not shutil.which(tool):
            print(f"bench_registry: {tool} is not installed (scripts/setup installs it)")
            return 1
    os.environ["NBCONTAINER_REGISTRY_ALLOW"] = "127.0.0.1"
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-registry-", dir="/var/tmp"))
    registry = LocalRegistry(work / "registry")
    try:
        layout = work / "layout"
        desc = write_image(layout, make_layers(args.layers, args.layer_mib))
        write_layout(layout, "v1", [desc])
        ref = f"{registry.address}/bench/big:v1"
        skopeo_copy(layout, "v1", ref)
        blob_bytes = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        store, oci, bundle = work / "store", work / "oci", work / "bundle"
        env = {**os.environ, "NBCONTAINER_ROOT": str(store), "HOME": str(work)}
        cli = [*cli_command(), "pull", "-q", ref]

        def reset() -> None:
            for d in (store, oci, bundle):
                shutil.rmtree(d, ignore_errors=True)
            subprocess.run(["sync"], check=True)

        def ours_cli() -> None:
            subprocess.run(cli, check=True, env=env, capture_output=True)

        def ours_api() -> None:
            pull(ref, root=store)

        def peers() -> None:
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                            f"docker://{ref}", f"oci:{oci}:v1"], check=True, env=env,
                           capture_output=True)
            subprocess.run(["umoci", "unpack", "--image", f"{oci}:v1", str(bundle)],
                           check=True, env=env, capture_output=True)

        sides = {"nbcontainer pull (CLI)": ours_cli, "nbcontainer pull (API)": ours_api,
                 "skopeo copy + umoci unpack": peers}
        times = interleave(sides, args.rounds, gap=args.gap, reset=reset)
        # The second pull: the image is in the store.
        reset()
        ours_api()
        again_api: list[float] = []
        again_cli: list[float] = []
        for _ in range(max(args.rounds, 5)):
            t0 = time.perf_counter()
            result = pull(ref, root=store)
            again_api.append(time.perf_counter() - t0)
            assert result.fetched == [], result.fetched
            t0 = time.perf_counter()
            ours_cli()
            again_cli.append(time.perf_counter() - t0)
        reset()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"Image: {args.layers} layers, {args.layers * args.layer_mib} MiB uncompressed, "
          f"{blob_bytes / 2**20:.0f} MiB of gzip'd blobs, from docker-registry "
          f"(distribution 2.8) on 127.0.0.1; store and layouts on /var/tmp; "
          f"{order_note(args.rounds, args.gap)}; {interpreter()}.")
    print()
    print("| what | median s | min s | vs skopeo + umoci |")
    print("| --- | --- | --- | --- |")
    base = median_min(times["skopeo copy + umoci unpack"])[0]
    for name, values in times.items():
        med, low = median_min(values)
        print(f"| {name} | {med:.3f} | {low:.3f} | {med / base:.2f}x |")
    print()
    print("Second pull of the same image (present: one manifest request, nothing fetched):")
    print()
    print("| what | median ms | min ms |")
    print("| --- | --- | --- |")
    for name, values in (("API", again_api), ("CLI (interpreter start included)", again_cli)):
        med, low = median_min(values)
        print(f"| {name} | {med * 1000:.1f} | {low * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
