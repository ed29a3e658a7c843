"""nbcontainer inside a container: the store on overlayfs, and setup errors in the child's words.

In a Docker container or a Kubernetes pod whose store directory is not a volume, the store sits
on the container's own overlayfs, which refuses to be an overlay's upper layer and refuses the
0/0 character devices of a layer's whiteouts. These tests make that situation for real: an
overlay mount of their own under a tmp dir, in a private mount namespace (``unshare -m``, which
makes every mount private first), with NBCONTAINER_ROOT inside it.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbcontainer import Container, make_spec
from nbcontainer.errors import SetupError

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]

#: The shell side: an overlay of its own, the store inside it, then the commands of a user.
SCRIPT = r"""
set -u
d=$1
mkdir -p "$d/lower" "$d/upper" "$d/work" "$d/merged"
mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged"
export NBCONTAINER_ROOT="$d/merged/store"
nbc() { "$PYTHON" -m nbcontainer "$@"; }
echo "fs=$(stat -f -c %t "$d/merged")"
nbc info | grep -A1 'store:'
nbc run busybox echo works; echo "rc=$?"
nbc run --net none --name changed busybox sh -c 'rm /bin/ls; echo kept > /new'; echo "rc=$?"
nbc commit changed changed-image >/dev/null; echo "rc=$?"
nbc run --net none changed-image sh -c 'ls /bin/ls 2>&1; cat /new'; echo "rc=$?"
nbc run --net none host cat /proc/self/cgroup >/dev/null; echo "rc=$?"
nbc rm changed >/dev/null; nbc rmi changed-image >/dev/null
echo "placed=$(findmnt -n -o FSTYPE "$d/merged/store/tmpfs")"
umount "$d/merged/store/tmpfs"
umount "$d/merged"
"""


def _run_on_overlay(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("NBCONTAINER_ROOT", None)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
         str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(REPO))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_containers_run_with_the_store_on_overlayfs(tmp_path: Path) -> None:
    p = _run_on_overlay(tmp_path)
    out = p.stdout
    assert p.returncode == 0, (out, p.stderr)
    assert "fs=794c7630" in out  # the store really is on overlayfs
    # info says where the store went and what an admin can do about it
    assert "is on overlayfs" in out and f"{tmp_path}/merged/store/tmpfs" in out, out
    assert "mount a volume at" in out
    lines = out.splitlines()
    assert lines[lines.index("works") + 1] == "rc=0", (out, p.stderr)
    # whiteouts (rm /bin/ls) survive a commit and a run of the committed image
    assert "ls: /bin/ls: No such file or directory\nkept\nrc=0" in out, (out, p.stderr)
    assert out.count("rc=0") == 5, (out, p.stderr)
    assert "placed=tmpfs" in out
    assert "No such process" not in p.stderr


class _SlowAttach(Container):
    """Attaches the first process only once it is gone: the order of events that lost the
    child's error (the child's setup fails while the supervisor is still attaching it)."""

    def _on_pid(self, pid: int) -> None:
        fd = os.pidfd_open(pid)  # readable once the process has exited (pidfd_open(2))
        try:
            assert select.select([fd], [], [], 10)[0], "the child's setup did not fail"
        finally:
            os.close(fd)
        super()._on_pid(pid)


def test_the_childs_error_wins_over_the_supervisors_esrch(tmp_path: Path) -> None:
    """A volume whose mount point cannot be made (a path under a file): the child says so,
    even though the supervisor's cgroup attach then fails with ESRCH."""
    c = _SlowAttach(make_spec(["true"], image="busybox",
                              volumes=[f"{tmp_path}:/bin/busybox/inside"]),
                    stdin=subprocess.DEVNULL, zygote=False)
    with pytest.raises(SetupError) as caught:
        c.start()
    text = str(caught.value)
    assert "volume" in text and "/bin/busybox/inside" in text and "Not a directory" in text
    assert "No such process" not in text
    # the ESRCH is kept as the cause, for whoever debugs it
    assert "No such process" in str(caught.value.__cause__)


def test_cli_reports_the_childs_setup_error(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "nbcontainer", "run", "-v",
                        f"{tmp_path}:/bin/busybox/inside", "busybox", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 125
    assert "cannot make its mount point /bin/busybox/inside" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "No such process" not in p.stderr
