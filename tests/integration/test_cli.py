"""The ``nbcontainer`` command line as a user runs it: exit statuses, messages, lifecycle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "nbcontainer"]


def nbc(*args: str, input: str | None = None, timeout: float = 60,
        **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI and capture its output."""
    return subprocess.run([*CLI, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]


def test_run_passes_stdout_stderr_stdin_and_status():
    p = nbc("run", "busybox", "sh", "-c", "read x; echo out:$x; echo err >&2; exit 3",
            input="hello\n")
    assert p.returncode == 3
    assert p.stdout == "out:hello\n"
    assert p.stderr == "err\n"


@pytest.mark.parametrize("args, code", [
    (["busybox", "true"], 0),
    (["busybox", "sh", "-c", "exit 42"], 42),
    (["busybox", "no-such-command"], 127),
    (["busybox", "/etc/passwd"], 126),
    (["--init", "busybox", "sh", "-c", "kill -TERM $$"], 143),
    (["--timeout", "0.3", "busybox", "sleep", "10"], 124),
    (["-it", "busybox", "sh", "-c", "test \"$TERM\" = xterm"], 0),
])
def test_exit_statuses(args, code):
    assert nbc("run", *args).returncode == code


def test_oom_exit_137_with_a_sentence_naming_the_limit():
    p = nbc("run", "--memory", "50m", "host", sys.executable, "-c",
            "x = bytearray(300 * 1024 * 1024)")
    assert p.returncode == 137
    assert "memory limit of 50 MiB" in p.stderr
    assert "Traceback" not in p.stderr


def test_timeout_says_so():
    p = nbc("run", "--timeout", "0.2", "busybox", "sleep", "5")
    assert p.returncode == 124 and "timed out" in p.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--memory", "lots", "busybox", "true"], "--memory: invalid size"),
    (["--ns", "pid,nope", "busybox", "true"], "unknown namespace"),
    (["--cpus", "zero", "busybox", "true"], "--cpus"),
    (["--net", "a/b", "busybox", "true"], "--net"),
    (["-v", "/no/such/dir:/x", "busybox", "true"], "does not exist"),
    (["nosuchimage", "true"], "not found"),
    (["--bogus-flag", "busybox", "true"], "unrecognized arguments"),
    (["--pids-limit", "0", "busybox", "true"], "--pids-limit"),
    (["--cpuset-cpus", "999", "busybox", "true"], "CPU"),
    (["-u", "nosuchuser", "busybox", "true"], "unable to find user nosuchuser"),
    (["--cpus", "1000", "busybox", "true"], "the range of CPUs is from 0.01 to"),
    (["--memroy", "100m", "busybox", "true"], "did you mean --memory?"),
])
def test_bad_input_exits_125_with_one_sentence_and_creates_nothing(args, fragment):
    p = nbc("run", *args)
    assert p.returncode == 125, p.stderr
    assert fragment in p.stderr
    assert p.stderr.startswith("nbcontainer: ")
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_not_root_exits_125():
    p = subprocess.run([*CLI, "run", "busybox", "true"], capture_output=True, text=True,
                       user=65534, group=65534, env={"NBCONTAINER_ROOT": "/nonexistent",
                                                     "PATH": os.environ["PATH"]})
    assert p.returncode == 125
    assert "root" in p.stderr and "Traceback" not in p.stderr


def test_detached_lifecycle_ps_exec_logs_pause_stats_stop_rm():
    name = "cli-lifecycle"
    p = nbc("run", "-d", "--name", name, "--memory", "64m", "busybox", "sh", "-c",
            "echo started; trap 'exit 0' TERM; while true; do sleep 0.1; done")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    assert len(cid) == 12
    try:
        ps = nbc("ps")
        assert name in ps.stdout and cid in ps.stdout and "Up" in ps.stdout
        ex = nbc("exec", name, "sh", "-c", "echo $$ > /tmp/from-exec; hostname; cat /tmp/from-exec")
        assert ex.returncode == 0 and ex.stdout.split()[0] == name
        deadline = time.monotonic() + 30
        while "started" not in nbc("logs", name).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "started" in nbc("logs", name).stdout
        assert nbc("pause", name).returncode == 0
        assert "Paused" in nbc("ps").stdout
        assert nbc("exec", name, "true").returncode == 125
        assert nbc("unpause", name).returncode == 0
        st = nbc("stats", "--no-stream", name)
        assert st.returncode == 0 and "64 MiB" in st.stdout
        st = nbc("stats", "--count", "3", "--interval", "0.1", name)
        rows = st.stdout.strip().splitlines()
        assert st.returncode == 0 and rows[0].startswith("NAME") and len(rows) == 4
        assert all(row.startswith(name) for row in rows[1:])
        # 125 with a sentence, as every refusal of nbcontainer itself (SPEC section 3)
        assert nbc("rm", name).returncode == 125, "a running container is not removed without -f"
        t0 = time.monotonic()
        assert nbc("stop", name).returncode == 0
        assert time.monotonic() - t0 < 8
        ps = nbc("ps", "-a")
        assert "Exited (0)" in ps.stdout
        assert name not in nbc("ps").stdout
    finally:
        nbc("rm", "-f", name)
    assert name not in nbc("ps", "-a").stdout


