"""Networking: container start with a bridge network, and TCP throughput over it.

Run as root: ``.venv/bin/python bench/bench_network.py [--rounds N] [--runs N] [--mib N]``;
``--quick`` is the smoke run (seconds).

**Where.** The benchmark re-runs itself in a network namespace and a mount namespace of its own
(``unshare --net --mount``), which play the host: nbcontainer's bridge ``nbc0`` (with its NAT
rule), the CNI plugin's bridge, every veth pair, every netns bind mount and every byte of traffic
live there, so all of it goes with the benchmark's processes on every way out, SIGKILL
included (its processes die with it: PR_SET_PDEATHSIG), and nothing reaches the machine's own
network. A run killed with SIGKILL leaves only its containers' cgroups and its temporary
directory, which the next run collects (:func:`collect_stale`); SIGTERM and SIGHUP unwind
like an exception. Each side pays the same there as on
the host (the same kernel paths; bridged traffic goes through netfilter as on the host, since
``bridge-nf-call-iptables`` is per namespace and on by default). The leases are kept in a
temporary directory (``NBCONTAINER_NETWORKS``), not next to the machine's.

**1. Start.** ``/bin/true`` in busybox, with the same work as bench/bench_start.py (namespaces
pid, net, ipc, uts, mount, cgroup; memory 100 MiB, pids 64, 1 CPU; an overlay over the busybox
layer), started with ``--net bridge`` and with ``--net none``:

- nbcontainer API (the zygote, as in a notebook) and CLI (a new interpreter per start);
- runc with a bare network namespace (``crun spec``'s default config: ``--net none``'s match);
- runc on a CNI bridge network, as podman's CNI backend runs it: the bench makes the network
  namespace itself (``unshare(CLONE_NEWNET)`` in this thread and a bind mount of it, then back:
  what ``ip netns add`` and podman do, no process), runs the real CNI ``bridge`` plugin
  (``containernetworking-plugins``; it runs ``host-local`` for the address) with ``ADD``, then
  ``runc run`` with the namespace's path in its config, then the plugin's ``DEL`` and the
  unmount. The plugin does what nbcontainer does per container: a veth pair with one end on
  the bridge and the other as ``eth0`` in the namespace, an address leased in a file under a
  lock, the default route. ``ipMasq`` is off: podman's default adds ``iptables`` rules per
  container, nbcontainer one rule per network when the bridge is made.

crun is tried too; on a hybrid cgroup layout with a controller on the cgroup2 mount (this
machine's) it refuses to start, as bench/bench_start.py shows, and its reason is printed.

Every side runs to its end and removes what it made (the API and CLI release the veth and the
lease before returning, the runc side runs ``DEL``), measured cold (0.3 s idle before each
start, as between notebook cells) and back-to-back. A second table has the API with a *spare*
(runtime/spare.py: the veth and the lease prepared while the kernel is idle, as the notebook
does); a spare is made for the network the last container used, so there each network runs
in a block of its own rather than interleaved.

**2. TCP throughput.** A receiver and a sender (``/usr/bin/python3``, the same interpreter on
every side; 1 MiB ``sendall``/``recv_into``; the time from ``connect`` until the receiver has
counted every byte and said so) move ``--mib`` MiB per run, the sides interleaved:

- two bare network namespaces joined by one veth pair (``unshare --net`` and ``ip link``);
- two bare namespaces, each with a veth pair into a bridge the bench makes: the topology a
  container network has, without containers;
- two nbcontainer containers (``host`` image) on ``nbc0``;
- from the host to a container: to its address, and through a port published with ``-p``
  on 127.0.0.1 (the relay in the supervisor, nbcontainer/net/ports.py; here the supervisor
  is this benchmark process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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
from bench_start import (  # noqa: E402
    CPU_PERIOD,
    CPU_QUOTA,
    MEMORY,
    PIDS,
    UNIFIED,
    attach_paths,
    make_bundle,
    oci_run,
)

COLD_GAP = 0.3
CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI_BRIDGE, CNI_SUBNET = "nbcb0", "10.87.0.0/24"
#: The bare namespaces' addresses: each pair of namespaces is alone on its link or bridge.
BARE_A, BARE_B, BARE_PREFIX = "10.99.0.1", "10.99.0.2", 24
BARE_BRIDGE = "nbcbr0"
PORT, HOST_PORT = 5001, 15001
CHUNK = 1 << 20
PYTHON = "/usr/bin/python3"  # in the ``host`` image too: the same binary on every side

RECEIVER = r"""
import socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
view = memoryview(bytearray(1 << 20))
while True:
    conn, _ = srv.accept()
    total = 0
    while True:
        n = conn.recv_into(view)
        if not n:
            break
        total += n
    conn.sendall(b"%d\n" % total)
    conn.close()
