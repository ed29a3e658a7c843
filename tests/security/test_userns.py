"""User namespaces on the real kernel: image files owned by root inside (idmapped layers), a
write to /etc lands in the upper layer only, one host id range per container from root's
subordinate ids, released on every way out, and no chown outside the range.

Per-container ranges need an entry for root in /etc/subuid and /etc/subgid. The machine's files
are never changed: those tests run the CLI in a private mount namespace (``unshare -m``) where
a file of the test is bind-mounted over each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import capture

from nbcontainer.paths import machine_records

pytestmark = [pytest.mark.root, pytest.mark.userns]

CLI = [sys.executable, "-m", "nbcontainer"]
NS = "uts,pid,mount,ipc,user"
SIZE = 65536
SUBUID_START, SUBGID_START = 300000, 500000  # two ranges each in the test's subordinate files


def nbc(*args: str, env: dict[str, str] | None = None,
        wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI (under ``wrap``, e.g. a private mount namespace), its output captured."""
    return subprocess.run([*(wrap or []), *CLI, *args], capture_output=True, text=True,
                          timeout=120, env=env)


def store() -> Path:
    return Path(os.environ["NBCONTAINER_ROOT"])


def record(ref: str) -> dict:
    for path in (store() / "containers").glob("*/state.json"):
        data = json.loads(path.read_text())
        if ref in (data["id"], data["name"]):
            return data
    raise AssertionError(f"no record of {ref}")


def range_leases() -> dict:
    """This session's id range leases (the records are the machine's)."""
    path = machine_records("userns") / "ranges.json"
    found = json.loads(path.read_text())["leases"] if path.exists() else {}
    return {k: v for k, v in found.items() if v.get("root") == str(store())}


def running(ref: str) -> dict:
    """The record of a detached container once its first process runs."""
    for _ in range(200):
        data = record(ref)
        if data["status"] == "running":
            return data
        time.sleep(0.05)
    raise AssertionError(f"{ref} did not start: {data}")


def idmap_works() -> bool:
    """Whether this kernel idmaps a mount of the store's filesystem: an independent probe (a
    file owned by 0 on disk must read as 100000 through an idmapped clone)."""
    probe = store() / "idmap-probe"
    (probe / "src").mkdir(parents=True, exist_ok=True)
    (probe / "src" / "f").touch()
    code = ("import os, sys; from nbcontainer.child import idmap; "
            "idmap.mount_layers([sys.argv[1] + '/src'], sys.argv[1] + '/m', 100000, 100000, 1); "
            "print(os.stat(sys.argv[1] + '/m/0/f').st_uid)")
    try:
        p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                            code, str(probe)], capture_output=True, text=True, timeout=60)
        return p.returncode == 0 and p.stdout.strip() == "100000"
    finally:
        shutil.rmtree(probe)


@pytest.fixture(scope="module")
def idmapped() -> bool:
    return idmap_works()


@pytest.fixture
def subids(tmp_path: Path) -> Iterator[list[str]]:
    """A wrapper running a command where root owns two ranges in /etc/subuid and /etc/subgid."""
    if not (os.path.isfile("/etc/subuid") and os.path.isfile("/etc/subgid")):
        pytest.skip("needs /etc/subuid and /etc/subgid to bind a test copy over (none here)")
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"someone:100000:65536\nroot:{SUBUID_START}:{2 * SIZE}\n")
    subgid.write_text(f"root:{SUBGID_START}:{2 * SIZE}\n")
    yield ["unshare", "-m", "--propagation", "private", "sh", "-c",
           f'mount --bind {subuid} /etc/subuid && mount --bind {subgid} /etc/subgid && exec "$@"',
           "sh"]
    assert range_leases() == {}, "every range is released"


def busybox_file(relative: str) -> Path:
    """The busybox image's own copy of ``relative`` in its layer in the store."""
    from nbcontainer.images import resolve

    for layer in reversed(resolve("busybox", store()).layers):
        path = Path(layer) / relative
        if path.exists():
            return path
    raise AssertionError(f"busybox has no {relative}")


