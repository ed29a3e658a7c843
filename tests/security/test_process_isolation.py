"""Escape attempts through what a process carries besides namespaces (real containers).

Session keyring, open-files limit, umask, OOM score; the host image's credentials; ``:ro``
volumes with a mount below them. Each test checks the host afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
NBC = [sys.executable, "-m", "nbcontainer"]


def nbc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBC, *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_a_container_cannot_read_the_keys_of_the_session_that_started_it() -> None:
    """The supervisor's session keyring holds a key; inside, reading it by id fails (the
    container joined a session keyring of its own); the key is intact afterwards."""
    script = textwrap.dedent("""
        import ctypes, subprocess, sys
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        KEYCTL_JOIN, KEYCTL_READ, KEYCTL_UNLINK, SESSION = 1, 11, 9, -3
        assert libc.syscall(250, KEYCTL_JOIN, None) > 0     # a throwaway session for the test
        key = libc.syscall(248, b"user", b"nbc-test-key", b"s3cret", 6, SESSION)   # add_key
        assert key > 0, ctypes.get_errno()
        probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                 "buf = ctypes.create_string_buffer(64); "
                 f"r = libc.syscall(250, 11, {key}, buf, 64); "
                 "print(r, ctypes.get_errno(), buf.value)")
        # seccomp=unconfined: Docker's profile refuses keyctl itself (EPERM); without it the
        # keyring is what must keep the key out of reach.
        p = subprocess.run([sys.executable, "-m", "nbcontainer", "run", "--security-opt",
                            "seccomp=unconfined", "host", sys.executable, "-c", probe],
                           capture_output=True, text=True)
        buf = ctypes.create_string_buffer(64)
        still = libc.syscall(250, KEYCTL_READ, key, buf, 64)
        libc.syscall(250, KEYCTL_UNLINK, key, SESSION)
        print(p.returncode, p.stdout.strip(), p.stderr.strip(), still, buf.value)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    code, result, errno_, value, *host = out.stdout.split()
    assert code == "0", out.stdout
    assert result == "-1" and errno_ in ("13", "126"), out.stdout  # EACCES / ENOKEY
    assert "s3cret" not in value
    assert host == ["6", "b's3cret'"], "the host's key is untouched"


def test_open_files_limit_umask_and_oom_score() -> None:
    p = nbc("run", "busybox", "sh", "-c",
            "ulimit -n; umask; cat /proc/self/oom_score_adj")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1024", "0022", "500"]
    # The supervisor's own score is not changed: only the container's processes are preferred.
    assert int(Path(f"/proc/{os.getpid()}/oom_score_adj").read_text()) < 500


def test_the_host_image_hides_credentials(tmp_path: Path) -> None:
    runtime = tmp_path / "jupyter-runtime"
    runtime.mkdir()
    (runtime / "kernel-1.json").write_text('{"key": "a-kernel-key"}')
    relay = Path("/tmp") / f"nbck-999999-{os.getpid()}"
    relay.mkdir()
    (relay / "connection.json").write_text('{"key": "another-kernel-key"}')
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    try:
        p = nbc("run", "host", "sh", "-c",
                f"wc -c < /etc/shadow; cat {runtime}/kernel-1.json {relay}/connection.json; "
                "ls -A /root/.ssh 2>&1 | wc -l", env=env)
        exposed = nbc("run", "-v", f"{runtime}:{runtime}:ro", "host", "cat",
                      f"{runtime}/kernel-1.json", env=env)
    finally:
        shutil.rmtree(relay)
    assert "kernel-key" not in p.stdout
    assert p.stdout.split()[0] == "0", p.stdout  # /etc/shadow is empty inside
    assert Path("/etc/shadow").stat().st_size > 0  # and untouched on the host
    assert exposed.returncode == 0 and "a-kernel-key" in exposed.stdout  # -v exposes on purpose


def test_a_volume_above_a_hidden_path_does_not_uncover_it(tmp_path: Path) -> None:
    """The container kernel binds the notebook's directory (often /root or a home): a volume
    *above* a hidden path keeps it hidden (the escape: read /etc/shadow through `-v /etc:/etc`,
    or the JUPYTER_RUNTIME_DIR's connection files through a bind of its parent)."""
    runtime = tmp_path / "home" / ".local" / "share" / "jupyter" / "runtime"
    runtime.mkdir(parents=True)
    (runtime / "kernel-1.json").write_text('{"key": "a-kernel-key"}')
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    home = tmp_path / "home"
    p = nbc("run", "-v", "/etc:/etc", "-v", f"{home}:{home}", "host", "sh", "-c",
            f"wc -c < /etc/shadow; cat {runtime}/kernel-1.json; ls /etc/hostname", env=env)
    assert p.stdout.split()[0] == "0", p.stdout + p.stderr  # still hidden inside
    assert "a-kernel-key" not in p.stdout
    assert "/etc/hostname" in p.stdout  # the rest of the volume is there
    assert Path("/etc/shadow").stat().st_size > 0


def test_a_read_only_volume_is_read_only_all_the_way_down(tmp_path: Path) -> None:
    """A tmpfs mounted below a ``:ro`` volume's source stays read-only inside too. The tmpfs
    lives in a private mount namespace of the test's own, never on the host."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    script = (f"mount --make-rprivate / && mount -t tmpfs tmpfs {data}/sub && "
              f"{' '.join(NBC)} run -v {data}:/data:ro busybox sh -c "
              "'touch /data/top 2>&1; touch /data/sub/below 2>&1; grep \" /data\" /proc/mounts'")
    p = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("Read-only file system") == 2, p.stdout
    mounts = [line.split() for line in p.stdout.splitlines() if not line.startswith("touch")]
    mounts = [fields for fields in mounts if fields[1].startswith("/data")]
    assert len(mounts) == 2 and all(f[3].startswith("ro,") for f in mounts), p.stdout
    assert not (data / "top").exists() and not (data / "sub" / "below").exists()