"""

SENDER = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
chunk = memoryview(bytes(1 << 20))
for line in sys.stdin:
    size = int(line)
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=120) as s:
        left = size
        while left:
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        got = s.makefile("rb").readline()
    print(time.perf_counter() - t0, int(got or 0), flush=True)
"""


def reexec() -> None:
    """Re-run this script in a network and a mount namespace of its own (see the docstring)."""
    if os.environ.get("NBC_BENCH_NETNS"):
        return
    os.environ["NBC_BENCH_NETNS"] = "1"
    # The namespace forwards IPv4 as the machine does (its own setting; the machine's is read).
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        os.environ["NBC_BENCH_FORWARD"] = f.read().strip()
    # unshare makes every mount of the new mount namespace private (recursively) first, so the
    # overlays and netns bind mounts never reach the host's.
    script = ('ip link set lo up && echo "$NBC_BENCH_FORWARD" > /proc/sys/net/ipv4/ip_forward'
              ' && exec "$@"')
    os.execvp("unshare", ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
                          script, "sh", sys.executable, *sys.argv])


def die_with_parent() -> None:
    """preexec_fn: SIGKILL when the benchmark dies (so a bare namespace's process goes too)."""
    from nbcontainer import _libc

    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def sh(*argv: str) -> None:
    """Run a setup command (untimed); its stderr in the error if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


def cni_plugins() -> str | None:
    """The directory with the CNI bridge and host-local plugins, if installed."""
    return next((d for d in CNI_DIRS if os.access(f"{d}/bridge", os.X_OK)
                 and os.access(f"{d}/host-local", os.X_OK)), None)


class CniRunc:
    """runc on a CNI bridge network, the way podman's CNI backend does it (see the docstring)."""

    def __init__(self, tmp: Path, layer: str, plugins: str) -> None:
        self.tmp, self.layer, self.plugins = tmp, layer, plugins
        self.netns = tmp / "netns-cni"
        self.bundle = make_bundle(tmp / "cni")
        config = json.loads((self.bundle / "config.json").read_text())
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = str(self.netns)
        (self.bundle / "config.json").write_text(json.dumps(config, indent=1))
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": "nbcbench", "type": "bridge", "bridge": CNI_BRIDGE,
            "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": CNI_SUBNET}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp / "cni-ipam")},
        })
        self.n = 0

    def _netns(self) -> None:
        """A network namespace kept by a bind mount, made in this thread (``ip netns add``)."""
        from nbcontainer import _libc

        self.netns.touch()
        ours = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc.unshare(_libc.CLONE_NEWNET)
            try:
                _libc.mount("/proc/thread-self/ns/net", str(self.netns), None, _libc.MS_BIND)
            finally:
                _libc.setns(ours, _libc.CLONE_NEWNET)
        finally:
            os.close(ours)

    def _cni(self, command: str, cid: str) -> None:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": str(self.netns),
               "CNI_IFNAME": "eth0", "CNI_PATH": self.plugins, "PATH": os.environ["PATH"]}
        proc = subprocess.run([f"{self.plugins}/bridge"], input=self.conf, env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"CNI bridge {command}: {proc.stdout.strip() or proc.stderr}")

    def __call__(self) -> None:
        self.n += 1
        cid = f"nbccni{self.n}"
        self._netns()
        try:
            try:
                self._cni("ADD", cid)
                oci_run("runc", self.bundle, self.layer, self.tmp / f"ocicni{self.n}", cid)
            finally:
                self._cni("DEL", cid)  # also after a failed ADD, as the CNI spec asks
        finally:
            from nbcontainer import _libc

            _libc.umount2(str(self.netns), _libc.MNT_DETACH)
            self.netns.unlink()