def test_image_files_are_roots_and_a_write_to_etc_lands_in_the_upper_layer_only(
        idmapped: bool) -> None:
    nbc("run", "busybox", "true")  # the built-in image exists in the store from here on
    layer_passwd = busybox_file("etc/passwd")
    before = (layer_passwd.stat(), hashlib.sha256(layer_passwd.read_bytes()).hexdigest())
    name = "userns-etc"
    p = nbc("run", "--name", name, "--ns", NS, "busybox", "sh", "-c",
            "stat -c %u:%g /etc/passwd /etc; echo intruder::0:0::/:/bin/sh >> /etc/passwd; "
            "echo rc=$?; echo new > /etc/created; stat -c %u:%g /etc/created")
    try:
        st = record(name)
        uid, gid = st["userns"]["uid"], st["userns"]["gid"]
        upper = store() / "containers" / st["id"] / "upper"
        if idmapped:
            assert p.returncode == 0, p.stderr
            assert p.stdout.split() == ["0:0", "0:0", "rc=0", "0:0"], p.stdout
            assert "warning" not in p.stderr
            # The host sees what root inside wrote, in the upper layer, as the mapped root.
            for path in (upper / "etc" / "created", upper / "etc" / "passwd"):
                assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
            assert "intruder" in (upper / "etc" / "passwd").read_text()
        else:
            # The documented fallback: image files are nobody's, /etc cannot be written, and
            # the user is told so in words.
            assert p.stdout.split()[:3] == ["65534:65534", "65534:65534", "rc=1"], p.stdout
            assert "cannot make idmapped mounts" in p.stderr
            assert not (upper / "etc" / "created").exists()
        assert st["userns"]["idmapped"] is idmapped
        # The image's layer on the host is unchanged: owner, mode and contents.
        after = layer_passwd.stat()
        assert (after.st_uid, after.st_gid, after.st_mode) == (
            before[0].st_uid, before[0].st_gid, before[0].st_mode)
        assert (after.st_uid, after.st_gid) == (0, 0)
        assert hashlib.sha256(layer_passwd.read_bytes()).hexdigest() == before[1]
    finally:
        assert nbc("rm", "-f", name).returncode == 0


def test_exec_enters_as_root_and_can_write_etc(idmapped: bool) -> None:
    name = "userns-exec"
    assert nbc("run", "-d", "--name", name, "--ns", NS, "busybox", "sleep", "60").returncode == 0
    try:
        running(name)
        p = nbc("exec", name, "sh", "-c", "id -u; touch /etc/by-exec; echo rc=$?")
        assert p.stdout.split() == ["0", "rc=0" if idmapped else "rc=1"], (p.stdout, p.stderr)
    finally:
        assert nbc("rm", "-f", name).returncode == 0


