"""Container start latency: nbcontainer (API and CLI) next to crun, runc and bwrap.

Run as root: ``.venv/bin/python bench/bench_start.py [--rounds N] [--gap S] [--layout L]``.
Every side starts ``/bin/true`` doing the same work:

- namespaces pid, net, ipc, uts, mount, cgroup (nbcontainer with ``--net none``; the OCI
  bundle's default list plus ``cgroup``);
- limits memory 100 MiB, pids 64, 1 CPU (quota 100 ms per 100 ms), written to the cgroup on
  both sides;
- rootfs: an overlay over the same busybox layer with a fresh upper directory per start.
  nbcontainer mounts it inside the child; for crun/runc the benchmark mounts it (mount(2) from
  this process, inside the timed region, and unmounts and removes it after) on the bundle's
  ``rootfs``, because an OCI runtime takes a ready directory.

What still differs is printed under the table. ``bwrap`` is a floor (namespaces and a read-only
bind of /, no cgroup, no overlay, no limits), not a like-for-like side.

``--layout host`` (default) measures the machine's own cgroup layout. Where crun refuses it
(crun 1.8 refuses a hybrid layout whose cgroup2 mount has any controller), its error and the
file it checks are printed instead of a row. ``--layout no-unified`` re-runs the benchmark in a
private mount namespace with the cgroup2 mount removed, so crun can run: a layout users do not
have, printed as such.

``--v2vm`` runs the same benchmark inside a throw-away QEMU guest on a pure cgroup v2 kernel
(``../shared/v2vm/run-in-v2vm.sh``, the VM the v2 test lane uses), where crun runs as users run
it. The guest is emulated (TCG, about 10x slower on CPU than this host), so its figures compare
the sides with each other, not with the host's table; keep ``--rounds`` small (10).

The benchmark itself runs in a private mount namespace of its own (so the overlays it mounts for
crun/runc can never leak to the host); the cgroup hierarchies are the host's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    cgroup_layout,
    cli_command,
    interleave,
    interpreter,
    median_min,
    order_note,
)

MEMORY = 100 << 20
PIDS = 64
CPU_QUOTA, CPU_PERIOD = 100_000, 100_000
UNIFIED = "/sys/fs/cgroup/unified"
#: The v2 VM's launcher, where scripts/test finds it (beside the repository), unless overridden.
V2VM = Path(os.environ.get("NBC_V2VM", HERE.parent.parent / "shared/v2vm/run-in-v2vm.sh"))


def run_in_v2vm(argv: list[str]) -> int:
    """Run this script with ``argv`` inside the pure cgroup v2 VM; its exit status.

    The guest sees this host's / (read-only, under a tmpfs overlay), so it runs this very
    interpreter and checkout. /tmp gets a tmpfs of its own there: an overlay's upper directory
    cannot be on the guest's root, itself an overlay over 9p.
    """
    if not V2VM.is_file():
        print(f"--v2vm: skipped, {V2VM} not found (see ../shared/v2vm/README.md)")
        return 0
    if shutil.which("qemu-system-x86_64") is None:
        print("--v2vm: skipped, qemu-system-x86_64 is not installed (apt-get install "
              "qemu-system-x86, see ../shared/v2vm/README.md)")
        return 0
    env = {**os.environ, "V2VM_TMPFS": "/tmp", "V2VM_TIMEOUT": "1500", "NBC_BENCH_V2VM": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("V2VM_CGROUP", None)
    env.pop("NBC_BENCH_NS", None)
    return subprocess.run(["bash", str(V2VM), sys.executable, str(Path(__file__).resolve()),
                           *argv], env=env, cwd=HERE.parent, check=False).returncode


def reexec(layout: str) -> None:
    """Re-run this script in a private mount namespace (without the cgroup2 mount if asked)."""
    if os.environ.get("NBC_BENCH_NS"):
        return
    os.environ["NBC_BENCH_NS"] = layout
    script = 'exec "$@"'
    if layout == "no-unified":
        if not os.path.ismount(UNIFIED):
            print(f"--layout no-unified: skipped, {UNIFIED} is not mounted here (not a hybrid "
                  "layout; the host-layout table is the only one)")
            sys.exit(0)
        script = f"umount {UNIFIED} && " + script
    # unshare makes every mount of the new namespace private (recursively) before the script
    # runs, so neither the umount nor the benchmark's overlays reach the host.
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                          "sh", sys.executable, *sys.argv])


def make_bundle(tmp: Path) -> Path:
    """An OCI bundle (``crun spec`` defaults) doing the same work as the nbcontainer sides."""
    bundle = tmp / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config["root"]["readonly"] = False
    linux = config["linux"]
    if not any(ns["type"] == "cgroup" for ns in linux["namespaces"]):
        linux["namespaces"].append({"type": "cgroup"})
    linux.setdefault("resources", {}).update({
        "memory": {"limit": MEMORY},
        "pids": {"limit": PIDS},
        "cpu": {"quota": CPU_QUOTA, "period": CPU_PERIOD},
    })
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle


def oci_run(tool: str, bundle: Path, layer: str, cdir: Path, name: str) -> None:
    """``TOOL run`` of ``bundle`` on a fresh overlay over ``layer`` (upper and work directories
    in ``cdir``), mounted on the bundle's rootfs by this process and removed after; a
    RuntimeError with the runtime's last line of stderr if it fails."""
    from nbcontainer import _libc

    rootfs = str(bundle / "rootfs")
    (cdir / "upper").mkdir(parents=True)
    (cdir / "work").mkdir()
    _libc.mount("overlay", rootfs, "overlay", 0,
                f"lowerdir={layer},upperdir={cdir}/upper,workdir={cdir}/work")
    try:
        proc = subprocess.run([tool, "run", "--bundle", str(bundle), name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        _libc.umount2(rootfs, _libc.MNT_DETACH)
        shutil.rmtree(cdir)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"exit status {proc.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.2,
                        help="idle seconds before each timed start (default 0.2)")
    parser.add_argument("--layout", choices=("host", "no-unified"), default="host")
    parser.add_argument("--no-attach", action="store_true",
                        help="skip the cold/back-to-back table of spare helpers")
    parser.add_argument("--v2vm", action="store_true",
                        help="run inside a QEMU guest on a pure cgroup v2 kernel")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_start: run as root")
    if args.v2vm:
        return run_in_v2vm([a for a in sys.argv[1:] if a != "--v2vm"])
    reexec(args.layout)

    from nbcontainer import make_spec, run
    from nbcontainer.images import resolve

    tmp = Path(tempfile.mkdtemp(prefix="nbc-bench-"))
    os.environ["NBCONTAINER_ROOT"] = str(tmp / "store")
    layer = resolve("busybox").layers[0]
    bundle = make_bundle(tmp)
    limits = {"memory": MEMORY, "pids_limit": PIDS, "cpus": CPU_QUOTA / CPU_PERIOD}
    busybox_spec = make_spec(["/bin/true"], image="busybox", net="none", **limits)
    host_spec = make_spec(["/bin/true"], image="host", net="none", **limits)
    cli = [*cli_command(), "run", "--memory", str(MEMORY),
           "--pids-limit", str(PIDS), "--cpus", "1", "--net", "none", "busybox", "/bin/true"]
    # Issue 16's `nbcontainer run host /bin/true`, with --net none: the default network (a
    # bridge: veth pair, address lease) is bench_network.py's CLI row; no network keeps this
    # row next to the OCI runtimes' bare network namespace.
    cli_host = [*cli_command(), "run", "--net", "none", "host", "/bin/true"]
    counter = iter(range(10**9))

    def oci(tool: str) -> None:
        n = next(counter)
        oci_run(tool, bundle, layer, tmp / f"oci{n}", f"nbcbench{n}")

    sides: dict[str, Callable[[], object]] = {
        "nbcontainer API": lambda: run(busybox_spec, zygote=False),
        "nbcontainer API + zygote": lambda: run(busybox_spec, zygote=True),
        "API + zygote, host image [a]": lambda: run(host_spec, zygote=True),
        "nbcontainer CLI": lambda: subprocess.run(cli, check=True),
        "CLI run --net none host [c]": lambda: subprocess.run(cli_host, check=True),
    }
    for tool in ("crun", "runc"):
        if shutil.which(tool):
            sides[f"{tool} run"] = lambda tool=tool: oci(tool)  # type: ignore[misc]
    if shutil.which("bwrap"):
        bwrap = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
                 "--proc", "/proc", "/bin/true"]
        sides["bwrap --unshare-all [b]"] = lambda: subprocess.run(bwrap, check=True)
    refused: dict[str, str] = {}
    for name, fn in list(sides.items()):  # warm-up: page in binaries; find who cannot run here
        try:
            fn()
        except (RuntimeError, subprocess.CalledProcessError) as err:
            refused[name] = str(err)
            del sides[name]
    samples = interleave(sides, args.rounds, gap=args.gap, seed=1)
    # A notebook's `--mem`: memory and pids limits, no CPU limit (see attach_paths).
    spare_spec = make_spec(["/bin/true"], image="busybox", net="none", memory=MEMORY,
                           pids_limit=PIDS)
    attach = {} if args.no_attach else attach_paths(spare_spec, args.rounds)
    from nbcontainer.runtime.zygote import Zygote

    Zygote.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    layout_note = ("the host's own layout" if args.layout == "host" else
                   f"NOT the host's layout: {UNIFIED} unmounted in a private mount namespace")
    if os.environ.get("NBC_BENCH_V2VM"):
        layout_note = ("inside a QEMU TCG guest on a pure v2 kernel, Linux "
                       f"{os.uname().release}, {os.cpu_count()} vCPUs: emulated, about 10x "
                       "slower than the host; compare the rows with each other")
    print(f"container start of /bin/true; {order_note(args.rounds, args.gap)}; "
          f"interpreter {interpreter()}")
    print(f"cgroup layout: {cgroup_layout()} ({layout_note})")
    base_name = next((n for n in ("crun run", "runc run") if n in samples), None)
    base, base_low = median_min(samples[base_name]) if base_name else (None, None)
    ratio_head = f"vs {base_name.split()[0]}" if base_name else ""
    # The ratio of the minimums too: on a busy machine (or an emulated one) a median can carry
    # another process's time slice, the minimum less so.
    low_head = "(min)" if base_name else ""
    print(f"{'what':<32} {'median ms':>10} {'min ms':>8} {ratio_head:>8} {low_head:>7}")
    for name, values in samples.items():
        med, low = median_min(values)
        ratio = f"{med / base:.2f}x" if base else ""
        low_ratio = f"{low / base_low:.2f}x" if base_low else ""
        print(f"{name:<32} {med * 1000:>10.1f} {low * 1000:>8.1f} {ratio:>8} {low_ratio:>7}")
    for name, err in refused.items():
        print(f"{name:<32} {'cannot run on this layout: ' + err}")
        if name.startswith("crun") and "hybrid" in err and os.path.exists(UNIFIED):
            with open(f"{UNIFIED}/cgroup.controllers") as f:
                ctrl = f.read().strip()
            print(f"{'':<32} (on a hybrid layout crun refuses to start when {UNIFIED}/"
                  f"cgroup.controllers lists any controller; here it reads {ctrl!r})")
    print("Same work on every side except [a], [b] and [c]: namespaces pid,net,ipc,uts,mount,"
          f"cgroup; memory {MEMORY >> 20} MiB, pids {PIDS}, 1 CPU; an overlay over the busybox "
          "layer. The CLI row is `nbcontainer run --memory 100m --pids-limit 64 --cpus 1 --net "
          f"none busybox /bin/true`, a new interpreter per start ({' '.join(cli_command())}).")
    print("Differences left: nbcontainer also installs Docker's default seccomp filter "
          "(`crun spec`'s config has none) and joins a session keyring of its own; crun/runc "
          "also mount /sys/fs/cgroup read-only (all apply a device allowlist, RLIMIT_NOFILE "
          "1024 and no_new_privs); crun makes its cgroup at "
          "each hierarchy's root (/NAME), runc and nbcontainer below their own cgroup; the "
          "bench mounts the OCI runtimes' overlay from this process (a mount(2) call, no "
          "fork); the CLI is a whole new interpreter per start (it forks the container's helper "
          "from itself).")
    print("[a] the host image (/ as the overlay's lower layer); [b] a floor: a read-only bind "
          "of /, no cgroup, no overlay, no limits; [c] issue 16's `nbcontainer run host "
          "/bin/true` with --net none (the host image, no limits; the default bridge network "
          "is bench_network.py's CLI row).")
    if attach:
        print()
        print("API + zygote (busybox; memory and pids limits, no CPU limit: a v1 spare's "
              "cgroup has no cpu hierarchy), cold (0.3 s idle before each start, as between "
              "cells) and back-to-back; with and without a spare helper made ahead of time")
        if base_name and base is not None:
            print(f"(the {base_name} median above, for comparison: {base * 1000:.1f} ms)")
        print(f"{'what':<32} {'median ms':>10} {'min ms':>8}  spare adopted")
        for name, (values, adopted) in attach.items():
            med, low = median_min(values)
            print(f"{name:<32} {med * 1000:>10.1f} {low * 1000:>8.1f}  "
                  f"{adopted} of {len(values)}")
    return 0


