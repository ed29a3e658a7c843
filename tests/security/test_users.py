"""Who the payload runs as: -u names and ids, the image's USER, capabilities after setuid,
supplementary groups, and an image whose passwd file points at the host's shadow file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not shutil.which("umoci"), reason="needs umoci")]
NBC = [sys.executable, "-m", "nbcontainer"]


def nbc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBC, *args], capture_output=True, text=True, timeout=120)


def test_cap_drop_all_with_a_user_runs_as_that_user_without_capabilities() -> None:
    p = nbc("run", "--cap-drop", "ALL", "-u", "1000", "busybox", "sh", "-c",
            "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "1000"
    assert all(line.split()[1] == "0000000000000000" for line in lines[1:4]), p.stdout


def test_a_user_name_is_resolved_in_the_images_passwd() -> None:
    p = nbc("run", "-u", "nobody", "busybox", "sh", "-c", 'id -u; id -g; echo "$HOME"')
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["65534", "65534", "/nonexistent"]


def test_an_unknown_user_is_refused_in_words_and_leaves_nothing() -> None:
    p = nbc("run", "-u", "bob", "busybox", "true")
    assert p.returncode == 125
    assert "unable to find user bob" in p.stderr and "Traceback" not in p.stderr


def test_user_namespace_root_has_no_host_supplementary_groups() -> None:
    p = nbc("run", "--ns", "uts,pid,mount,ipc,user", "busybox", "sh", "-c",
            "grep ^Groups /proc/self/status; id -u")
    assert p.returncode == 0, p.stderr
    groups, uid = p.stdout.splitlines()
    assert groups.split(":", 1)[1].strip() == "" and uid == "0"


def _umoci_image(tmp: Path, name: str, passwd: str | None, user: str) -> None:
    layout, bundle = tmp / "layout", tmp / "bundle"
    subprocess.run(["umoci", "init", "--layout", layout], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:t"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:t", bundle], check=True,
                   capture_output=True)
    root = bundle / "rootfs"
    (root / "bin").mkdir()
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for tool in ("sh", "id", "cat"):
        os.symlink("busybox", root / "bin" / tool)
    (root / "etc").mkdir()
    if passwd is None:
        os.symlink("/etc/shadow", root / "etc/passwd")  # a hostile image
    else:
        (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text("root:x:0:\napp:x:4343:\n")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:t", bundle], check=True,
                   capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:t", "--config.user", user,
                    "--config.env", "PATH=/bin"], check=True)
    p = nbc("import", str(layout), name)
    assert p.returncode == 0, p.stderr


def test_the_images_user_is_honoured(tmp_path: Path) -> None:
    _umoci_image(tmp_path, "with-user:t",
                 "root:x:0:0:root:/root:/bin/sh\napp:x:4242:4343:app:/home/app:/bin/sh\n", "app")
    try:
        p = nbc("run", "with-user:t", "sh", "-c", 'id -u; id -g; echo "$HOME"')
        as_root = nbc("run", "-u", "0", "with-user:t", "id", "-u")
    finally:
        nbc("rmi", "with-user:t")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["4242", "4343", "/home/app"]
    assert as_root.stdout.strip() == "0"  # -u overrides the image's USER


def test_a_passwd_that_links_to_the_hosts_shadow_is_not_read(tmp_path: Path) -> None:
    _umoci_image(tmp_path, "hostile-user:t", None, "root")
    shadow_root = Path("/etc/shadow").read_text().split(":")[1]
    try:
        p = nbc("run", "hostile-user:t", "id", "-u")
        named = nbc("run", "-u", "daemon", "hostile-user:t", "id", "-u")
    finally:
        nbc("rmi", "hostile-user:t")
    assert p.returncode == 125 and "unable to find user root" in p.stderr
    assert named.returncode == 125 and "unable to find user daemon" in named.stderr
    for out in (p.stdout + p.stderr, named.stdout + named.stderr):
        assert shadow_root not in out or shadow_root in ("*", "!", "")


def test_exec_into_a_user_namespace_container_is_its_root() -> None:
    name = f"userns-exec-{os.getpid()}"
    p = nbc("run", "-d", "--name", name, "--ns", "uts,pid,mount,ipc,user", "busybox",
            "sleep", "60")
    assert p.returncode == 0, p.stderr
    try:
        inside = nbc("exec", name, "sh", "-c", "id -u; id -g; grep ^Groups /proc/self/status")
        init = nbc("exec", name, "sh", "-c", "cat /proc/1/status | grep ^Uid")
    finally:
        nbc("rm", "-f", name)
    assert inside.returncode == 0, inside.stderr
    uid, gid, groups = inside.stdout.splitlines()
    assert (uid, gid) == ("0", "0") and groups.split(":", 1)[1].strip() == ""
    assert init.stdout.split()[1] == "0"  # the same root as the container's first process


def test_a_malformed_passwd_entry_is_an_error_in_words(tmp_path: Path) -> None:
    """The image's passwd file is untrusted data: a non-numeric uid is a sentence, not a crash."""
    from nbcontainer.errors import UsageError
    from nbcontainer.runtime import users

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("app:x:notanumber:0:app:/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("grp:x:oops:\n")
    with pytest.raises(UsageError, match="malformed entry for app"):
        users.resolve("app", [str(tmp_path)], "img")
    with pytest.raises(UsageError, match="unable to find group grp"):
        users.resolve("0:grp", [str(tmp_path)], "img")
