"""seccomp, tried as a user would try to get out: raw syscalls from inside real containers.

Each attempt runs in a container on the real kernel (root), with Docker's default profile, and
again where the filter is the only thing that differs (``seccomp=unconfined``, a copy of the
default profile whose default errno is ENOTRECOVERABLE, ``--cap-add``), so a denial is shown to come
from the filter and not from something else. The shared leak check (tests/conftest.py) checks
that no cgroup, mount, container or process is left behind.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import capture

from nbcontainer.runtime.container import Container
from nbcontainer.seccomp_profile import DEFAULT_PROFILE_PATH
from nbcontainer.spec import make_spec

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(platform.machine() != "x86_64",
                                 reason="the probe uses x86_64 syscall numbers")]

# The attempts, by raw syscall number (x86_64), each reported as "ok" or its errno's name.
PROBE = r"""
import ctypes, errno, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}

def attempt(name, nr, *args, fork=False):
    args = [a if isinstance(a, bytes) else ctypes.c_ulong(a & (2**64 - 1)) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *args)
    e = ctypes.get_errno()
    if fork and r == 0:
        os._exit(0)
    if fork and r > 0:
        os.waitpid(r, 0)
    out[name] = "ok" if r >= 0 else errno.errorcode.get(e, str(e))
    return r

