"""Generate the course notebooks (without outputs) from the cell sources below.

    .venv/bin/python notebooks/make_notebooks.py        # rewrites notebooks/*.ipynb

Edit the lessons here, not in the .ipynb files: this keeps them reviewable as plain text, with
stable cell ids (so regenerating gives no spurious diff) and no outputs. A cell tagged
``raises-exception`` is one that fails on purpose (an OOM kill); nbclient and the test let it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import nbformat

HERE = Path(__file__).resolve().parent

MAN = "https://man7.org/linux/man-pages/man{sec}/{page}.{sec}.html"


def man(page: str, sec: int = 7) -> str:
    return f"[{page}({sec})]({MAN.format(page=page, sec=sec)})"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(dedent(text).strip("\n"))


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def check_cell(extra: str = "", plot: bool = False) -> nbformat.NotebookNode:
    args = ", ".join(a for a in (extra, "" if plot else 'plot="never"') if a)
    lines = ["# Environment check: root, cgroup layout, overlayfs. Says plainly what will not "
             "work here."]
    if not plot:
        lines.append("# This lesson is not about memory: no live memory plots (see 02-cgroups).")
    lines += ["import course", f"CAN_RUN = course.check({args})"]
    return nbformat.v4.new_code_cell("\n".join(lines))


# --------------------------------------------------------------------------------------------
# 01 namespaces
# --------------------------------------------------------------------------------------------

NB01 = [
    md(f"""
    # 1. Namespaces: what a process can see

    A container is not a thing the kernel knows about. It is an ordinary process that was given
    its own *view* of some global resources. Each kind of view is a **namespace**
    ({man('namespaces')}):

    | namespace | isolates | flag |
    | --- | --- | --- |
    | UTS | hostname and domain name | `CLONE_NEWUTS` |
    | IPC | System V IPC objects, POSIX message queues | `CLONE_NEWIPC` |
    | PID | process ids ({man('pid_namespaces')}) | `CLONE_NEWPID` |
    | mount | the list of mounts ({man('mount_namespaces')}) | `CLONE_NEWNS` |
    | user | user and group ids, capabilities ({man('user_namespaces')}) | `CLONE_NEWUSER` |
    | network | interfaces, routes, ports ({man('network_namespaces')}) | `CLONE_NEWNET` |
    | cgroup | the view of `/proc/self/cgroup` ({man('cgroup_namespaces')}) | `CLONE_NEWCGROUP` |

    A process enters new namespaces with {man('unshare', 2)} or {man('clone', 2)}.
    nbcontainer does exactly that (see `nbcontainer/child/namespaces.py`). In this notebook every
    namespace is shown **from both sides**: from inside the container and from the host.

    `%%container [options] [COMMAND]` runs the cell in a new container: a Python body by
    default, or the body fed to `COMMAND` (e.g. `sh`) on stdin. `--ns` picks the namespaces
    (default `uts,ipc,pid,mount,cgroup`), `--image` the root filesystem (`host`, `busybox`,
    or `none` for the host's `/` without any root switch).
    """),
    check_cell(),
    md("""
    ## Namespace identity: the inode numbers

    Every namespace is a kernel object with an inode number, visible as a symlink under
    `/proc/PID/ns/`. Two processes are in the same namespace exactly when the numbers are
    equal. Here is the host side (this notebook's kernel):
    """),
    code("""
    import os
    print("\\n".join(f"{k:<8} {v}" for k, v in course.namespaces_of().items()))
    """),
    md("""
    And the same read from inside a container. `-o inside` brings the variable `inside` back
    into the notebook, so we can put the two side by side:
    """),
    code("""
    %%container -o inside
    import os
    inside = {n: os.readlink(f"/proc/self/ns/{n}") for n in sorted(os.listdir("/proc/self/ns"))
              if not n.endswith("_for_children")}
    print(inside)
    """),
    code("""
    if CAN_RUN:
        course.side_by_side(course.namespaces_of(), inside)
        # The default --ns is uts,ipc,pid,mount,cgroup, and the default network (--net bridge)
        # adds net: those six differ; user (and time) do not.
        assert inside["uts"] != course.namespaces_of()["uts"]
        assert inside["net"] != course.namespaces_of()["net"]
        assert inside["user"] == course.namespaces_of()["user"]
    """),
    md("""
    ## UTS: the hostname

    The UTS namespace holds the hostname. Inside, the container gets its own (by default its id
    or `--name`); changing it there does not change the host's. Setting the hostname needs
    `CAP_SYS_ADMIN`, which Docker's default capability set (and ours) does not include, so this
    cell asks for `--privileged`.
    """),
    code("""
    %%container --hostname lab --privileged sh
    echo "inside, before: $(hostname)"
    hostname changed-inside
    echo "inside, after:  $(hostname)"
    """),
    code("""
    import socket
    print("host:", socket.gethostname())
    assert socket.gethostname() != "changed-inside"
    """),
    md("""
    ## IPC: message queues and shared memory

    System V IPC objects (message queues, semaphores, shared memory) and POSIX message queues
    live in the IPC namespace. We make a message queue on the host with `ipcmk`, then look for
    it from a container with its own IPC namespace and from one without.
    """),
    code("""
    import shutil, subprocess
    HAVE_IPC_TOOLS = bool(shutil.which("ipcmk") and shutil.which("ipcs"))
    if CAN_RUN and HAVE_IPC_TOOLS:
        made = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout
        QUEUE_ID = made.split(":")[-1].strip()
        print("host made message queue", QUEUE_ID)
        print(subprocess.run(["ipcs", "-q"], capture_output=True, text=True).stdout)
    elif not HAVE_IPC_TOOLS:
        print("ipcmk/ipcs (util-linux) are missing: the IPC demonstration is skipped")
    """),
    code("""
    %%container sh
    echo "inside a container with its own IPC namespace (the default):"
    ipcs -q
    """),
    code("""
    %%container --ns uts,pid,mount sh
    echo "inside a container that shares the host's IPC namespace (--ns without ipc):"
    ipcs -q
    """),
    code("""
    if CAN_RUN and HAVE_IPC_TOOLS:
        subprocess.run(["ipcrm", "-q", QUEUE_ID], check=True)
        print("removed queue", QUEUE_ID)
    """),
    md(f"""
    ## PID: PID 1, and why `ps` still lies

    In a new PID namespace ({man('pid_namespaces')}) the first process is PID 1. The classic
    first experiment creates *only* a PID namespace and stays on the host's filesystem
    (`--image none --ns pid`): the shell says it is PID 1, yet `ps` lists every process of the
    host. `ps` does not ask the kernel "which processes exist"; it reads `/proc`, and `/proc`
    is still the host's procfs, mounted for the host's PID namespace.
    """),
    code("""
    %%container --image none --ns pid sh
    echo "my PID, as my PID namespace sees it: $$"
    echo "processes ps can see: $(ps -e --no-headers | wc -l)  <- the host's, read from the host's /proc"
    echo "my PID as /proc/self says: $(readlink /proc/self)  <- a host PID: this /proc is the host's"
    """),
    md("""
    The fix is a mount namespace and a fresh `proc` mounted inside it, which is what a container
    with a root filesystem does (`mount("proc", "/proc", "proc", ...)` in
    `nbcontainer/child/rootfs.py`). Now `ps` tells the truth:
    """),
    code("""
    %%container --image busybox sh
    echo "my PID: $$"
    ps
    """),
    md("""
    From the host, the same process has an ordinary PID. The `NSpid` line of
    `/proc/PID/status` lists the process's id in every PID namespace it belongs to, outermost
    first. We start a container through the Python API to know its host PID:
    """),
    code("""
    from nbcontainer import Container, make_spec
    if CAN_RUN:
        c = Container(make_spec(["sleep", "30"], image="busybox")).start()
        try:
            with open(f"/proc/{c.pid}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid"))
            print(f"host PID {c.pid};", nspid.strip(), " <- host PID, then PID inside")
            assert nspid.split()[-1] == "1"
        finally:
            c.kill(); c.wait(); c.cleanup()
    """),
    md(f"""
    ## Mount: a mount inside never reaches the host

    A mount namespace ({man('mount_namespaces')}) has its own copy of the mount list. A mount
    made inside is invisible to the host. Mounting needs `CAP_SYS_ADMIN`, hence `--privileged`:
    """),
    code("""
    %%container --privileged sh
    mkdir -p /tmp/scratch
    mount -t tmpfs -o size=1m lesson-tmpfs /tmp/scratch
    echo "inside:"; grep lesson-tmpfs /proc/self/mounts
    """),
    code("""
    with open("/proc/self/mounts") as f:
        host_sees = [line for line in f if "lesson-tmpfs" in line]
    print("host sees:", host_sees or "nothing")
    assert not host_sees
    """),
    md("""
    ### Why propagation must be private

    A copy of the mount list is not the whole story. Since Linux 2.6.15 a mount can be
    **shared**: mounts and unmounts under it propagate to its peers, *across mount namespaces*.
    systemd makes `/` shared on most distributions, so a freshly unshared mount namespace is a
    peer of the host's, and a mount made in it would appear on the host. That is why every
    container runtime first makes all mounts recursively private
    (`mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL)`, `make_private()` in
    `nbcontainer/child/rootfs.py`; runc does the same).

    Here is the danger reproduced safely, *inside* a privileged container (so nothing can reach
    the real host): we make a shared mount, then create a nested mount namespace twice, once
    keeping propagation unchanged and once making it private.
    """),
    code("""
    %%container --privileged sh
    mkdir -p /tmp/demo && mount -t tmpfs demo /tmp/demo && mount --make-shared /tmp/demo
    mkdir /tmp/demo/a /tmp/demo/b
    unshare -m --propagation unchanged sh -c 'mount -t tmpfs leaked-out /tmp/demo/a'
    unshare -m --propagation private   sh -c 'mount -t tmpfs stayed-in /tmp/demo/b'
    echo "mounts the outer namespace sees now:"
    grep -E 'leaked-out|stayed-in' /proc/self/mounts || true
    """),
    md("""
    `leaked-out` appears in the outer namespace although it was mounted in another one;
    `stayed-in` does not. On the host itself, this is the propagation of `/`:
    """),
    code("""
    import subprocess
    print(subprocess.run(["findmnt", "-o", "TARGET,PROPAGATION", "/"], capture_output=True,
                         text=True).stdout)
    """),
    md(f"""
    ## User: root inside, nobody special outside

    A user namespace ({man('user_namespaces')}) maps ids inside to ids outside. With `--ns user`
    nbcontainer maps root (0) inside to uid 100000 outside (the maps are in
    `/proc/PID/uid_map`: *inside-start outside-start count*). The process has every capability
    *inside its namespaces*, and none over the host's objects: files owned by the host's root
    show up as `nobody` (65534, the overflow id) and stay unreadable.
    """),
    code("""
    %%container --ns user,uts,ipc,pid,mount sh
    id
    echo "uid_map: $(cat /proc/self/uid_map)"
    ls -ln /etc/shadow
    cat /etc/shadow > /dev/null 2>&1 && echo "read /etc/shadow" || echo "Permission denied: root inside cannot read the host's /etc/shadow"
    """),
    md("And from the host, the same process runs as an unprivileged uid:"),
    code("""
    if CAN_RUN:
        c = Container(make_spec(["sleep", "30"], image="busybox",
                                ns="user,uts,ipc,pid,mount")).start()
        try:
            with open(f"/proc/{c.pid}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid"))
            with open(f"/proc/{c.pid}/uid_map") as f:
                uid_map = f.read().split()
            print("host view:", uid_line.strip(), "| uid_map:", uid_map)
            assert uid_line.split()[1] == uid_map[1] != "0"
        finally:
            c.kill(); c.wait(); c.cleanup()
    """),
    md(f"""
    ## Network: a namespace of its own

    A new network namespace ({man('network_namespaces')}) has its own interfaces, addresses,
    routes, ports and firewall rules. It starts with the loopback `lo` (down) and no routes.
    `--net none` gives the container such a namespace, with `lo` brought up.

    It may hold a few more interfaces: some kernel modules create a *fallback device* in every
    network namespace, e.g. `tunl0` (module `ipip`), `sit0` (`sit`), `gre0`, `gretap0` and
    `erspan0` (`ip_gre`), `ip6tnl0` (`ip6_tunnel`), `ip_vti0` (`ip_vti`). They exist only
    because the module is loaded on this host, they are down, have no address and carry
    nothing until someone configures them. So the rule is "only `lo` is up", not "only `lo`
    exists".
    """),
    code("""
    %%container --net none --image busybox sh
    echo "interfaces inside: $(ls /sys/class/net)"
    ip addr 2>/dev/null || cat /proc/net/dev
    """),
    code("""
    # Check: which interfaces does a new network namespace hold, and which of them are up?
    FALLBACK_DEVICES = {"tunl0": "ipip", "sit0": "sit", "gre0": "ip_gre", "gretap0": "ip_gre",
                        "erspan0": "ip_gre", "ip6tnl0": "ip6_tunnel", "ip6gre0": "ip6_gre",
                        "ip_vti0": "ip_vti", "ip6_vti0": "ip6_vti"}
    IFF_UP = 0x1  # <linux/if.h>: the interface is administratively up
    if CAN_RUN:
        _, out = course.run_capture(
            ["sh", "-c", "for n in /sys/class/net/*; do echo ${n##*/} $(cat $n/flags); done"],
            image="busybox", net="none")
        flags = {name: int(value, 16) for name, value in map(str.split, out.splitlines())}
        up = sorted(name for name, value in flags.items() if value & IFF_UP)
        print("up:", up)
        for name in sorted(set(flags) - set(up)):
            module = FALLBACK_DEVICES.get(name)
            why = f"the fallback device of module {module}" if module else "not a known fallback"
            print(f"down: {name} ({why})")
        assert up == ["lo"], f"only the loopback should be up in a new namespace, not {up}"
    """),
    code("""
    print("interfaces on the host:", sorted(os.listdir("/sys/class/net")))
    """),
    md("""
    ## Two containers and a bridge, by hand

    The seed ends its network-namespace lesson with
    *在宿主机上搭建网桥后，就能很方便地实现容器之间的通信*
    (with a bridge on the host, containers can talk to each other). Let us do exactly that, by
    hand, with `ip` from iproute2, and map each step to the seed's Go code
    (`network/bridge.go` and `network/network.go`, which call the same kernel interface,
    rtnetlink, through the `netlink` library):

    | step | by hand, on the host | the seed's Go code |
    | --- | --- | --- |
    | 1. two containers with an empty network namespace | `Container(make_spec(..., net="none"))` | `CLONE_NEWNET` in the container's clone flags |
    | 2. a bridge (a virtual switch) | `ip link add BR type bridge`, `ip link set BR up` | `createBridgeInterface`: `netlink.LinkAdd(&netlink.Bridge{...})`; `setInterfaceUP` |
    | 3. a veth pair per container, host end on the bridge | `ip link add H type veth peer name C`, `ip link set H master BR`, `ip link set H up` | `Connect`: `netlink.Veth{LinkAttrs{MasterIndex: br.Index}, PeerName: "cif-..."}`, `LinkAdd`, `LinkSetUp` |
    | 4. the other end into the container | `ip link set C netns PID` | `enterContainerNetns`: `netlink.LinkSetNsFd(peer, fd of /proc/PID/ns/net)` |
    | 5. address it and bring it up, inside | `nsenter -t PID -n ip addr add ...`, `... ip link set eth0 up` | `netns.Set(fd)`, then `setInterfaceIP`, `setInterfaceUP(peer)`, `setInterfaceUP("lo")` |

    A veth pair is a virtual cable: what goes in one end comes out of the other, even when the
    two ends are in different network namespaces. A bridge is a virtual switch: it learns
    which MAC address is behind which port and forwards frames between its ports.

    First, the bookkeeping that keeps the host clean whatever happens below. The names carry
    this kernel's PID, so two copies of this notebook running at once on one machine (a class
    on a shared root JupyterHub) get separate bridges. `demo_cleanup()` removes the containers,
    the veth pairs and the bridge; it is idempotent, runs now (for what a crashed earlier run
    left behind), at the end of the section, and at kernel exit (`atexit`), so a cell that
    fails half-way cannot leave a bridge on the host.
    """),
    code("""
    import atexit
    import re
    import shlex

    TAG = str(os.getpid())
    BRIDGE = f"demo-br{TAG}"                        # link names are at most 15 characters
    HOST_END = {"a": f"demo{TAG}a", "b": f"demo{TAG}b"}  # the veth ends that stay on the host
    DEMO_LINK = re.compile(r"demo-br(\\d+)|demo(\\d+)[ab]")
    DEMO_CONTAINERS = []


    def host(command):
        \"\"\"Run one command on the host, shown as in a shell; an error if it fails.\"\"\"
        print("#", command)
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=10)
        print(done.stdout + done.stderr, end="")
        if done.returncode != 0:
            raise RuntimeError(f"{command!r} failed with status {done.returncode}")
        return done.stdout


    def demo_links():
        \"\"\"This demo's links on the host: name -> PID of the kernel that made them.\"\"\"
        found = {}
        for name in os.listdir("/sys/class/net"):
            match = DEMO_LINK.fullmatch(name)
            if match:
                found[name] = int(match.group(1) or match.group(2))
        return found


    def demo_cleanup():
        \"\"\"Remove this demo's containers, veths and bridge, and those of dead kernels.\"\"\"
        while DEMO_CONTAINERS:
            DEMO_CONTAINERS.pop().cleanup()  # kills it if it still runs; idempotent
        # The host ends first (deleting one end of a veth pair deletes both), then the bridge.
        for name, owner in sorted(demo_links().items(), key=lambda item: "-br" in item[0]):
            if owner == os.getpid() or not os.path.exists(f"/proc/{owner}"):
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


    if CAN_RUN:
        demo_cleanup()
        atexit.register(demo_cleanup)
        print("bridge:", BRIDGE, "| host ends:", ", ".join(HOST_END.values()))
    """),
    md("""
    **Step 1.** Two long-running containers, each in a network namespace of its own with
    nothing in it but `lo` (`--net none`). From the host, a container is its first process:
    its PID is the handle every later step uses (`/proc/PID/ns/net`).
    """),
    code("""
    if CAN_RUN:
        for _ in "ab":
            DEMO_CONTAINERS.append(Container(
                make_spec(["sleep", "600"], image="busybox", net="none"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).start())
        A, B = DEMO_CONTAINERS
        for label, c in (("a", A), ("b", B)):
            print(f"container {label}: id {c.id}, host PID {c.pid}, "
                  f"{os.readlink(f'/proc/{c.pid}/ns/net')}")
        print(f"the host: {os.readlink('/proc/self/ns/net')}")
    """),
    md("""
    **Step 2.** Choose addresses. Any private subnet works between two containers on their own
    bridge, but one that a host route already covers would be ambiguous (and would break the
    host's routing the moment the bridge got an address, as the seed's gateway does). The
    kernel's IPv4 routing table is `/proc/net/route` (addresses in hex, in the machine's byte
    order); the default route (`0.0.0.0/0`) is "everything else" and claims no subnet.
    """),
    code("""
    import ipaddress
    import socket
    import struct


    def host_routes():
        \"\"\"(interface, network) of every IPv4 route of the host but the default one.\"\"\"
        routes = []
        with open("/proc/net/route") as f:
            next(f)  # the header line
            for line in f:
                iface, dest, _gw, _flags, _refcnt, _use, _metric, mask = line.split()[:8]
                addr = socket.inet_ntoa(struct.pack("=I", int(dest, 16)))
                netmask = socket.inet_ntoa(struct.pack("=I", int(mask, 16)))
                net = ipaddress.IPv4Network(f"{addr}/{netmask}")
                if net.prefixlen > 0:
                    routes.append((iface, net))
        return routes


    ROUTES = host_routes()
    for iface, net in ROUTES:
        print(f"host route: {str(net):<18} dev {iface}")
    CANDIDATES = ["10.250.0.0/24", "172.31.250.0/24", "192.168.250.0/24"]
    SUBNET = next((ipaddress.IPv4Network(c) for c in CANDIDATES
                   if not any(ipaddress.IPv4Network(c).overlaps(net) for _, net in ROUTES)), None)
    assert SUBNET is not None, f"each of {CANDIDATES} overlaps a host route: add another one"
    hosts = list(SUBNET.hosts())
    A_ADDR, B_ADDR = str(hosts[1]), str(hosts[2])  # .1 is left for a gateway, as the seed does
    print(f"subnet {SUBNET}: container a is {A_ADDR}, container b is {B_ADDR}")
    """),
    md("""
    **Step 3.** On the host: the bridge, and a veth pair per container. The host end goes on the
    bridge; the other end moves into the container's network namespace (`ip link set C netns
    PID`), where the host no longer sees it: an interface belongs to exactly one network
    namespace.
    """),
    code("""
    if CAN_RUN:
        host(f"ip link add {BRIDGE} type bridge")
        host(f"ip link set {BRIDGE} up")
        for side, c in (("a", A), ("b", B)):
            peer = f"cif{TAG}{side}"  # the container end; the seed names it cif-<id>
            host(f"ip link add {HOST_END[side]} type veth peer name {peer}")
            host(f"ip link set {peer} netns {c.pid}")
            host(f"ip link set {HOST_END[side]} master {BRIDGE}")
            host(f"ip link set {HOST_END[side]} up")
        print("the host still sees a container end:",
              any(name.startswith(f"cif{TAG}") for name in os.listdir("/sys/class/net")))
    """),
    md("""
    **Step 4.** Inside each container: rename its end to `eth0` (names are per namespace, so
    every container can have an `eth0`), give it its address and bring it up. The container
    cannot do this itself: configuring interfaces needs `CAP_NET_ADMIN`, which Docker's default
    capability set (and ours) leaves out. So the host (the runtime) does it by entering the
    container's network namespace and only that one: `nsenter -t PID -n` runs the host's `ip`
    there, as the seed's `netns.Set` does for its own thread.
    """),
    code("""
    if CAN_RUN:
        for side, c, addr in (("a", A, A_ADDR), ("b", B, B_ADDR)):
            inside = f"nsenter -t {c.pid} -n"
            host(f"{inside} ip link set cif{TAG}{side} name eth0")
            host(f"{inside} ip addr add {addr}/{SUBNET.prefixlen} dev eth0")
            host(f"{inside} ip link set eth0 up")
    """),
    md("""
    **Seen from the host:** the bridge with its two ports. `@ifN` names the index of the
    peer, which lives in another namespace (`link-netnsid`).
    """),
    code("""
    if CAN_RUN:
        host(f"ip link show master {BRIDGE}")
        if shutil.which("bridge"):  # the bridge's view: each port's forwarding state
            print(*(line for line in host("bridge link show").splitlines()
                    if f"master {BRIDGE} " in line), sep="\\n")
    """),
    md("**Seen from inside** each container (busybox's `ip`): `lo`, and `eth0` with its address."),
    code("""
    %container exec {A.id} ip addr
    %container exec {B.id} ip addr
    """),
    md("""
    **Ping both ways** (ICMP echo; `-c 2 -W 2` keeps it bounded). The containers were given no
    route: the address's `/24` is a directly connected network, so the kernel asks with ARP
    who has the other address, the bridge floods the question to its ports and learns where
    each answer came from.
    """),
    code("""
    %container exec {A.id} ping -c 2 -W 2 {B_ADDR}
    %container exec {B.id} ping -c 2 -W 2 {A_ADDR}
    """),
    code("""
    # What the bridge learned: the containers' MAC addresses, each behind its port.
    if CAN_RUN and shutil.which("bridge"):
        learned = [line for line in host(f"bridge fdb show br {BRIDGE}").splitlines()
                   if "permanent" not in line]
        print("learned:", *learned, sep="\\n  ")
    """),
    md("""
    **TCP both ways** with busybox `nc`: one container listens (`nc -l -p PORT`, stopped by
    `timeout` after 10 s at most), the other connects and sends a line; the listener prints
    what it received. The client retries for a moment, since the listener needs a few
    milliseconds to bind its port.
    """),
    code("""
    import tempfile


    def tcp_line(server, client, address, text, port=7000):
        \"\"\"Send ``text`` from ``client`` to a listener in ``server``; return what it got.\"\"\"
        # The listener's stdin is a pipe held open until the end: when its stdin ends, busybox
        # nc closes its sending half, and the client could hang up before sending its line.
        stdin_r, stdin_w = os.pipe()
        with tempfile.TemporaryFile() as got, os.fdopen(stdin_w, "wb"):
            try:
                listener = server.exec(["timeout", "10", "nc", "-l", "-p", str(port)],
                                       stdin=stdin_r, stdout=got, stderr=got)
            finally:
                os.close(stdin_r)
            try:
                send = (f"for i in $(seq 30); do echo '{text}' | nc -w 2 {address} {port} "
                        "&& exit 0; sleep 0.1; done; exit 1")
                sent = client.exec(["sh", "-c", send], stdin=subprocess.DEVNULL).wait(timeout=30)
                assert sent.ok, f"could not connect to {address}:{port}: {sent}"
                listener.wait(timeout=15)
            finally:
                listener.cleanup()
            got.seek(0)
            return got.read().decode()


    if CAN_RUN:
        received = tcp_line(B, A, B_ADDR, "hello from a")
        print(f"b ({B_ADDR}) received: {received!r}")
        assert received == "hello from a\\n"
        received = tcp_line(A, B, A_ADDR, "hello from b")
        print(f"a ({A_ADDR}) received: {received!r}")
        assert received == "hello from b\\n"
    """),
    md("""
    That is the whole trick behind a container network. `--net bridge` (nbcontainer's
    default network, bridge `nbc0`, see `nbcontainer/net/`) does the same for you, without
    running `ip`: one netlink request per container creates the veth pair with `eth0` already
    in the container's namespace and the host end on the bridge (steps 3 and 4 at once), and
    the container's first process sets its own address and route before it drops its capabilities
    (step 5). It also adds what a container needs to reach *beyond* its bridge, which the
    seed adds too:

    - the bridge gets the subnet's first address (the seed's `setInterfaceIP` in
      `initBridge`; `nbc0` has `10.88.0.1`), and each container a default route through it
      (the seed's `netlink.RouteAdd`), so the host is its gateway;
    - outbound NAT: a `MASQUERADE` rule for the subnet (the seed's `setupIPTables`;
      nbcontainer keeps its rules in a chain of its own, `NBCONTAINER-POSTROUTING`), with
      IPv4 forwarding on the host (a global setting nbcontainer reads but never writes);
    - addresses leased from the subnet and released on every way out (the seed's `ipam.go`),
      and names in each container's `/etc/hosts`, so containers find each other by name.

    Docker's `docker0` is the same design. One catch on hosts that run Docker: with the
    `br_netfilter` module loaded, bridged frames also pass the firewall's `FORWARD` chain,
    which Docker sets to `DROP`; there, a hand-made bridge like this one needs an `ACCEPT`
    rule for its traffic.

    **Clean up.** Removing the containers ends their network namespaces, which takes their
    veth ends with them; the host ends and the bridge are deleted explicitly (the kernel
    destroys a dead namespace's devices asynchronously, so we do not wait for it).
    """),
    code("""
    if CAN_RUN:
        demo_cleanup()
        atexit.unregister(demo_cleanup)
        left = sorted(name for name, owner in demo_links().items() if owner == os.getpid())
        print("left on the host:", left or "nothing")
        assert not left, f"the demo left {left} behind"
    """),
    md("""
    ## Exercise

    Predict which namespaces a container started with `--image none --ns uts,net` has of its
    own, i.e. whose inode numbers differ from the host's. Write your prediction as a set of
    namespace names (as in `/proc/self/ns`: `uts ipc pid pid_for_children mnt net user cgroup
    time`), then run the check cell. (The answer below is filled in so that the notebook runs
    unattended: clear it and make your own prediction first.)

    Hint: `--image none` means no root switch, hence no mount namespace unless you ask for one.
    """),
    code("""
    my_prediction = {"uts", "net"}
    """),
    code("""
    # Check: run the container and compare.
    if CAN_RUN:
        _, out = course.run_capture(
            ["sh", "-c", "for n in /proc/self/ns/*; do echo ${n##*/} $(readlink $n); done"],
            image="none", ns="uts,net")
        theirs = dict(line.split() for line in out.splitlines())
        host = course.namespaces_of()
        actual = {n for n in host if theirs.get(n) != host[n]}
        print("differ from the host:", sorted(actual))
        assert my_prediction == actual, f"not quite: the container has its own {sorted(actual)}"
        print("correct")
    """),
    md(f"""
    ## Further reading

    {man('namespaces')}, {man('pid_namespaces')}, {man('mount_namespaces')},
    {man('user_namespaces')}, {man('network_namespaces')}, {man('cgroup_namespaces')},
    {man('unshare', 2)}, {man('setns', 2)}, {man('unshare', 1)}, {man('nsenter', 1)}.
    Next: [02-cgroups](02-cgroups.ipynb) limits what a process can *use*, where namespaces
    limit what it can *see*.
    """),
]

# --------------------------------------------------------------------------------------------
# 02 cgroups
# --------------------------------------------------------------------------------------------

NB02 = [
    md(f"""
    # 2. Control groups: what a process can use

    Namespaces decide what a process can *see*; **control groups** ({man('cgroups')}) decide
    how much it can *use*. A cgroup is a directory in a special filesystem
    (`/sys/fs/cgroup`); its files are the knobs (`memory.max`, `cpu.max`, `pids.max`, ...) and
    the meters (`memory.current`, `cpu.stat`, ...). Writing a PID into `cgroup.procs` moves that
    process, and all its future children, into the group.

    There are two versions. **cgroup v1** has one hierarchy per controller
    (`/sys/fs/cgroup/memory/...`, `/sys/fs/cgroup/cpu/...`), with files like
    `memory.limit_in_bytes`. **cgroup v2** has a single unified hierarchy, with files like
    `memory.max`; it is the default on current distributions. *Hybrid* machines mount both and
    use v1 for the controllers. nbcontainer speaks all three (`nbcontainer/cgroups/`).
    """),
    check_cell(plot=True),
    md("## The layout of this machine"),
    code("""
    from nbcontainer import cgroups
    try:  # reading the layout needs no root
        print(cgroups.detect().describe())
    except Exception as err:
        print("cannot read the cgroup layout here:", err)
    """),
    md("""
    ## A container's cgroup, from the host

    A container gets one cgroup (one directory per hierarchy on v1), created *before* its first
    process runs, so the limits apply from the first instruction. Let us start one with a
    memory limit, a CPU quota and a task limit, and read its files from the host:
    """),
    code("""
    import os
    from nbcontainer import Container, make_spec

    FILES = {   # the knob and the meter of each limit, v1 names / v2 names
        "memory": ["memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max_usage_in_bytes",
                   "memory.max", "memory.current", "memory.peak"],
        "cpu": ["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max"],
        "pids": ["pids.max", "pids.current"],
    }

    def show_cgroup(paths):
        dirs = sorted(set(paths.values()))
        for d in dirs:
            print(d)
            for names in FILES.values():
                for name in names:
                    f = os.path.join(d, name)
                    if os.path.exists(f):
                        with open(f) as fh:
                            print(f"    {name:<28} {fh.read().strip()}")

    if CAN_RUN:
        c = Container(make_spec(["sleep", "30"], image="busybox", memory="64m", cpus=0.5,
                                pids_limit=50)).start()
        try:
            show_cgroup(c.cgroup.paths)
            with open(f"/proc/{c.pid}/cgroup") as f:
                print("\\n/proc/PID/cgroup read from the host:\\n" + f.read())
        finally:
            c.kill(); c.wait(); c.cleanup()
    """),
    md(f"""
    64 MiB is 67108864 bytes; `cpus=0.5` is a quota of 50 ms of CPU time per 100 ms period.
    Inside, the container has its own **cgroup namespace** ({man('cgroup_namespaces')}): its
    cgroup looks like the root, so it cannot learn (or climb) the host's hierarchy:
    """),
    code("""
    %%container --image busybox sh
    cat /proc/self/cgroup
    """),
    md("""
    ## A memory limit, live

    The cell below allocates 8 MiB every tenth of a second under a 100 MiB limit.
    `--memory-swap 100m` (equal to `--memory`) forbids swapping, so when the cgroup cannot
    reclaim anything more the kernel's OOM killer kills the process inside the cgroup — only
    there: the rest of the machine does not notice. The live plot (`--plot`) shows the cgroup's
    memory use climbing to the dashed limit line and the kill as a red line.

    This cell fails **on purpose**: it is tagged `raises-exception`, so *Run All* continues.
    """),
    code("""
    %%container --memory 100m --memory-swap 100m --plot
    import time
    chunks = []
    for i in range(40):
        chunks.append(bytearray(8 << 20))   # 8 MiB, zero-filled: every page is touched
        print(f"allocated {(i + 1) * 8} MiB", flush=True)
        time.sleep(0.1)
    """, "raises-exception"),
    md("""
    What happened: the process asked for more pages; the cgroup was at `memory.max`
    (`memory.limit_in_bytes` on v1); the kernel tried to reclaim page cache in the group and
    found nothing it could drop; with no swap allowed it invoked the OOM killer *for this cgroup
    only*, which picked the biggest process in it and sent `SIGKILL`. The container's exit
    status is 137 (128 + 9), exactly Docker's. The cgroup records the kill (`memory.events`
    `oom_kill` on v2, `memory.oom_control` on v1), which is how nbcontainer (and
    `docker inspect`'s `OOMKilled`) can tell an OOM kill from any other `SIGKILL`.

    The last cell's resource record:
    """),
    code("""
    %container last
    """),
    md("""
    Under the limit nothing happens: this cell holds 60 MiB for a second and ends normally;
    the curve rises and stays flat below the line.
    """),
    code("""
    %%container --memory 100m --memory-swap 100m --plot
    import time
    data = [bytearray(10 << 20) for _ in range(6)]
    time.sleep(1)
    print("held", sum(map(len, data)) >> 20, "MiB")
    """),
    md("""
    ### Comparison runs

    A comma list runs the cell once per limit and overlays the curves. The cell allocates
    100 MiB: it fits only under the largest limit, so the cell fails (tagged
    `raises-exception`) after showing all three runs.
    """),
    code("""
    %%container --memory 50m,100m,200m --memory-swap -1 --plot
    import time
    chunks = []
    for i in range(10):
        chunks.append(bytearray(10 << 20))
        time.sleep(0.1)
    print("done: 100 MiB allocated")
    """, "raises-exception"),
    md("""
    ## CPU: a quota, measured

    `--cpus 0.5` sets the CFS bandwidth quota (`cpu.max` = `50000 100000` on v2,
    `cpu.cfs_quota_us`/`cpu.cfs_period_us` on v1). A busy loop inside then gets at most half a
    core: in each 100 ms period, once it has used 50 ms it is *throttled* until the next
    period. Measure it from inside, comparing CPU time to wall time:
    """),
    code("""
    %%container --cpus 0.5 -o share
    import time
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < 2:
        pass
    share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    print(f"used {share:.0%} of one core")
    """),
    md("""
    And from the host: the cgroup's `cpu.stat` counts the periods in which the group was
    throttled (`nr_throttled`) and for how long (`throttled_time` in ns on v1,
    `throttled_usec` on v2).
    """),
    code("""
    import time
    if CAN_RUN:
        c = Container(make_spec(["sh", "-c", "while :; do :; done"], image="busybox",
                                cpus=0.25)).start()
        try:
            time.sleep(1.5)
            stat_file = os.path.join(c.cgroup.paths.get("cpu", c.cgroup.paths.get("unified", "")),
                                     "cpu.stat")
            with open(stat_file) as f:
                print(stat_file + ":\\n" + f.read())
        finally:
            c.kill(); c.wait(); c.cleanup()
        assert share < 0.65, f"the quota should hold the loop near 50 %, got {share:.0%}"
    """),
    md("""
    ## A fork storm, contained

    `pids.max` limits the number of tasks (processes and threads) in the cgroup: `fork()`
    fails with `EAGAIN` once it is reached. The classic shell fork bomb `bomb() { bomb | bomb &
    }; bomb` would take a machine down without it; here it runs into the 40-task wall, its
    shells give up (`can't fork`) and the storm dies out. `--cpus 0.5` and `--timeout` are
    extra seat belts.
    """),
    code("""
    %%container --pids-limit 40 --cpus 0.5 --timeout 20 --image busybox sh
    bomb() { bomb | bomb & }
    bomb 2>/tmp/errors
    # While the bomb holds the tasks the cgroup allows, this shell's own forks can fail too:
    # it tries again until one gets a free task (the bomb's processes come and go).
    until sleep 2; do :; done 2>/dev/null
    until failures=$(grep -c "can't fork" /tmp/errors || true); do :; done 2>/dev/null
    echo "fork failures: $failures"
    until tasks=$(ls /proc | grep -c '^[0-9]'); do :; done 2>/dev/null
    echo "tasks left in the container: $tasks"
    """),
    md("""
    The same, counted exactly: a Python loop forks until the kernel says no.
    """),
    code("""
    %%container --pids-limit 20 -o started
    import os, time
    started, children = 0, []
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                time.sleep(1)
                os._exit(0)
            children.append(pid)
            started += 1
    except BlockingIOError as err:
        print(f"fork number {started + 1} failed: {err}")
    for pid in children:
        os.waitpid(pid, 0)
    print(f"{started} children started under --pids-limit 20")
    """),
    code("""
    if CAN_RUN:
        # 20 tasks: the Python process itself and 19 children (nbcontainer's helper stays outside).
        assert started < 20
    """),
    md("""
    ## How Docker uses cgroups

    Docker (through containerd and runc) does what you just saw, with the same files:

    | `docker run` flag | cgroup v2 file | cgroup v1 file |
    | --- | --- | --- |
    | `--memory 100m` | `memory.max` | `memory.limit_in_bytes` |
    | `--memory-swap 200m` | `memory.swap.max` (= 200m − 100m) | `memory.memsw.limit_in_bytes` |
    | `--memory-reservation` | `memory.low` | `memory.soft_limit_in_bytes` |
    | `--cpus 0.5` | `cpu.max` = `50000 100000` | `cpu.cfs_quota_us` / `cpu.cfs_period_us` |
    | `--cpu-shares 512` | `cpu.weight` (mapped) | `cpu.shares` |
    | `--cpuset-cpus 0-1` | `cpuset.cpus` | `cpuset.cpus` |
    | `--pids-limit 100` | `pids.max` | `pids.max` |
    | `docker pause` | `cgroup.freeze` | `freezer.state` |

    Where: with the systemd cgroup driver (the default on v2) each container is a scope,
    `/sys/fs/cgroup/system.slice/docker-<id>.scope`; with the cgroupfs driver it is
    `/sys/fs/cgroup/docker/<id>` (v1: one such directory per controller). `docker stats` reads
    `memory.current`/`memory.stat`, `cpu.stat` and `pids.current` from there, and
    `docker inspect`'s `OOMKilled` comes from the `oom_kill` counter. Kubernetes requests and
    limits end up in the same files, one level down: `kubepods.slice/<qos>/<pod>/<container>`.

    nbcontainer puts a container's cgroup under its *supervisor's own* cgroup
    (`<own>/nbcontainer/<id>`): a notebook kernel that a JupyterHub spawner limited to 2 GiB
    can never give its containers more than those 2 GiB in total.
    """),
    md("""
    ## Exercise

    Pick a `--memory` limit under which allocating 120 MiB succeeds, yet is no more than twice
    that. Remember that the interpreter itself needs some memory too. (A working answer is
    filled in so the notebook runs unattended; change it and see when it fails.)
    """),
    code("""
    my_limit = "160m"
    """),
    code("""
    from nbcontainer.spec import parse_memory
    if CAN_RUN:
        import sys
        result, out = course.run_capture(
            [sys.executable, "-c", "x = bytearray(120 << 20); print('allocated 120 MiB')"],
            memory=my_limit, memory_swap=my_limit)
        print(out.strip(), "|", result.describe())
        assert result.exit_code == 0, f"under {my_limit} the allocation failed: {result.describe()}"
        assert parse_memory(my_limit) <= 240 << 20, "that limit is more than twice 120 MiB"
        print("correct: peak", result.memory_peak >> 20, "MiB under", my_limit)
    """),
    md(f"""
    ## Further reading

    {man('cgroups')}, {man('cgroup_namespaces')}, the kernel's
    [cgroup v2 documentation](https://docs.kernel.org/admin-guide/cgroup-v2.html) and
    [v1 memory controller](https://docs.kernel.org/admin-guide/cgroup-v1/memory.html),
    [CFS bandwidth control](https://docs.kernel.org/scheduler/sched-bwc.html),
    Docker's [resource constraints](https://docs.docker.com/engine/containers/resource_constraints/).
    Next: [03-union-filesystems](03-union-filesystems.ipynb).
    """),
]

# --------------------------------------------------------------------------------------------
# 03 union filesystems
# --------------------------------------------------------------------------------------------

OVERLAY_DOC = "https://docs.kernel.org/filesystems/overlayfs.html"

NB03 = [
    md(f"""
    # 3. Union filesystems: overlayfs

    An image is a stack of read-only layers; a container must be able to write anyway, and a
    hundred containers of one image must not need a hundred copies of it. A **union mount**
    solves both: it shows several directories merged into one, reads fall through to the
    read-only layers, and writes go to a private writable layer on top. Docker first used AUFS;
    today's kernels ship **overlayfs** ([kernel documentation]({OVERLAY_DOC})):

    ```
    mount -t overlay overlay -o lowerdir=L2:L1,upperdir=U,workdir=W MERGED
    ```

    * `lowerdir` — one or more read-only layers, **top first** (`L2` wins over `L1`);
    * `upperdir` — the writable layer: every change made through `MERGED` lands here;
    * `workdir` — an empty scratch directory on the same filesystem as `upperdir`, used to
      make copy-up and whiteout creation atomic;
    * `MERGED` — the union view. A container's `/` is exactly this.

    Overlay mounts need `CAP_SYS_ADMIN` in the mount's namespace ({man('mount', 8)},
    {man('mount_namespaces')}); we do everything inside a `--privileged` container, so no mount
    can ever appear on the host.
    """),
    check_cell(),
    md("""
    ## Overlay by hand

    Inside a privileged container: a small tmpfs as scratch space (an overlay's upper directory
    cannot itself be on an overlay, and the container's `/` is one), a lower layer with a few
    files, then the mount. After each step we look at the directories.
    """),
    code("""
    %%container --privileged sh
    set -e
    mkdir -p /tmp/ov && mount -t tmpfs ov /tmp/ov && cd /tmp/ov
    mkdir lower upper work merged
    echo "original, from the lower layer" > lower/a.txt
    echo "doomed" > lower/b.txt
    mkdir lower/dir && echo "old" > lower/dir/old.txt
    mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged

    show() { echo "--- $1"; for d in lower upper merged; do printf '%-8s' "$d:"; (cd $d && find . -mindepth 1 | sort | tr '\\n' ' '); echo; done; }
    show "just mounted: merged shows the lower layer, upper is empty"

    echo "new" > merged/new.txt
    show "a new file goes to upper only"

    echo "appended" >> merged/a.txt
    show "writing a lower file copies it up first (copy-up)"
    echo "lower/a.txt: $(cat lower/a.txt | tr '\\n' ' ')"
    echo "upper/a.txt: $(cat upper/a.txt | tr '\\n' ' ')"

    rm merged/b.txt
    show "deleting a lower file leaves a whiteout in upper"
    ls -l upper/b.txt
    echo "(a character device with device number 0,0 is overlayfs's whiteout)"

    rm -r merged/dir && mkdir merged/dir && echo "fresh" > merged/dir/new.txt
    show "a directory deleted and re-created becomes opaque"
    python3 -c "import os; print('trusted.overlay.opaque =', os.getxattr('upper/dir', 'trusted.overlay.opaque'))"
    echo "merged/dir: $(ls merged/dir)   <- lower/dir/old.txt is hidden by the opaque marker"

    umount merged
    echo "--- unmounted: the lower layer never changed:"; find lower -type f | sort | xargs head
    mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged
    echo "--- mounted again on the same upper: the changes are back: $(ls merged | tr '\\n' ' ')"
    """),
    md("""
    Three rules cover everything overlayfs does:

    1. **Lookup** goes top down: upper first, then each lower layer; the first match wins.
    2. **Copy-up**: the first write to a lower file copies the whole file into upper (a 1 GiB
       file costs 1 GiB on its first one-byte change), then the write goes to the copy.
    3. **Deletion** cannot touch a read-only layer, so it is recorded in upper: a *whiteout*
       (a 0/0 character device with the deleted name) hides a file or directory; an *opaque*
       directory (`trusted.overlay.opaque="y"`) hides everything below it in the lower layers.

    Layer tarballs in Docker and OCI images record the same two facts as files named
    `.wh.NAME` and `.wh..wh..opq`; nbcontainer turns them into whiteouts and opaque
    directories when it imports a layer, and back when it saves one (see
    [05-images-and-layers](05-images-and-layers.ipynb)).

    ## Several lower layers: who wins
    """),
    code("""
    %%container --privileged sh
    mkdir -p /tmp/ov && mount -t tmpfs ov /tmp/ov && cd /tmp/ov
    mkdir bottom top upper work merged
    echo "from bottom" > bottom/same.txt; echo "only in bottom" > bottom/b.txt
    echo "from top" > top/same.txt;       echo "only in top" > top/t.txt
    mount -t overlay overlay -o lowerdir=top:bottom,upperdir=upper,workdir=work merged
    head merged/*
    """),
    md("""
    ## A real container's upper directory, seen from the host

    A container's root is exactly such a mount: its image's layers below, and an upper
    directory of its own in the store (`<store>/containers/<id>/upper`). We run a container
    that changes a few things and keep it after it ends (`keep=True`), then read its upper
    directory *from the host*:
    """),
    code("""
    import os, stat, tempfile
    from nbcontainer import Container, make_spec
    from nbcontainer.runtime import manage

    SCRIPT = '''
    echo hello > /root/hello.txt                                    # a new file
    echo "guest:x:1000:1000::/home/guest:/bin/sh" >> /etc/passwd   # copy-up of a lower file
    rm /bin/vi                                                      # delete a lower file
    rm -r /home && mkdir /home && touch /home/fresh                 # replace a lower directory
    ls /bin/vi 2>&1 || true                                         # inside: it is gone
    '''

    def describe_upper(upper):
        rows = []
        for dirpath, dirnames, filenames in os.walk(upper):
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                rel = os.path.relpath(path, upper)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    kind = "whiteout (char 0/0): deleted"
                elif stat.S_ISDIR(st.st_mode):
                    try:
                        opaque = os.getxattr(path, "trusted.overlay.opaque") == b"y"
                    except OSError:
                        opaque = False
                    kind = "directory, OPAQUE (replaced)" if opaque else "directory"
                else:
                    kind = f"file, {st.st_size} bytes"
                rows.append((rel, kind))
        return sorted(rows)

    if CAN_RUN:
        log = tempfile.TemporaryFile()
        c = Container(make_spec(["sh", "-c", SCRIPT], image="busybox"), keep=True,
                      stdout=log, stderr=log).start()
        try:
            print("the container", c.wait().describe())
            log.seek(0); print("it said:", log.read().decode().strip()); log.close()
            print("\\nits upper directory on the host,", c.upper_dir)
            for rel, kind in describe_upper(c.upper_dir):
                print(f"  {rel:<22} {kind}")
            print("\\nupper/etc/passwd holds the whole copied-up file:")
            print((c.upper_dir / "etc/passwd").read_text())
        finally:
            manage.remove(c.id, force=True)
    """),
    md("""
    Everything the container did is in those few entries; the busybox layer itself is
    untouched and still shared with every other busybox container. `nbcontainer commit`
    ([05-images-and-layers](05-images-and-layers.ipynb)) is nothing more than "turn this upper
    directory into a layer".

    ## Exercise

    A container runs `rm /bin/ls /bin/cat; echo hi > /bin/hello`. Which paths of its upper
    directory are whiteouts? Write them relative to the upper directory (e.g. `"bin/ls"`).
    (Filled in so the notebook runs unattended: clear it and predict first.)
    """),
    code("""
    my_whiteouts = {"bin/ls", "bin/cat"}
    """),
    code("""
    if CAN_RUN:
        c = Container(make_spec(["sh", "-c", "rm /bin/ls /bin/cat; echo hi > /bin/hello"],
                                image="busybox"), keep=True).start()
        try:
            c.wait()
            actual = {rel for rel, kind in describe_upper(c.upper_dir) if kind.startswith("whiteout")}
        finally:
            manage.remove(c.id, force=True)
        print("whiteouts:", sorted(actual))
        assert my_whiteouts == actual, f"not quite: the whiteouts are {sorted(actual)}"
        print("correct")
    """),
    md(f"""
    ## Further reading

    The kernel's [overlayfs documentation]({OVERLAY_DOC}) (whiteouts, opaque directories,
    `redirect_dir`, `metacopy`, `index`), {man('mount', 8)}, {man('mount_namespaces')},
    {man('xattr')}, the OCI image spec's
    [layer changesets](https://github.com/opencontainers/image-spec/blob/main/layer.md).
    Next: [04-write-your-own-union-fs](04-write-your-own-union-fs.ipynb).
    """),
]

# --------------------------------------------------------------------------------------------
# 04 write your own union fs
# --------------------------------------------------------------------------------------------

NB04 = [
    md(f"""
    # 4. Write your own union filesystem

    The classic "write your own Docker" notes had a chapter, *write your own AUFS*, that was
    never written. Here it is, for overlayfs: we assemble a root filesystem from layers that we
    make by hand, in three steps.

    1. **In user space**: a union lookup in a few lines of Python, with whiteouts and opaque
       directories — the rules of [03-union-filesystems](03-union-filesystems.ipynb) as code.
    2. **In the kernel**: the same layers mounted with nbcontainer's low-level
       `nbcontainer.child.rootfs.mount_overlay`, the function every container's root goes through,
       and a shell started in the result with `chroot`. Our union and the kernel's must agree.
    3. **As an image**: the layers stored in nbcontainer's content-addressed store, and a real
       container run on them.

    Links: [overlayfs]({OVERLAY_DOC}), {man('pivot_root', 2)}, {man('chroot', 2)},
    {man('mount_namespaces')}.
    """),
    check_cell(),
    md("""
    ## The layers

    Three directories on the host, bottom to top:

    * `base` — a busybox binary and a few applet links, `/etc/passwd`, `/etc/issue`,
      `/etc/motd`, `/etc/skel/.profile`;
    * `config` — a new `/etc/motd` (overrides base's) and a **whiteout** for `/etc/issue`
      (a 0/0 character device: "this file is deleted");
    * `app` — `/app/hello.sh`, and an **opaque** `/etc/skel` that hides base's.
    """),
    code("""
    import os, shutil, stat, tempfile
    from pathlib import Path

    APPLETS = ["sh", "ls", "cat", "echo", "hostname", "id", "ps", "tail", "wc", "test", "sleep"]
    BUSYBOX = shutil.which("busybox") or "/bin/busybox"
    LAYERS = Path(tempfile.mkdtemp(prefix="course-layers-"))

    def make_layers(top):
        base, config, app = (top / n for n in ("base", "config", "app"))
        (base / "bin").mkdir(parents=True)
        if os.path.exists(BUSYBOX):
            shutil.copy2(BUSYBOX, base / "bin" / "busybox")
        for applet in APPLETS:
            os.symlink("busybox", base / "bin" / applet)
        for d in ("etc/skel", "proc", "sys", "dev", "tmp", "root"):
            (base / d).mkdir(parents=True)
        (base / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\\n")
        (base / "etc/issue").write_text("Base OS 1.0\\n")
        (base / "etc/motd").write_text("motd from the base layer\\n")
        (base / "etc/skel/.profile").write_text("# base profile\\n")

        (config / "etc").mkdir(parents=True)
        (config / "etc/motd").write_text("motd from the config layer\\n")
        if CAN_RUN:  # mknod of a device needs root
            os.mknod(config / "etc/issue", stat.S_IFCHR | 0o000, os.makedev(0, 0))

        (app / "app").mkdir(parents=True)
        (app / "app/hello.sh").write_text(
            "#!/bin/sh\\necho \\"hello from the app layer: I am $(id -un) on $(hostname)\\"\\n")
        os.chmod(app / "app/hello.sh", 0o755)
        (app / "etc/skel").mkdir(parents=True)
        (app / "etc/skel/.apprc").write_text("# app rc\\n")
        if CAN_RUN:  # trusted.* xattrs need root
            os.setxattr(app / "etc/skel", "trusted.overlay.opaque", b"y")
        return [base, config, app]   # bottom first

    layer_dirs = make_layers(LAYERS)
    for layer in layer_dirs:
        files = sorted(str(p.relative_to(layer)) for p in layer.rglob("*") if not p.is_dir())
        print(f"{layer.name:<7}", " ".join(files))
    """),
    md("""
    ## Step 1: a union in user space

    `union_tree(layers)` walks the layers **top first**, exactly as overlayfs looks a name up:
    the first layer that has a name decides it; a whiteout hides the name in every layer
    below; a directory merges with the same directory in the layers below the one that has it
    — unless it is opaque, then the walk stops there.
    """),
    code("""
    def is_whiteout(path):
        st = os.lstat(path)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

    def is_opaque(path):
        try:
            return os.getxattr(path, "trusted.overlay.opaque") == b"y"
        except OSError:
            return False

    def union_tree(layers, rel=""):
        # The merged view below directory `rel` of `layers` (top first): {path: what it is}.
        decided, hidden = {}, set()        # name -> (index of the layer that decides it, path)
        for i, layer in enumerate(layers):
            d = os.path.join(layer, rel)
            if not os.path.lexists(d):
                continue                   # this layer has nothing here: look further down
            if not os.path.isdir(d) or os.path.islink(d) or is_whiteout(d):
                break                      # a file or a whiteout hides the directories below
            for name in sorted(os.listdir(d)):
                if name in decided or name in hidden:
                    continue               # a higher layer already decided this name
                path = os.path.join(d, name)
                if is_whiteout(path):
                    hidden.add(name)       # deleted: hidden in every layer below
                else:
                    decided[name] = (i, path)
            if rel and is_opaque(d):
                break                      # opaque: the layers below are not looked at
        tree = {}
        for name, (i, path) in sorted(decided.items()):
            sub = os.path.join(rel, name)
            if os.path.islink(path):
                tree[sub] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                tree[sub] = "dir"
                tree.update(union_tree(layers[i:], sub))   # merge with the layers from i down
            else:
                with open(path, "rb") as f:
                    tree[sub] = f.read(60).decode(errors="replace").strip()
        return tree

    top_first = [str(p) for p in reversed(layer_dirs)]
    python_view = union_tree(top_first)
    for path, what in python_view.items():
        if not path.startswith("bin/"):
            print(f"/{path:<20} {what}")
    """),
    md("""
    ## Step 2: the kernel does it — `nbcontainer.child.rootfs.mount_overlay`

    `mount_overlay(container_dir, layers)` (it returns the merged directory, and whether the
    layers are idmapped: see lesson 01's user namespaces) is what every nbcontainer container's root goes
    through: it makes short symlinks `l/0..N` to the layers (so even 500 layer paths fit in the
    one page that `mount(2)` options may use) and mounts
    `lowerdir=l/2:l/1:l/0,upperdir=upper,workdir=work` on `container_dir/merged`.
    It must run in a private mount namespace, so we call it inside a `--privileged` container,
    with our layers bound in read-only (`-v`), and bring the merged tree back with `-o`:
    """),
    code("""
    %%container --privileged -v {LAYERS}:/layers:ro -o kernel_view,chroot_output
    import os, subprocess
    from nbcontainer._libc import mount
    from nbcontainer.child.rootfs import mount_overlay

    os.makedirs("/tmp/c")
    mount("tmpfs", "/tmp/c", "tmpfs", 0, "size=16m")   # upper and work must not be on an overlay
    os.makedirs("/tmp/c/upper"); os.makedirs("/tmp/c/work")
    merged, _ = mount_overlay("/tmp/c", ["/layers/base", "/layers/config", "/layers/app"])  # bottom first
    print("mounted:", next(l for l in open("/proc/self/mounts") if merged in l).strip())

    kernel_view = {}
    for dirpath, dirnames, filenames in os.walk(merged):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, merged)
            if os.path.islink(path):
                kernel_view[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                kernel_view[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    kernel_view[rel] = f.read(60).decode(errors="replace").strip()

    # A root filesystem is just a directory: start a shell in it.
    chroot_output = subprocess.run(
        ["chroot", merged, "/bin/sh", "-c",
         "cat /etc/motd; echo /etc: $(ls -A /etc); echo /etc/skel: $(ls -A /etc/skel); /app/hello.sh"],
        capture_output=True, text=True).stdout
    print(chroot_output)
    """),
    code("""
    if CAN_RUN:
        differ = {k for k in set(python_view) | set(kernel_view)
                  if python_view.get(k) != kernel_view.get(k)}
        print(len(kernel_view), "entries; differences between our union and the kernel's:",
              sorted(differ) or "none")
        assert not differ
        assert "etc/issue" not in kernel_view
        assert kernel_view["etc/motd"] == "motd from the config layer"
    """),
    md("""
    ## Step 3: make it an image and run a container on it

    nbcontainer's store keeps each layer once, named by the sha256 of its tar (the OCI
    `diff_id`). `publish_tree` writes a directory in overlay form as a layer tar (whiteouts
    become `.wh.` entries, opaque directories `.wh..wh..opq`) and unpacks that tar into the
    store with the safe extractor. An image record is then just the ordered list of diff_ids
    plus a config (`nbcontainer/images/store.py`).
    """),
    code("""
    from nbcontainer.images.snapshot import image_id, publish_tree
    from nbcontainer.images.store import HistoryEntry, ImageRecord, ImageStore, now_iso

    def store_image(name, dirs, cmd):
        store = ImageStore()
        with store.lock():   # shared: nothing may collect our layers before the record names them
            metas = [publish_tree(store, d, f"course: the {Path(d).name} layer, made by hand")
                     for d in dirs]
            record = ImageRecord(
                name=name, tag="latest", id="", created=now_iso(), cmd=cmd,
                layers=[m.diff_id for m in metas],
                history=[HistoryEntry(created=m.created, created_by=m.created_by, size=m.size)
                         for m in metas])
            record.id = image_id(record)
            store.put_image(record)
        return record

    if CAN_RUN:
        handmade = store_image("handmade", layer_dirs, ["/app/hello.sh"])
        print("image", handmade.ref, handmade.id)
        for diff_id in handmade.layers:
            print("  layer", diff_id)
    """),
    code("""
    %container history handmade
    """),
    md("Run it — a real container now: its own namespaces, cgroup, `/proc`, and `pivot_root`:"),
    code("""
    %%container --image handmade --hostname handmade sh
    /app/hello.sh
    cat /etc/motd
    echo "/etc: $(ls -A /etc) | /etc/skel: $(ls -A /etc/skel)"
    echo "PID $$; processes: $(ps | tail -n +2 | wc -l)"
    """),
    md("""
    From the host, the container's root is an overlay whose lower layers are the store's layer
    directories, reached through the short `l/N` links. On a network (the default) one more,
    tiny layer sits on top: the container's *init layer*, empty files that serve as mount points
    for its own `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (Docker's `-init` layer), so
    that they never land in the container's upper layer, and never in a `commit`:
    """),
    code("""
    from nbcontainer import Container, make_spec
    from nbcontainer.images import resolve
    if CAN_RUN:
        c = Container(make_spec(["sleep", "30"], image="handmade")).start()
        try:
            with open(f"/proc/{c.pid}/mountinfo") as f:
                root_mount = next(line for line in f if line.split()[4] == "/")
            print("overlay:", root_mount.split(" - ")[1].strip())
            links = sorted((c.dir / "l").iterdir(), key=lambda p: int(p.name))
            for link in links:
                print(f"  l/{link.name} -> {os.readlink(link)}")
            targets = [os.readlink(l) for l in links]
            assert targets[:-1] == list(resolve("handmade").layers)
            assert targets[-1] == str(c.dir / "init")  # the init layer, on top
        finally:
            c.kill(); c.wait(); c.cleanup()
    """),
    md("""
    ## Exercise

    Make a fourth layer, `patch`, so that on top of the other three:

    * `/etc/motd` no longer exists, and
    * `/bin/greet` is a script that prints `hi`.

    The check verifies it with your `union_tree`, then builds an image `handmade-patched` from
    the four layers and runs a real container on it. (A solution is filled in so the notebook
    runs unattended: delete it and write your own first.)
    """),
    code("""
    def make_patch(patch):
        (patch / "etc").mkdir(parents=True)
        os.mknod(patch / "etc/motd", stat.S_IFCHR, os.makedev(0, 0))      # a whiteout
        (patch / "bin").mkdir()
        (patch / "bin/greet").write_text("#!/bin/sh\\necho hi\\n")
        os.chmod(patch / "bin/greet", 0o755)
    """),
    code("""
    if CAN_RUN:
        patch = LAYERS / "patch"
        shutil.rmtree(patch, ignore_errors=True)
        make_patch(patch)
        view = union_tree([str(patch)] + top_first)
        assert "etc/motd" not in view, "union_tree still sees /etc/motd"
        store_image("handmade-patched", layer_dirs + [patch], ["/bin/greet"])
        result, out = course.run_capture(["sh", "-c", "test ! -e /etc/motd && /bin/greet"],
                                         image="handmade-patched")
        print(out.strip(), "|", result.describe())
        assert result.exit_code == 0 and out.strip() == "hi"
        print("correct")
    """),
    md("Clean up: remove the two images (their layers go with them) and the layer directories."),
    code("""
    if CAN_RUN:
        %container rmi handmade handmade-patched
    shutil.rmtree(LAYERS, ignore_errors=True)
    """),
    md(f"""
    ## Further reading

    [overlayfs]({OVERLAY_DOC}); `nbcontainer/child/rootfs.py` (the whole recipe: private
    propagation, overlay, volumes, `/proc`, `/sys`, `/dev`, `pivot_root`, masked paths);
    {man('pivot_root', 2)} and why runtimes prefer it to {man('chroot', 2)}; the
    [OCI image layer spec](https://github.com/opencontainers/image-spec/blob/main/layer.md).
    Next: [05-images-and-layers](05-images-and-layers.ipynb).
    """),
]

# --------------------------------------------------------------------------------------------
# 05 images and layers
# --------------------------------------------------------------------------------------------

NB05 = [
    md(f"""
    # 5. Images and layers

    An **image** is an ordered stack of read-only layers plus a small config (environment,
    default command, working directory, history). Each layer is a directory tree stored once,
    named by the sha256 of its uncompressed tar (the OCI `diff_id`), and shared by every image
    that uses it. A container is that stack mounted as overlay lower layers, with a private
    upper layer on top ([03-union-filesystems](03-union-filesystems.ipynb)).

    This notebook builds the classic example, looks at its history, sees the base layer
    shared, commits a container into an image, and saves an image in the OCI format that
    Docker, Podman and skopeo read. The store's layout is described in `docs/images.md`.
    """),
    check_cell('extra={"skopeo": __import__("shutil").which("skopeo") is not None}'),
    md("""
    ## Build: one small layer on a shared base

    `%%containerfile NAME` builds an image from the Containerfile in the cell (the build
    context is this notebook's directory). `RUN` runs `/bin/sh -c ...` in a container on the
    image built so far; whatever that container wrote — its overlay **upper directory** — is
    stored as a new layer.
    """),
    code("""
    %%containerfile changed-busybox
    FROM busybox
    RUN echo "Hello world" > /tmp/newfile
    """),
    code("""
    %container history changed-busybox
    """),
    md("""
    The RUN step added one layer holding `tmp/` and `tmp/newfile`: 12 bytes of content. The
    busybox layer below is the very same layer (same diff_id, one directory in the store) in
    both images — `images` lists it as SHARED:
    """),
    code("""
    %container images
    """),
    code("""
    import os, subprocess
    from nbcontainer.images import resolve
    if CAN_RUN:
        base, changed = resolve("busybox"), resolve("changed-busybox")
        print("busybox layers:        ", [os.path.basename(os.path.dirname(l))[:12] for l in base.layers])
        print("changed-busybox layers:", [os.path.basename(os.path.dirname(l))[:12] for l in changed.layers])
        assert changed.layers[0] == base.layers[0]
        top = changed.layers[-1]
        print("\\nthe new layer on the host,", top)
        print(subprocess.run(["find", ".", "-ls"], cwd=top, capture_output=True, text=True).stdout)
    """),
    md("Building again changes nothing: every step is served by the build cache."),
    code("""
    %%containerfile changed-busybox
    FROM busybox
    RUN echo "Hello world" > /tmp/newfile
    """),
    code("""
    %%container --image changed-busybox sh
    cat /tmp/newfile
    """),
    md("""
    ## Commit: a container's changes as an image

    `commit` does by hand what each `RUN` does: it freezes the container (cgroup freezer),
    turns its upper directory into a layer — a deleted file becomes a `.wh.` whiteout in the
    layer tar — and stores an image of the container's image's layers plus that one.
    A named container (`--name`) lives across cells:
    """),
    code("""
    %%container --name course-commit --image busybox sh
    echo "made in a container" > /root/note
    rm /bin/vi
    """),
    code("""
    %container commit course-commit committed-busybox -m "a note, and no vi"
    """),
    code("""
    %container history committed-busybox
    """),
    code("""
    %%container --image committed-busybox sh
    cat /root/note
    ls /bin/vi 2>&1 || echo "(vi is gone in the committed image too: its whiteout is a layer entry)"
    """),
    code("""
    %container rm -f course-commit
    """),
    md("""
    ## Save: an OCI image layout, inspected with skopeo

    `save` writes an [OCI image-layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
    tarball: `oci-layout`, `index.json` → a manifest → a config (env, cmd, `rootfs.diff_ids`,
    history) and one gzipped tar per layer, every file named by its sha256.
    """),
    code("""
    import tempfile
    OCI_TAR = os.path.join(tempfile.mkdtemp(prefix="course-oci-"), "changed-busybox.tar")
    """),
    code("""
    %container save changed-busybox -o {OCI_TAR}
    """),
    code("""
    import json, shutil, tarfile
    if CAN_RUN:
        if shutil.which("skopeo"):
            inspected = subprocess.run(["skopeo", "inspect", f"oci-archive:{OCI_TAR}"],
                                       capture_output=True, text=True)
            print(inspected.stdout or inspected.stderr)
        else:
            print("skopeo is not installed (apt-get install skopeo); reading the tarball directly")
        with tarfile.open(OCI_TAR) as tar:
            print("files:", sorted(tar.getnames()))
            blob = lambda digest: json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))
            manifest = blob(json.load(tar.extractfile("index.json"))["manifests"][0]["digest"])
            config = blob(manifest["config"]["digest"])
        for layer in manifest["layers"]:
            print(f"layer {layer['digest'][:19]}  {layer['size']:>8} bytes  {layer['mediaType']}")
        print("diff_ids:", config["rootfs"]["diff_ids"])
    """),
    md("""
    The `layers` digests are of the *compressed* blobs; the config's `diff_ids` are of the
    uncompressed tars — the names the layers have in nbcontainer's store (a layer is re-tarred
    deterministically on save). `nbcontainer import` reads this format back, as well as
    `docker save` tarballs.

    ## Exercise

    How many layers does this Containerfile produce? (`ENV`, `CMD` and a `RUN` that changes
    nothing add history entries but no layer, as in Docker.) The answer is filled in so the
    notebook runs unattended; predict before you look.

    ```
    FROM busybox
    ENV GREETING=hi
    RUN echo $GREETING > /greeting
    RUN true
    CMD cat /greeting
    ```
    """),
    code("""
    my_layer_count = 2
    """),
    code("""
    EXERCISE = '''
    FROM busybox
    ENV GREETING=hi
    RUN echo $GREETING > /greeting
    RUN true
    CMD cat /greeting
    '''
    if CAN_RUN:
        from nbcontainer.building.build import build_from_text
        build_from_text(EXERCISE, "course-exercise", ".", out=lambda line: None)
        layers = resolve("course-exercise").layers
        print("layers:", len(layers))
        assert my_layer_count == len(layers), f"not quite: it has {len(layers)} layers"
        print("correct")
    """),
    md("Clean up the images and the tarball:"),
    code("""
    if CAN_RUN:
        %container rmi changed-busybox committed-busybox course-exercise
    shutil.rmtree(os.path.dirname(OCI_TAR), ignore_errors=True)
    """),
    md(f"""
    ## Further reading

    `docs/images.md` (the store, build, commit and how import stays inside the store); the OCI
    [image spec](https://github.com/opencontainers/image-spec) (manifest, config, layers,
    image layout); [skopeo](https://github.com/containers/skopeo) and
    [umoci](https://github.com/opencontainers/umoci).
    Next: [06-container-kernel](06-container-kernel.ipynb).
    """),
]


# --------------------------------------------------------------------------------------------
# 06 the container kernel
# --------------------------------------------------------------------------------------------

NB06 = [
    md("""
    # 6. The container kernel

    The `%%container` magic runs *one cell* in a container. The **container kernel** runs a
    whole notebook in one: a kernelspec whose cells all execute inside a container created
    with the run options of the kernelspec when the kernel starts. A *profile* is simply one
    kernelspec per set of options ("Python 3 (container, 512 MiB)", "... no network", ...).

    How it works (`nbcontainer/kernel/`): Jupyter starts a small relay process on the host;
    the relay creates the container, runs a stock ipykernel *inside* it and forwards the
    Jupyter protocol. Because the relay lives outside, it survives the container: when the
    container is OOM-killed, the running cell ends with an error that says so, the kernel stays
    up, and the next cell runs in a fresh container (its Python state is lost, and said so).

    This notebook installs two profiles into a temporary directory and drives a container
    kernel from here with `jupyter_client`, the library JupyterLab and nbclient use.
    """),
    check_cell('extra={"container kernel": __import__("importlib.util").util.find_spec("nbcontainer.kernel") is not None}'),
    md("## Profiles are kernelspecs"),
    code("""
    import json, os, subprocess, sys, tempfile
    PREFIX = tempfile.mkdtemp(prefix="course-kernels-")
    KERNEL_DIR = os.path.join(PREFIX, "share", "jupyter", "kernels")
    env = {**os.environ, "JUPYTER_PATH": os.path.join(PREFIX, "share", "jupyter")}

    def nbcontainer_cli(*args):
        done = subprocess.run([sys.executable, "-m", "nbcontainer", *args], env=env,
                              capture_output=True, text=True)
        print(done.stdout + done.stderr)
        return done.returncode

    if CAN_RUN:
        nbcontainer_cli("kernel", "install", "--prefix", PREFIX, "--name", "course-256m",
                        "--display-name", "Python 3 (container, 256 MiB)",
                        "--memory", "256m", "--memory-swap", "256m")
        nbcontainer_cli("kernel", "install", "--prefix", PREFIX, "--name", "course-nonet",
                        "--display-name", "Python 3 (container, no network)", "--net", "none")
        nbcontainer_cli("kernel", "list")
        with open(os.path.join(KERNEL_DIR, "course-256m", "kernel.json")) as f:
            print(json.dumps({k: v for k, v in json.load(f).items() if k != "metadata"}, indent=1))
    """),
    md("""
    On a real installation you would run, once, as root (or with `--sys-prefix` in the hub's
    environment):

    ```
    nbcontainer kernel install --name c512 --display-name "Python 3 (container, 512 MiB)" -m 512m
    ```

    and pick *Python 3 (container, 512 MiB)* in JupyterLab's launcher.

    ## Start a container kernel and run cells in it

    `run_cell` sends an `execute_request` and shows what comes back on IOPub: text, errors, and
    the per-cell memory plot the kernel draws on the host side.
    """),
    code("""
    import atexit, base64
    from IPython.display import Image, display
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    def start(name):
        km = KernelManager(kernel_name=name,
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[KERNEL_DIR]))
        km.start_kernel(env=env)
        atexit.register(lambda: km.has_kernel and km.shutdown_kernel(now=True))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        return km, kc

    def show(msg):
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            print(content["text"], end="")
        elif kind in ("execute_result", "display_data", "update_display_data"):
            if "image/png" in content["data"]:
                display(Image(data=base64.b64decode(content["data"]["image/png"])))
            elif "text/plain" in content["data"]:
                print(content["data"]["text/plain"])
        elif kind == "error":
            print(f"[error in the container kernel] {content['ename']}: {content['evalue']}")

    def run_cell(kc, code, timeout=120):
        reply = kc.execute_interactive(code, output_hook=show, timeout=timeout)
        return reply["content"]

    if CAN_RUN:
        km, kc = start("course-256m")
        print("kernel ready")
    """),
    code("""
    if CAN_RUN:
        run_cell(kc, '''
    import os, socket
    print("hostname:", socket.gethostname(), "| my PID:", os.getpid(), "| PID 1 is:", open("/proc/1/comm").read().strip())
    x = 42
    ''')
        run_cell(kc, "!echo shell escapes run inside too: $(hostname); ps -e")
    """),
    md("From the host, the kernel's container is an ordinary nbcontainer container:"),
    code("""
    if CAN_RUN:
        nbcontainer_cli("ps")
    """),
    md("""
    ## An OOM kill that the kernel survives

    The next cell allocates 400 MiB in a 256 MiB kernel. The container is OOM-killed; the cell
    ends with an error naming the limit and the peak; the kernel answers the next cell, in a
    fresh container where `x` no longer exists.
    """),
    code("""
    if CAN_RUN:
        reply = run_cell(kc, "big = bytearray(400 << 20)")
        print("\\nreply status:", reply["status"])
        assert reply["status"] == "error"
    """),
    code("""
    if CAN_RUN:
        reply = run_cell(kc, '''
    print("still here, in a new container:", __import__("socket").gethostname())
    print("x" in globals() and x or "x is gone: the state went with the old container")
    ''')
        assert reply["status"] == "ok"
    """),
    code("""
    if CAN_RUN:
        kc.stop_channels()
        km.shutdown_kernel(now=False)     # removes the container, its cgroup and mounts
        nbcontainer_cli("ps")
    """),
    md("""
    ## Exercise

    Which profile has no network? Start the `course-nonet` kernel and check, from inside it,
    that the only network interface that is up is `lo` (a new network namespace may also hold
    fallback tunnel devices such as `tunl0`, which are down: see 01). Fill in the code to run
    inside the kernel (the answer is filled in so the notebook runs unattended).
    """),
    code("""
    my_code = ("import os; print(sorted(n for n in os.listdir('/sys/class/net') "
               "if int(open(f'/sys/class/net/{n}/flags').read(), 16) & 0x1))  # IFF_UP")
    """),
    code("""
    if CAN_RUN:
        km2, kc2 = start("course-nonet")
        try:
            lines = []
            kc2.execute_interactive(my_code, timeout=60, output_hook=lambda m: lines.append(
                m["content"].get("text", "")) if m["header"]["msg_type"] == "stream" else None)
            print("inside the kernel:", "".join(lines).strip())
            assert "".join(lines).strip() == "['lo']"
            print("correct")
        finally:
            kc2.stop_channels()
            km2.shutdown_kernel(now=False)
    """),
    code("""
    import shutil
    shutil.rmtree(PREFIX, ignore_errors=True)   # the temporary kernelspecs
    """),
    md("""
    ## Further reading

    SPEC section 5 (`../shared/SPEC.md` in the project) and `nbcontainer kernel install --help`;
    the [Jupyter messaging protocol](https://jupyter-client.readthedocs.io/en/latest/messaging.html);
    [kernelspecs](https://jupyter-client.readthedocs.io/en/latest/kernels.html#kernel-specs);
    `docs/deploy.md` for offering profiles to a class on JupyterHub.
    """),
]


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {
    "01-namespaces": NB01,
    "02-cgroups": NB02,
    "03-union-filesystems": NB03,
    "04-write-your-own-union-fs": NB04,
    "05-images-and-layers": NB05,
    "06-container-kernel": NB06,
}


def build(name: str, cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(cells):
        cell.id = f"{name[:2]}-{i:03d}"
    nb.cells = cells
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    names = argv or list(NOTEBOOKS)
    for name in names:
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name, NOTEBOOKS[name]), path)
        print("wrote", path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