def test_named_foreground_run_is_kept_until_rm():
    p = nbc("run", "--name", "kept", "busybox", "sh", "-c", "echo data > /kept.txt")
    assert p.returncode == 0
    try:
        assert "Exited (0)" in nbc("ps", "-a").stdout
        again = nbc("run", "--name", "kept", "busybox", "true")
        assert again.returncode == 125 and "already in use" in again.stderr
    finally:
        assert nbc("rm", "kept").returncode == 0


def test_rm_f_kills_a_running_detached_container():
    p = nbc("run", "-d", "--name", "doomed", "busybox", "sleep", "1000")
    assert p.returncode == 0, p.stderr
    assert nbc("rm", "-f", "doomed").returncode == 0
    assert "doomed" not in nbc("ps", "-a").stdout


def test_rm_f_of_a_paused_container_kills_its_frozen_processes_and_removes_its_cgroup():
    p = nbc("run", "-d", "--name", "frozen", "busybox", "sh", "-c", "sleep 1000 & sleep 1000")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    from nbcontainer.paths import store_root
    from nbcontainer.runtime import state as state_mod

    st = state_mod.find(store_root(), cid)
    dirs = sorted(set(st.cgroup_paths.values()))
    try:
        assert nbc("pause", "frozen").returncode == 0
        pids = st.open_cgroup().procs()
        assert len(pids) >= 2  # sh and its two sleeps
    finally:
        assert nbc("rm", "-f", "frozen").returncode == 0
    assert not [d for d in dirs if os.path.isdir(d)]
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert "frozen" not in nbc("ps", "-a").stdout


def test_supervisor_sigkill_kills_container_and_gc_cleans(private_store):
    # A supervisor that starts a container without a pid namespace (so only PR_SET_PDEATHSIG
    # and the cgroup can end it), then is SIGKILLed.
    code = (
        "import sys, time\n"
        "from nbcontainer import Container, make_spec\n"
        "c = Container(make_spec(['sh', '-c', 'sleep 1000 & sleep 1000'], image='busybox',"
        " ns='uts,mount'))\n"
        "c.start(); print(c.id, c.pid, flush=True); time.sleep(1000)\n"
    )
    sup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert sup.stdout is not None
    cid, pid = sup.stdout.readline().split()
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    sup.stdout.close()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the container's first process died with it"
    assert (private_store / "containers" / cid).exists()
    out = nbc("gc")
    assert out.returncode == 0 and cid in out.stdout
    assert not (private_store / "containers" / cid).exists()
    # The backgrounded sleep (not in a pid namespace) was killed through the cgroup.
    assert "sleep 1000" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                              text=True).stdout.splitlines()


def test_info_reports_each_feature():
    p = nbc("info")
    for word in ("root", "cgroups", "overlayfs", "user namespaces", "busybox"):
        assert word in p.stdout
    assert p.returncode == 0