def zygote_start(spec: Any, background: bool = False) -> bool:
    """Run ``spec`` to its end through the zygote, as the API's ``run`` does; with
    ``background`` as a notebook cell does (the teardown in a thread once the result is in).
    True if the container adopted a spare."""
    from nbcontainer import Container

    container = Container(spec, zygote=True)
    container.start()
    try:
        container.wait()
    finally:
        container.cleanup(background=background)
    return container._spare is not None  # what the pool handed over, if anything


def attach_paths(spec: Any, rounds: int, background: bool = False,
                 ) -> dict[str, tuple[list[float], int]]:
    """The v1 cgroup attach waits an RCU grace period after a quiet spell: starts measured
    cold and back-to-back, through the normal path and through spare helpers; for each, the
    times and how many starts adopted a spare.

    A spare's cgroup joins memory, cpuacct, pids, freezer and devices, not cpu: a ``spec``
    with a CPU limit takes the normal path (where cpu has a hierarchy of its own)."""
    import time

    from nbcontainer.runtime.spare import spares as spare_pool
    from nbcontainer.runtime.zygote import Zygote

    spares = spare_pool(Zygote.get())
    out: dict[str, tuple[list[float], int]] = {}
    try:
        for spare in (False, True):
            if spare:
                spares.enable()
                zygote_start(spec, background)  # the next spare follows this spec's network
            else:
                spares.close()
            label = "spare" if spare else "no spare"
            for gap in (0.3, 0.0):
                time.sleep(0.3)
                adopted: list[bool] = []
                times = interleave({"start": lambda adopted=adopted: adopted.append(
                    zygote_start(spec, background))}, rounds, gap=gap)["start"]
                out[f"{label}, {'cold' if gap else 'back-to-back'}"] = (times, sum(adopted))
    finally:
        spares.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