attempt("keyctl", 250, 0, -4, 0)                                # KEYCTL_GET_KEYRING_ID, user's
attempt("add_key", 248, b"user", b"nbc-probe", b"x", 1, -2)     # into the process keyring
attempt("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
attempt("clone_newns", 56, 0x00020000 | 17, 0, 0, 0, 0, fork=True)  # CLONE_NEWNS|SIGCHLD
attempt("fork", 56, 17, 0, 0, 0, 0, fork=True)                  # plain clone: a fork
fd = attempt("socket_vsock", 41, 40, 1, 0)                      # AF_VSOCK, SOCK_STREAM
if fd >= 0:
    os.close(fd)
fd = attempt("socket_inet", 41, 2, 2, 0)                        # AF_INET, SOCK_DGRAM
if fd >= 0:
    os.close(fd)
attempt("personality_query", 135, 0xFFFFFFFF)
attempt("personality_bad", 135, 0x0400000)                      # READ_IMPLIES_EXEC
attempt("kcmp", 312, os.getpid(), os.getpid(), 0, 1, 1)         # KCMP_FILE
target = int(os.environ.get("PTRACE_TARGET", "0"))
if target:
    attempt("ptrace_seize", 101, 0x4206, target, 0, 0)          # PTRACE_SEIZE: never stops it
# last: in a new user namespace this process would hold every capability (and lose the
# others outside it)
attempt("unshare_user", 272, 0x10000000)                        # unshare(CLONE_NEWUSER)
t = threading.Thread(target=lambda: None)
t.start(); t.join()
out["thread"] = "ok"
with open("/proc/self/status") as f:
    for line in f:
        key, _, value = line.partition(":")
        if key in ("Seccomp", "NoNewPrivs"):
            out[key] = value.strip()
print(json.dumps(out))
"""


def probe(zygote: bool = False, **options: object) -> dict[str, str]:
    """The probe's results in a container of the host image with ``options``."""
    code, out, err = capture([], container={"python": PROBE, "zygote": zygote}, **options)
    assert code == 0, err
    return json.loads(out)


DENIED_BY_DEFAULT = ("unshare_user", "keyctl", "add_key", "mount", "clone_newns",
                     "socket_vsock", "personality_bad", "kcmp")


def test_default_profile_denies_the_escape_syscalls_with_eperm():
    got = probe()
    assert {name: got[name] for name in DENIED_BY_DEFAULT} == \
        dict.fromkeys(DENIED_BY_DEFAULT, "EPERM")
    # What ordinary programs need still works: fork, sockets, the personality query, threads
    # (glibc's clone3 gets ENOSYS from Docker's profile and falls back to clone).
    assert [got["fork"], got["socket_inet"], got["personality_query"], got["thread"]] == \
        ["ok"] * 4
    assert got["Seccomp"] == "2" and got["NoNewPrivs"] == "1"


def test_the_filter_is_what_denies_them(tmp_path: Path):
    """The same attempts with the filter's own mark (default errno ENOTRECOVERABLE), without
    any filter: the denials above came from seccomp."""
    profile = json.loads(DEFAULT_PROFILE_PATH.read_text())
    profile["defaultErrnoRet"] = 131  # ENOTRECOVERABLE: only the filter answers that
    marked = tmp_path / "marked.json"
    marked.write_text(json.dumps(profile))
    got = probe(security_opt=[f"seccomp={marked}"])
    assert {name: got[name] for name in DENIED_BY_DEFAULT} == \
        dict.fromkeys(DENIED_BY_DEFAULT, "ENOTRECOVERABLE")
    free = probe(security_opt=["seccomp=unconfined"])
    assert free["Seccomp"] == "0"
    assert [free["unshare_user"], free["keyctl"], free["add_key"], free["personality_bad"],
            free["kcmp"]] == ["ok"] * 5
    assert free["socket_vsock"] != "EPERM"
    # mount and namespace flags on clone also need CAP_SYS_ADMIN, which the default set lacks
    assert free["mount"] == free["clone_newns"] == "EPERM"


def test_cap_add_opens_what_dockers_profile_opens_with_the_capability():
    admin = probe(cap_add=["SYS_ADMIN"])
    assert [admin["mount"], admin["clone_newns"], admin["unshare_user"]] == ["ok"] * 3
    assert admin["keyctl"] == "EPERM" and admin["Seccomp"] == "2"
    assert probe(cap_add=["SYS_PTRACE"])["kcmp"] == "ok"


def test_ptrace_of_a_host_process_is_refused():
    """Docker's profile allows ptrace (kernel >= 4.8): capabilities refuse it. Without a PID
    namespace the test process itself is visible; PTRACE_SEIZE would not even stop it."""
    got = probe(ns="uts,ipc,mount", env=[f"PTRACE_TARGET={os.getpid()}"])
    assert got["ptrace_seize"] == "EPERM" and got["Seccomp"] == "2"


def test_a_python_body_in_the_zygotes_forked_interpreter_is_filtered():
    from nbcontainer.runtime.zygote import Zygote

    try:
        got = probe(zygote=True)
    finally:
        Zygote.shutdown()
    assert got["unshare_user"] == got["keyctl"] == "EPERM"
    assert got["Seccomp"] == "2" and got["thread"] == "ok"


def test_a_custom_profile_denying_getcwd_makes_pwd_fail(tmp_path: Path):
    profile = tmp_path / "no-getcwd.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}))
    code, _, err = capture(["pwd"], image="busybox", security_opt=[f"seccomp={profile}"])
    assert code == 1 and "Operation not permitted" in err
    code, out, _ = capture(["pwd"], image="busybox", workdir="/tmp")
    assert (code, out) == (0, "/tmp\n")


def test_ordinary_workloads_still_work():
    code, out, err = capture(["sh", "-c", "echo hi | wc -c; ls / >/dev/null; ps >/dev/null; "
                              "sleep 0.01 & wait; grep Seccomp: /proc/self/status"],
                             image="busybox")
    assert code == 0, err
    assert out.split() == ["3", "Seccomp:", "2"]
    code, out, err = capture([sys.executable, "-c", "import numpy, concurrent.futures as f; "
                              "print(numpy.arange(4).sum(), "
                              "sum(f.ThreadPoolExecutor(2).map(abs, [-1, -2])))"])
    assert (code, out) == (0, "6 3\n"), err


def test_an_exec_into_a_running_container_gets_its_filter():
    for opts, expected in (([], "2"), (["seccomp=unconfined"], "0")):
        c = Container(make_spec(["sleep", "30"], image="busybox", name="seccomp-exec",
                                security_opt=opts), keep=False,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).start()
        try:
            r, w = os.pipe()
            e = c.exec(["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true"],
                       stdout=w, stderr=w)
            os.close(w)
            result = e.wait()
            e.cleanup()
            with os.fdopen(r) as f:
                out = f.read()
            assert out.split()[:2] == ["Seccomp:", expected]
            assert result.exit_code == (1 if expected == "2" else 0), out
        finally:
            c.kill()
            c.wait()
            c.cleanup()


def test_no_new_privileges_false_still_filters_and_privileged_is_unconfined():
    # Without no_new_privs the filter goes in before the capabilities are dropped (it needs
    # CAP_SYS_ADMIN then): also for a non-root user.
    for user in (None, "1000:1000"):
        code, out, err = capture(["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' "
                                  "/proc/self/status"], image="busybox", user=user,
                                 security_opt=["no-new-privileges=false"])
        assert code == 0, err
        assert out.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]
    code, out, _ = capture(["grep", "Seccomp:", "/proc/self/status"], image="busybox",
                           privileged=True)
    assert out.split() == ["Seccomp:", "0"]


def test_a_bad_profile_fails_in_words_before_anything_exists(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], '
                   '"action": "SCMP_ACT_DENY"}]}')
    for opt, words in ((f"seccomp={bad}", "syscalls[0].action: unknown action 'SCMP_ACT_DENY'"),
                       (f"seccomp={tmp_path}/missing.json", "No such file or directory")):
        p = subprocess.run([sys.executable, "-m", "nbcontainer", "run", "--security-opt", opt,
                            "busybox", "true"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 125 and words in p.stderr and "Traceback" not in p.stderr