def start_sides(tmp: Path) -> tuple[dict[str, Callable[[], object]], list[str]]:
    """Every start side (name: callable), and notes on the sides left out."""
    from nbcontainer import make_spec, run
    from nbcontainer.images import resolve

    layer = resolve("busybox").layers[0]
    limits = {"memory": MEMORY, "pids_limit": PIDS, "cpus": CPU_QUOTA / CPU_PERIOD}
    sides: dict[str, Callable[[], object]] = {}
    for net in ("none", "bridge"):
        spec = make_spec(["/bin/true"], image="busybox", net=net, **limits)
        sides[f"API + zygote, --net {net}"] = lambda spec=spec: run(spec, zygote=True)
    for net in ("none", "bridge"):
        cli = [*cli_command(), "run", "--memory", str(MEMORY),
               "--pids-limit", str(PIDS), "--cpus", "1", "--net", net, "busybox", "/bin/true"]
        sides[f"CLI, --net {net}"] = lambda cli=cli: subprocess.run(cli, check=True)
    notes = []
    plain = make_bundle(tmp / "plain")
    counter = iter(range(10**9))

    def oci(tool: str) -> None:
        n = next(counter)
        oci_run(tool, plain, layer, tmp / f"oci{n}", f"nbcbench{n}")

    for tool in ("crun", "runc"):
        if shutil.which(tool):
            sides[f"{tool}, bare netns"] = lambda tool=tool: oci(tool)  # type: ignore[misc]
        else:
            notes.append(f"{tool}: not installed")
    plugins = cni_plugins()
    if plugins is None:
        notes.append("runc + CNI bridge: skipped, no CNI plugins in " + " or ".join(CNI_DIRS)
                     + " (apt-get install containernetworking-plugins)")
    elif shutil.which("runc"):
        sides["runc + CNI bridge plugin"] = CniRunc(tmp, layer, plugins)
    return sides, notes


def bench_start(tmp: Path, rounds: int) -> None:
    """Table 1: start with and without a network, cold and back-to-back; then with a spare."""
    sides, notes = start_sides(tmp)
    refused: dict[str, str] = {}
    for name, fn in list(sides.items()):  # warm-up: page in; make the bridges; who can't run
        try:
            fn()
        except (RuntimeError, subprocess.CalledProcessError) as err:
            refused[name] = str(err)
            del sides[name]
    cold = interleave(sides, rounds, gap=COLD_GAP, seed=1)
    b2b = interleave(sides, rounds, gap=0.0, seed=2)
    spare = spare_paths(rounds)

    print(f"container start of /bin/true (busybox); {order_note(rounds, COLD_GAP)}; cold: "
          f"{COLD_GAP * 1000:.0f} ms idle before each start (as between cells), back-to-back: "
          f"none; interpreter {interpreter()}")
    print(f"cgroup layout: {cgroup_layout()}")
    base = {net: median_min(cold[name])[0] for net, name in
            (("none", "runc, bare netns"), ("bridge", "runc + CNI bridge plugin"))
            if name in cold}
    print(f"{'what':<30} {'cold ms':>8} {'min':>6} {'b2b ms':>8} {'min':>6} {'cold vs runc':>13}")
    for name in cold:
        (cm, cl), (bm, bl) = median_min(cold[name]), median_min(b2b[name])
        net = "bridge" if "bridge" in name else "none"
        ratio = f"{cm / base[net]:.2f}x" if net in base else ""
        print(f"{name:<30} {cm * 1000:>8.1f} {cl * 1000:>6.1f} {bm * 1000:>8.1f} "
              f"{bl * 1000:>6.1f} {ratio:>13}")
    for name, err in refused.items():
        print(f"{name:<30} cannot run here: {err}")
        if name.startswith("crun") and "hybrid" in err and os.path.exists(UNIFIED):
            with open(f"{UNIFIED}/cgroup.controllers") as f:
                ctrl = f.read().strip()
            print(f"{'':<30} (on a hybrid layout crun refuses to start when {UNIFIED}/"
                  f"cgroup.controllers lists any controller; here it reads {ctrl!r}; "
                  "bench/bench_start.py --layout no-unified runs it without that mount)")
    for note in notes:
        print(f"{'':<30} {note}")
    print()
    costs = []
    for who, none, bridge in (("API", "API + zygote, --net none", "API + zygote, --net bridge"),
                              ("CLI", "CLI, --net none", "CLI, --net bridge"),
                              ("runc", "runc, bare netns", "runc + CNI bridge plugin")):
        if none in cold and bridge in cold:
            extra = median_min(cold[bridge])[0] - median_min(cold[none])[0]
            costs.append(f"{who} {extra * 1000:+.1f} ms")
    if costs:
        print("network cost per start (bridge minus none, cold medians): " + ", ".join(costs))
    print("Same work on every side: namespaces pid,net,ipc,uts,mount,cgroup; memory "
          f"{MEMORY >> 20} MiB, pids {PIDS}, 1 CPU; an overlay over the busybox layer; on a "
          "bridge: a veth pair (one end on the bridge, eth0 in the container), an address "
          "leased under a file lock, the default route; all removed before the start returns.")
    print("Differences left: as in bench/bench_start.py (nbcontainer's seccomp filter and "
          "keyring; the OCI runtimes' overlay mounted by the bench); nbcontainer also writes "
          "/etc/hosts, hostname and resolv.conf (bind-mounted) and sets lo up in every netns "
          "(runc leaves lo down); the CNI side runs two plugin binaries (bridge, host-local) "
          "per ADD and per DEL, as podman's CNI backend does; nbcontainer speaks netlink "
          "in-process (the veth) and in the container's first process (address, route).")
    if spare:
        print()
        print("As a notebook cell starts a container: API + zygote, memory and pids limits (no "
              "CPU limit: a spare's cgroup has no cpu hierarchy), the teardown in the background "
              "once the result is in; with and without a spare (runtime/spare.py: on a network "
              "its veth and address are prepared ahead); each network in a block of its own (a "
              f"spare follows the last container's network); {rounds} rounds per row")
        print(f"{'cell start':<30} {'cold ms':>8} {'min':>6} {'b2b ms':>8} {'min':>6}  "
              "spare adopted (cold, b2b)")
        for net, rows in spare.items():
            for label in ("no spare", "spare"):
                (c, ca), (b, ba) = rows[f"{label}, cold"], rows[f"{label}, back-to-back"]
                (cm, cl), (bm, bl) = median_min(c), median_min(b)
                print(f"{'--net ' + net + ', ' + label:<30} {cm * 1000:>8.1f} {cl * 1000:>6.1f} "
                      f"{bm * 1000:>8.1f} {bl * 1000:>6.1f}  {ca}/{len(c)}, {ba}/{len(b)}")