def test_unknown_names_and_commands_are_125_with_one_sentence(tmp_path):
    """rm exits as stop, exec and logs do for an unknown name (SPEC section 3: 125); a
    misspelled command is named; build of a missing directory says so."""
    for args in (["rm", "nope"], ["rm", "-f", "nope"], ["stop", "nope"], ["logs", "nope"]):
        p = nbc(*args)
        assert p.returncode == 125 and "no such container" in p.stderr, (args, p.stderr)
    p = nbc("psx")
    assert p.returncode == 125 and "did you mean ps?" in p.stderr
    p = nbc("build", "-t", "x", str(tmp_path / "nosuchdir"))
    assert p.returncode == 125 and "no such directory" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_without_root_every_command_says_it_needs_root(tmp_path):
    """Not root: the store is root's (0700), and each command says so in one sentence."""
    store = tmp_path / "store"
    for sub in ("containers", "images", "layers"):
        (store / sub).mkdir(parents=True, mode=0o700)
    (store / "images" / "busybox%3Alatest.json").write_text("{}")
    os.chmod(tmp_path, 0o711)  # traversable, as /var/lib is; the store's dirs are not
    env = {"NBCONTAINER_ROOT": str(store), "PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for args in (["ps"], ["gc"], ["logs", "x"], ["rm", "x"], ["stats", "x"],
                 ["history", "busybox"], ["images"], ["stop", "x"], ["exec", "x", "ls"]):
        p = subprocess.run([*CLI, *args], capture_output=True, text=True, user=65534,
                           group=65534, env=env, timeout=60)
        assert p.returncode == 125, (args, p.stderr)
        assert p.stderr.startswith("nbcontainer: needs root: "), (args, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


def test_run_it_gives_the_container_a_terminal_of_its_own():
    """`run -it busybox sh` on a real pty: tty names the container's /dev/pts/N, the shell has
    job control (no warning; Ctrl-C stops a sleep and the shell goes on), the window size
    follows SIGWINCH, the exit status is the shell's, and the terminal is restored."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [*CLI, "run", "-it", "busybox", "sh"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    out = b""

    def read_until(marker: bytes, limit: float = 20, since: int = 0) -> None:
        nonlocal out
        end = time.monotonic() + limit
        while marker not in out[since:] and time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if not data:
                    return
                out += data

    try:
        read_until(b"# ")
        os.write(fd, b"tty; test -t 0 && echo is-a-tty; stty size; echo $((6*7))\r")
        read_until(b"42\r\n")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)  # what the terminal emulator does on a resize
        time.sleep(0.3)
        os.write(fd, b"stty size; sleep 30\r")
        read_until(b"50 120")
        mark = len(out)
        os.write(fd, b"\x03")  # Ctrl-C: the container's terminal signals the sleep
        # The next command once the shell prompts again: typed ahead of the interrupt, a slow
        # machine (the v2 VM's emulation) may see it discarded with the sleep's line.
        read_until(b"# ", since=mark)
        os.write(fd, b"echo after-$((1+1))\r")
        read_until(b"after-2\r\n")
        os.write(fd, b"exit 3\r")
        read_until(b"never", limit=10)
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text and "is-a-tty" in text, text
    assert "40 100" in text and "50 120" in text and "42" in text and "after-2" in text, text
    assert "job control" not in text and "can't access tty" not in text, text
    assert os.waitstatus_to_exitcode(status) == 3, text
    lflag = termios.tcgetattr(fd)[3]
    assert lflag & termios.ECHO and lflag & termios.ICANON  # raw mode was undone
    os.close(fd)


def test_exec_into_missing_container_is_125():
    p = nbc("exec", "nope", "true")
    assert p.returncode == 125 and "no such container" in p.stderr


def _wait_for_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == expected, line


def test_ctrl_c_reaches_a_python_payload_and_leaves_nothing():
    # Short sleeps in a loop: CPython checks for signals between bytecodes, so a SIGINT that
    # lands after print() returns but before a single long sleep() starts would only be
    # acted on when that sleep ends (a race in the payload, not in the relay).
    code = ("import time\ntry:\n    print('ready', flush=True)\n"
            "    for _ in range(1000): time.sleep(0.1)\n"
            "except KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
            "    raise SystemExit(130)\n")
    proc = subprocess.Popen([*CLI, "run", "host", sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out
    assert proc.returncode == 130


def test_second_ctrl_c_kills_a_payload_that_ignores_the_first():
    # The payload ignores SIGINT (as a PID 1 without a handler does, pid_namespaces(7)): the
    # second Ctrl-C kills the whole container.
    proc = subprocess.Popen([*CLI, "run", "busybox", "sh", "-c",
                             "trap '' INT; echo ready; sleep 100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 137


def test_cli_start_up_collects_what_a_killed_supervisor_left(private_store):
    """Every container command runs gc first (like `nbcontainer gc`): a crashed run's
    container, cgroup and directory are gone after the next `run`, with no explicit gc."""
    import json

    code = (
        "import sys, time\n"
        "from nbcontainer import Container, make_spec\n"
        "c = Container(make_spec(['sleep', '1000'], image='busybox'))\n"
        "c.start(); print(c.id, c.pid, flush=True); time.sleep(1000)\n"
    )
    sup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert sup.stdout is not None
    cid, pid = sup.stdout.readline().split()
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    sup.stdout.close()
    cdir = private_store / "containers" / cid
    paths = json.loads((cdir / "state.json").read_text())["cgroup_paths"].values()
    assert paths and all(os.path.isdir(p) for p in paths), "the crash left its cgroup"
    p = nbc("run", "busybox", "true")
    assert p.returncode == 0, p.stderr
    assert not cdir.exists(), "start-up gc left the crashed container's directory"
    assert not any(os.path.exists(p) for p in paths), "start-up gc left its cgroup"
    # Killed by gc (or by its parent's death signal); whoever reaps orphans here reaps it.
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and "(zombie)" not in _status(pid) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or "(zombie)" in _status(pid)


def _status(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return ""


# A private mount namespace (unshare --mount, every mount made private first, so nothing
# propagates to the host) in which the cpuset hierarchy (v1), or every cgroup filesystem, is
# unmounted: the machine then lacks the feature, for this process only. (Mounting over
# /sys/fs/cgroup would not do: mountinfo still lists the hidden mounts.)
HIDE_CPUSET_V1 = """
set -e
mount --make-rprivate /
umount -l /sys/fs/cgroup/cpuset
exec "$@"
"""
NO_CGROUPS = """
set -e
mount --make-rprivate /
umount -R -l /sys/fs/cgroup
mount -t tmpfs none /sys/fs/cgroup
exec "$@"
"""


def _in_private_mounts(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *CLI, *args],
                          capture_output=True, text=True, timeout=60)


def test_missing_controller_is_125_with_one_sentence():
    from nbcontainer import cgroups

    version = cgroups.detect().version
    if version not in ("v1", "hybrid"):
        pytest.skip("hides a v1 hierarchy (cpuset); the cgroupfs-less case covers v2")
    p = _in_private_mounts(HIDE_CPUSET_V1, "run", "--cpuset-cpus", "0", "busybox", "true")
    assert p.returncode == 125, p
    assert p.stderr == ("nbcontainer: --cpuset-cpus needs the cpuset cgroup controller, which "
                        f"this machine does not offer (cgroup {version}); run without "
                        "--cpuset-cpus, or see `nbcontainer info`\n")
    # The rest still works there: the limit's controller is what is missing, nothing else.
    assert _in_private_mounts(HIDE_CPUSET_V1, "run", "--memory", "64m", "busybox",
                              "true").returncode == 0


def test_no_cgroup_filesystem_is_125_with_one_sentence():
    p = _in_private_mounts(NO_CGROUPS, "run", "busybox", "true")
    assert p.returncode == 125, p
    assert p.stderr == ("nbcontainer: no cgroup filesystem is mounted at /sys/fs/cgroup: "
                        "resource limits and statistics are unavailable\n")


def test_each_user_sees_and_removes_only_their_own_containers():
    """Per JupyterHub user (JUPYTERHUB_USER, or NBCONTAINER_USER over it): the same name twice,
    ps/rm/exec/stop of the other's by id is "no such container", and a container's hosts
    file names only the same user's containers. Images are shared (both run busybox)."""
    users = {u: {**os.environ, "JUPYTERHUB_USER": u, "NBCONTAINER_USER": u}
             for u in ("alice", "bob")}
    users["alice"].pop("NBCONTAINER_USER")  # alice from JupyterHub's variable alone
    nobody = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_USER",
                                                               "NBCONTAINER_USER")}
    ids = {}
    try:
        for user, env in users.items():
            p = nbc("run", "-d", "--name", "web", "busybox", "sleep", "1000", env=env)
            assert p.returncode == 0, p.stderr
            ids[user] = p.stdout.strip()
        rows = {user: [line.split() for line in nbc("ps", env=env).stdout.splitlines()[1:]]
                for user, env in users.items()}
        for user in users:
            assert [(r[0], r[-1]) for r in rows[user]] == [(ids[user], "web")], rows
        assert ids["alice"] not in nbc("ps", "-a", env=nobody).stdout
        for user, other in (("alice", "bob"), ("bob", "alice")):
            for verb in (["rm", "-f"], ["stop"], ["exec"], ["logs"]):
                p = nbc(*verb, ids[other], *(["true"] if verb == ["exec"] else []),
                        env=users[user])
                assert p.returncode == 125 and "no such container" in p.stderr, (verb, p.stderr)
            assert nbc("ps", env=users[other]).stdout.count(ids[other]) == 1
        address = {user: rows[user][0][-2] for user in users}
        hosts = nbc("run", "busybox", "cat", "/etc/hosts", env=users["alice"]).stdout
        named = [line.split()[0] for line in hosts.splitlines() if "web" in line.split()[1:]]
        assert named == [address["alice"]], hosts
    finally:
        for env in users.values():
            nbc("rm", "-f", "web", env=env)
    assert all(nbc("ps", "-a", env=env).stdout.count("\n") == 1 for env in users.values())