def test_no_chown_to_an_id_outside_the_range_in_the_image_or_a_volume(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    volume.chmod(0o777)  # volumes are not idmapped: root inside is the mapped uid here
    p = nbc("run", "--ns", NS, "-v", f"{volume}:/vol", "busybox", "sh", "-c",
            "for f in /tmp/f /vol/f; do touch $f; chown 65535:65535 $f; echo rc=$?; "
            "chown 65536 $f; echo rc=$?; chown 0:70000 $f; echo rc=$?; "
            "stat -c %u:%g $f; done; cat /proc/self/uid_map /proc/self/gid_map")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[:8] == ["rc=0", "rc=1", "rc=1", "65535:65535"] * 2, p.stdout
    assert "Invalid argument" in p.stderr
    uid, gid = int(lines[8].split()[1]), int(lines[9].split()[1])
    # On the host, the volume's file belongs to the range's last ids, nothing outside it.
    st = (volume / "f").stat()
    assert (st.st_uid, st.st_gid) == (uid + SIZE - 1, gid + SIZE - 1)


def test_two_containers_get_disjoint_ranges_released_after_rm_and_after_kill_9_and_gc(
        subids: list[str]) -> None:
    a = nbc("run", "-d", "--ns", NS, "busybox", "sleep", "60", wrap=subids)
    b = nbc("run", "-d", "--ns", NS, "busybox", "sleep", "60", wrap=subids)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ids = [a.stdout.strip(), b.stdout.strip()]
    try:
        maps = {}
        for cid in ids:
            pid = running(cid)["pid"]
            with open(f"/proc/{pid}/uid_map") as f, open(f"/proc/{pid}/gid_map") as g:
                maps[cid] = (f.read().split(), g.read().split())
        starts = sorted(int(u[1]) for u, _ in maps.values())
        assert starts == [SUBUID_START, SUBUID_START + SIZE], maps
        assert sorted(int(g[1]) for _, g in maps.values()) == [SUBGID_START,
                                                                SUBGID_START + SIZE]
        assert all(u[0] == "0" and u[2] == str(SIZE) for u, _ in maps.values())
        assert sorted(lease["container"] for lease in range_leases().values()) == sorted(ids)
        # Both ranges are taken: a third container is refused in words, nothing left behind.
        before = set(os.listdir(store() / "containers"))
        c = nbc("run", "--ns", NS, "busybox", "true", wrap=subids)
        assert c.returncode == 125 and "no free user namespace id range" in c.stderr, c.stderr
        assert "Traceback" not in c.stderr
        assert set(os.listdir(store() / "containers")) == before
        # rm -f: released.
        assert nbc("rm", "-f", ids[0]).returncode == 0
        assert [lease["container"] for lease in range_leases().values()] == [ids[1]]
        # kill -9 of the supervisor, then gc: released.
        supervisor = record(ids[1])["supervisor_pid"]
        os.kill(supervisor, signal.SIGKILL)
        for _ in range(100):
            if not os.path.exists(f"/proc/{supervisor}"):
                break
            time.sleep(0.05)
        gc = nbc("gc")
        assert gc.returncode == 0, gc.stderr
        assert range_leases() == {}
        # A container run to its end releases its range too (the first one is free again).
        p = nbc("run", "--ns", NS, "busybox", "cat", "/proc/self/uid_map", wrap=subids)
        assert p.returncode == 0 and p.stdout.split()[1] == str(SUBUID_START), p
        assert range_leases() == {}
    finally:
        for cid in ids:
            nbc("rm", "-f", cid)


def test_two_containers_roots_are_different_host_users(subids: list[str], idmapped: bool,
                                                       tmp_path: Path) -> None:
    # What one container's root writes in a shared volume, the other's root cannot change.
    volume = tmp_path / "shared"
    volume.mkdir()
    volume.chmod(0o777)
    first = nbc("run", "--ns", NS, "-v", f"{volume}:/v", "busybox", "sh", "-c",
                "echo mine > /v/f; chmod 644 /v/f", wrap=subids)
    assert first.returncode == 0, first.stderr
    name = "userns-holder"  # keeps the first range taken, so the next gets the second
    assert nbc("run", "-d", "--name", name, "--ns", NS, "busybox", "sleep", "60",
               wrap=subids).returncode == 0
    try:
        running(name)
        second = nbc("run", "--ns", NS, "-v", f"{volume}:/v", "busybox", "sh", "-c",
                      "echo theirs > /v/f; echo rc=$?; cat /proc/self/uid_map", wrap=subids)
        assert second.stdout.split()[0] == "rc=1", second.stdout
        assert int(second.stdout.split()[2]) == SUBUID_START + SIZE
    finally:
        assert nbc("rm", "-f", name).returncode == 0
    assert (volume / "f").read_text() == "mine\n"
    assert (volume / "f").stat().st_uid == SUBUID_START


def test_without_idmapped_mounts_the_fallback_is_said_once_in_words(tmp_path: Path) -> None:
    # A store on ramfs, which cannot be idmapped (containers' directories on a tmpfs, which
    # overlayfs needs for its upper layer), in a private mount namespace.
    root = tmp_path / "ramstore"
    root.mkdir()
    script = (f'mount -t ramfs none {root} && mkdir {root}/containers && '
              f'mount -t tmpfs none {root}/containers && exec "$@"')
    env = dict(os.environ, NBCONTAINER_ROOT=str(root))
    code = ("from nbcontainer import Container, make_spec\n"
            "for _ in range(2):\n"
            "    c = Container(make_spec(['sh', '-c', 'stat -c %u:%g /etc/passwd; touch /etc/x'],"
            f" image='busybox', ns={NS!r}))\n"
            "    c.start(); print('exit', c.wait().exit_code, flush=True); c.cleanup()\n")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                        sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["65534:65534", "exit", "1"] * 2, p.stdout
    assert p.stderr.count("cannot make idmapped mounts") == 1, p.stderr  # once per process
    assert p.stderr.count("touch: /etc/x: Permission denied") == 2
    assert "Traceback" not in p.stderr


def test_commit_records_the_ids_files_have_inside_not_the_host_range() -> None:
    name, image = "userns-commit", "userns-committed:1"
    p = nbc("run", "--name", name, "--ns", NS, "busybox", "sh", "-c",
            "echo a > /created; echo b > /owned; chown 1000:2000 /owned")
    try:
        assert p.returncode == 0, p.stderr
        st = record(name)
        upper = store() / "containers" / st["id"] / "upper"
        assert upper.joinpath("owned").stat().st_uid == st["userns"]["uid"] + 1000
        c = nbc("commit", name, image)
        assert c.returncode == 0, c.stderr
        q = nbc("run", image, "stat", "-c", "%u:%g", "/created", "/owned")
        assert q.stdout.split() == ["0:0", "1000:2000"], (q.stdout, q.stderr)
    finally:
        nbc("rm", "-f", name)
        nbc("rmi", image)


def test_containers_forked_by_the_zygote_and_from_a_spare_are_idmapped_too(
        idmapped: bool) -> None:
    for _ in range(3):  # the first forks a helper; the next ones may adopt a spare
        code, out, err = capture(["sh", "-c", "stat -c %u:%g /etc/passwd; id -u"],
                                 {"zygote": True}, image="busybox", ns=NS)
        assert code == 0, err
        assert out.split() == ["0:0" if idmapped else "65534:65534", "0"], (out, err)