def spare_paths(rounds: int) -> dict[str, dict[str, tuple[list[float], int]]]:
    """Starts as a notebook cell makes them, per network: with and without a spare, cold
    and back-to-back (bench_start.attach_paths, with the teardown in the background)."""
    from nbcontainer import make_spec

    return {net: attach_paths(make_spec(["/bin/true"], image="busybox", net=net,
                                        memory=MEMORY, pids_limit=PIDS),
                              rounds, background=True)
            for net in ("none", "bridge")}


# -- throughput -------------------------------------------------------------------------------

class Sender:
    """A sender process: one transfer per line written to it; reports seconds and bytes."""

    def __init__(self, write: IO[str], read: IO[str]) -> None:
        self.write, self.read = write, read

    def transfer(self, size: int) -> float:
        self.write.write(f"{size}\n")
        self.write.flush()
        line = self.read.readline().split()
        if len(line) != 2:
            raise RuntimeError("a sender stopped (its error is above)")
        if int(line[1]) != size:
            raise RuntimeError(f"the receiver counted {line[1]} bytes of {size}")
        return float(line[0])


def wait_line(fd: int, expected: str, timeout: float = 30.0) -> None:
    """Read ``expected`` (a line) from ``fd`` within ``timeout`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise RuntimeError(f"no {expected!r} within {timeout:.0f} s")
        chunk = os.read(fd, 256)
        if not chunk:
            raise RuntimeError(f"closed before {expected!r}")
        data += chunk
    if data.decode().strip() != expected:
        raise RuntimeError(f"expected {expected!r}, read {data!r}")


class Scene:
    """The throughput sides, set up once and torn down on every way out."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.senders: dict[str, Sender] = {}

    def process(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, text=True, preexec_fn=die_with_parent, **kwargs)

        def stop() -> None:
            proc.kill()
            proc.wait()
        self.stack.callback(stop)
        return proc

    def bare_pair(self, label: str, bridge: str | None) -> None:
        """A receiver and a sender in two bare namespaces (``unshare --net``), joined by one
        veth pair or by a veth pair each into ``bridge``."""
        recv = self.process(["unshare", "--net", PYTHON, "-I", "-S", "-c", RECEIVER, str(PORT)],
                            stdout=subprocess.PIPE)
        send = self.process(["unshare", "--net", PYTHON, "-I", "-S", "-c", SENDER, BARE_A,
                             str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert recv.stdout is not None and send.stdin is not None and send.stdout is not None
        wait_line(recv.stdout.fileno(), "ready")
        tag = "p" if bridge is None else "b"
        if bridge is None:
            sh("ip", "link", "add", f"nbv{tag}a", "netns", str(recv.pid), "type", "veth", "peer",
               "name", f"nbv{tag}b", "netns", str(send.pid))
            ends = [(recv.pid, f"nbv{tag}a", BARE_A), (send.pid, f"nbv{tag}b", BARE_B)]
        else:
            ends = []
            for pid, side, addr in ((recv.pid, "a", BARE_A), (send.pid, "b", BARE_B)):
                sh("ip", "link", "add", f"nbv{tag}{side}", "master", bridge, "up", "type",
                   "veth", "peer", "name", "eth0", "netns", str(pid))
                ends.append((pid, "eth0", addr))
        for pid, dev, addr in ends:
            for cmd in (["ip", "addr", "add", f"{addr}/{BARE_PREFIX}", "dev", dev],
                        ["ip", "link", "set", dev, "up"], ["ip", "link", "set", "lo", "up"]):
                sh("nsenter", "-t", str(pid), "-n", *cmd)
        self.senders[label] = Sender(send.stdin, send.stdout)

    def container(self, command: list[str], **spec: Any) -> tuple[Any, int, int]:
        """A started container (``host`` image, default network) whose stdin and stdout are
        pipes; returns it and our ends (write, read)."""
        from nbcontainer import Container, make_spec

        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        ours = (in_w, out_r)
        for fd in ours:
            os.set_inheritable(fd, False)
        try:
            c = Container(make_spec(command, image="host", **spec), stdin=in_r, stdout=out_w)

            def stop() -> None:
                with contextlib.suppress(Exception):
                    c.kill()
                with contextlib.suppress(Exception):
                    c.wait(10)
                c.cleanup()
            c.start()
            self.stack.callback(stop)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        return c, in_w, out_r

    def containers(self) -> str:
        """The receiver container (port published on 127.0.0.1) and the senders: a container
        on the same bridge, and two host processes. Returns the receiver's address."""
        recv, in_w, out_r = self.container(
            [PYTHON, "-I", "-S", "-c", RECEIVER, str(PORT)],
            publish=[f"127.0.0.1:{HOST_PORT}:{PORT}"])
        os.close(in_w)
        self.stack.callback(os.close, out_r)
        wait_line(out_r, "ready")
        address = recv.state.network["address"]
        _, in_w, out_r = self.container([PYTHON, "-I", "-S", "-c", SENDER, address, str(PORT)])
        write, read = os.fdopen(in_w, "w"), os.fdopen(out_r)
        self.stack.callback(read.close)
        self.stack.callback(write.close)
        self.senders["container to container (nbc0)"] = Sender(write, read)
        for label, host, port in (("host to container's address", address, PORT),
                                  ("host to -p 127.0.0.1 (relay)", "127.0.0.1", HOST_PORT)):
            send = self.process([PYTHON, "-I", "-S", "-c", SENDER, host, str(port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert send.stdin is not None and send.stdout is not None
            self.senders[label] = Sender(send.stdin, send.stdout)
        return address


def bench_throughput(runs: int, mib: int) -> None:
    """Table 2: TCP throughput over each path, interleaved."""
    size = mib << 20
    with contextlib.ExitStack() as stack:
        scene = Scene(stack)
        scene.bare_pair("bare netns, one veth pair", None)
        sh("ip", "link", "add", BARE_BRIDGE, "up", "type", "bridge")
        stack.callback(sh, "ip", "link", "del", BARE_BRIDGE)
        scene.bare_pair("bare netns, via a bridge", BARE_BRIDGE)
        scene.containers()
        for sender in scene.senders.values():  # warm-up: connections, page cache, ARP
            sender.transfer(min(size, 16 << 20))
        seconds: dict[str, list[float]] = {name: [] for name in scene.senders}
        sides = {name: (lambda name=name, s=s: seconds[name].append(s.transfer(size)))
                 for name, s in scene.senders.items()}
        interleave(sides, runs, gap=0.2, seed=3)

    def rate(name: str) -> tuple[float, float]:
        med, low = median_min(seconds[name])
        return mib / med, mib / low

    print(f"TCP throughput, {mib} MiB per transfer, {order_note(runs, 0.2)} of the transfer "
          "time (connect to the receiver's count), shown as MiB/s; sender and receiver "
          f"{PYTHON} with 1 MiB buffers; {os.cpu_count()} CPUs")
    base = rate("bare netns, one veth pair")[0]
    print(f"{'path':<32} {'median MiB/s':>13} {'best':>7} {'vs veth pair':>13}")
    for name in seconds:
        med, best = rate(name)
        print(f"{name:<32} {med:>13.0f} {best:>7.0f} {med / base:>12.2f}x")
    print()
    ratios = [("containers over nbc0 / bare namespaces via a bridge",
               "container to container (nbc0)", "bare netns, via a bridge"),
              ("containers over nbc0 / bare veth pair",
               "container to container (nbc0)", "bare netns, one veth pair"),
              ("-p relay / direct to the container's address",
               "host to -p 127.0.0.1 (relay)", "host to container's address")]
    for text, a, b in ratios:
        print(f"ratio {text}: {rate(a)[0] / rate(b)[0]:.2f}x")
    print("The relay copies each connection through user space in the supervisor (here this "
          "benchmark's process; the CLI's run or a detached container's monitor otherwise): "
          "a third busy thread next to sender and receiver, on this machine's "
          f"{os.cpu_count()} CPUs.")


def collect_stale() -> list[str]:
    """What an earlier run killed with SIGKILL left, collected: its processes died with it
    (PR_SET_PDEATHSIG), its links, netns and mounts with its namespaces, but the cgroups of
    its containers and its temporary directory stay. nbcontainer's gc of that run's store
    removes the cgroups (the addresses it releases were in that run's namespace)."""
    from nbcontainer.runtime.manage import gc

    done = []
    for path in Path(tempfile.gettempdir()).glob("nbc-bench-net-*"):
        try:
            pid = int(path.name.split("-")[3])
            os.kill(pid, 0)
            continue  # still running (another benchmark)
        except (IndexError, ValueError):
            continue
        except ProcessLookupError:
            pass
        os.environ["NBCONTAINER_NETWORKS"] = str(path / "networks")
        try:
            gc(path / "store")
        finally:
            del os.environ["NBCONTAINER_NETWORKS"]
        shutil.rmtree(path, ignore_errors=True)
        done.append(str(path))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="starts per side and mode")
    parser.add_argument("--runs", type=int, default=7, help="transfers per throughput path")
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer")
    parser.add_argument("--quick", action="store_true",
                        help="the smoke run: 3 rounds, 3 transfers of 32 MiB")
    parser.add_argument("--only", choices=("start", "throughput"), default=None)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.runs, args.mib = 3, 3, 32
    if os.geteuid() != 0:
        sys.exit("bench_network: run as root")
    reexec()

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminated)

    for path in collect_stale():
        print(f"(removed what a killed run left: {path})", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f"nbc-bench-net-{os.getpid()}-"))
    os.environ["NBCONTAINER_ROOT"] = str(tmp / "store")
    os.environ["NBCONTAINER_NETWORKS"] = str(tmp / "networks")
    try:
        print("the benchmark runs in a network namespace of its own, which plays the host "
              "(nbc0, the CNI bridge and all traffic live there; bench/bench_network.py says why)")
        if args.only in (None, "start"):
            bench_start(tmp, args.rounds)
        if args.only in (None, "throughput"):
            if args.only is None:
                print()
            bench_throughput(args.runs, args.mib)
    finally:
        from nbcontainer.runtime.container import wait_for_cleanups
        from nbcontainer.runtime.zygote import Zygote

        wait_for_cleanups(10)
        Zygote.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
