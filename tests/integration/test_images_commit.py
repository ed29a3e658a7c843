"""``commit`` round trips: a container's changes, committed and run again, give the same tree.

The trees are compared as the containers themselves see them, read from the host through
``/proc/PID/root`` (the container's root, its overlay mount): paths, types and modes, owners,
contents, link targets, hardlink identity and ``user.*`` xattrs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nbcontainer.building.commit as commit_mod
from nbcontainer import Container, make_spec
from nbcontainer.building.commit import commit
from nbcontainer.errors import ContainerError, ImageError
from nbcontainer.images.builtin import ensure_busybox
from nbcontainer.images.store import ImageStore
from nbcontainer.runtime import manage
from nbcontainer.runtime import state as state_mod

pytestmark = pytest.mark.root

CHANGES = """
set -e
mkdir -p /data/sub
echo new > /data/new.txt                      # create
echo more >> /etc/passwd                      # modify a lower file
chmod 600 /etc/group                          # chmod a lower file
chown 1000:2000 /data/new.txt                 # chown
chmod 4755 /data/sub                          # odd mode on a new dir
rm /etc/hostname                              # delete a lower file: whiteout
rm -r /home && echo now-a-file > /home        # a lower dir replaced by a file
rm -r /usr/sbin && mkdir /usr/sbin && echo only > /usr/sbin/only   # opaque dir
ln -s /data/new.txt /data/link                # symlink
ln /data/new.txt /data/hard                   # hardlink
mkfifo /data/fifo
touch /ready
"""
SKIP = {"proc", "sys", "dev", "ready"}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def tree(top: str) -> dict[str, tuple]:
    """What a container sees under ``top`` (its /proc/PID/root): a comparable snapshot.

    Regular files carry their mtime (to the second, as tar keeps it); directories do not,
    since creating their entries in the new layer changes theirs.
    """
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    linked: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in SKIP]
            filenames = [f for f in filenames if f not in SKIP]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), int(st.st_mtime))
                if st.st_nlink > 1:  # hardlinks: named below by the inode's first path
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
                    linked[rel] = (st.st_dev, st.st_ino)
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("user.")}
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, extra, sorted(xattrs.items()))
    # The first path in sorted order, not in walk order: readdir order differs between the
    # running container's upper directory and the committed layer (it does on Linux 6.1).
    for rel, inode in linked.items():
        mode, uid, gid, extra, xattrs = out[rel]
        out[rel] = (mode, uid, gid, (extra, min(inodes[inode])), xattrs)
    return out


def start_changed(store: ImageStore, script: str, name: str | None = None,
                  keep: bool = False) -> Container:
    """A busybox container that made CHANGES and now sleeps (until killed)."""
    # --net none: CHANGES edits /etc/hostname, which on a network is the network's own file.
    c = Container(make_spec(["sh", "-c", script + "\nexec sleep 1000"], image="busybox",
                            name=name, net="none"), root=store.root, keep=keep,
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c.start()
    deadline = time.monotonic() + 20
    while not os.path.exists(f"/proc/{c.pid}/root/ready"):
        assert c.poll() is None, "the change script failed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return c


def start_idle(image: str, store: ImageStore) -> Container:
    # --net none: the comparison is of the image's files (a network brings its /etc files).
    c = Container(make_spec(["sleep", "1000"], image=image, net="none"), root=store.root,
                  stdin=subprocess.DEVNULL)
    c.start()
    while not os.path.isdir(f"/proc/{c.pid}/root/etc"):
        time.sleep(0.02)
    return c


def stop(c: Container) -> None:
    c.kill()
    c.wait()
    c.cleanup()


def test_round_trip_of_a_running_container_freezes_it_meanwhile(store, monkeypatch):
    c = start_changed(store, CHANGES)
    try:
        try:
            os.setxattr(f"/proc/{c.pid}/root/data/new.txt", "user.x", b"value")
            xattrs = [("user.x", b"value")]
        except OSError as err:  # tmpfs before Linux 6.6 (the v2 VM's store) has no user.*
            if err.errno != errno.EOPNOTSUPP:
                raise
            xattrs = []
        before = tree(f"/proc/{c.pid}/root")
        seen: list[tuple[str, bool]] = []
        real = commit_mod.publish_tree

        def spy(*args, **kwargs):
            st = state_mod.find(store.root, c.id)
            seen.append((st.status, c.cgroup.is_frozen()))
            return real(*args, **kwargs)

        monkeypatch.setattr(commit_mod, "publish_tree", spy)
        record = commit(c.id, "committed:v1", root=store.root, message="the lesson")
        assert seen == [("paused", True)]                 # frozen while read...
        assert not c.cgroup.is_frozen()                   # ...and thawed afterwards
        assert state_mod.find(store.root, c.id).status == "running"
        assert c.poll() is None
    finally:
        stop(c)
    busybox = ensure_busybox(store)
    assert record.layers[:-1] == busybox.layers and len(record.layers) == 2
    assert record.history[-1].comment == "the lesson"
    assert "sleep 1000" in record.history[-1].created_by
    assert record.cmd == busybox.cmd and record.env == busybox.env
    new = start_idle("committed:v1", store)
    try:
        after = tree(f"/proc/{new.pid}/root")
    finally:
        stop(new)
    # The new layer keeps the hardlink: one inode for both names (what the kernel's overlay
    # then reports for a lower layer's hardlink is checked by the comparison below).
    layer = store.layer_path(record.layers[-1]) / "fs" / "data"
    assert os.lstat(layer / "hard").st_ino == os.lstat(layer / "new.txt").st_ino
    assert after == before
    # the changes the comparison must have seen, spelled out
    assert after["data/new.txt"][1:3] == (1000, 2000)
    assert after["data/new.txt"][4] == xattrs
    assert after["data/hard"][3] == after["data/new.txt"][3]
    assert after["data/link"][3] == "/data/new.txt"
    assert stat.S_IMODE(after["data/sub"][0]) == 0o4755
    assert stat.S_ISFIFO(after["data/fifo"][0])
    assert stat.S_IMODE(after["etc/group"][0]) == 0o600
    assert "etc/hostname" not in after
    assert stat.S_ISREG(after["home"][0])
    assert [k for k in after if k.startswith("usr/sbin/")] == ["usr/sbin/only"]


def test_stopped_container_commits_and_runs(store):
    c = Container(make_spec(["sh", "-c", "echo kept > /kept; rm /etc/passwd"], image="busybox",
                            name="stopped-one"), root=store.root, keep=True,
                  stdin=subprocess.DEVNULL)
    try:
        c.start()
        assert c.wait().exit_code == 0
        c.cleanup()
        record = commit("stopped-one", "from-stopped", root=store.root)
    finally:
        c.cleanup()
        manage.remove(c.id, force=True, root=store.root)
    layer = store.layer_fs(record.layers[-1])
    assert (layer / "kept").read_text() == "kept\n"
    assert os.path.exists(layer / "etc" / "passwd")      # the whiteout (0/0 char device)
    assert stat.S_ISCHR(os.lstat(layer / "etc" / "passwd").st_mode)
    rfd, wfd = os.pipe()
    c2 = Container(make_spec(["sh", "-c", "cat /kept; test -e /etc/passwd || echo no-passwd"],
                             image="from-stopped"), root=store.root, stdin=subprocess.DEVNULL,
                   stdout=wfd)
    try:
        c2.start()
    finally:
        os.close(wfd)
    try:
        assert c2.wait().exit_code == 0
    finally:
        c2.cleanup()
    with os.fdopen(rfd) as f:
        assert f.read() == "kept\nno-passwd\n"


def test_unchanged_container_gives_an_empty_history_step(store):
    c = start_idle("busybox", store)
    try:
        record = commit(c.id, "same", root=store.root)
    finally:
        stop(c)
    assert record.layers == ensure_busybox(store).layers
    assert record.history[-1].empty_layer


def test_host_and_none_containers_are_refused(store):
    for image, why in (("host", "host image cannot be a base"), ("none", "no filesystem")):
        c = Container(make_spec(["true"], image=image), root=store.root, keep=True,
                      stdin=subprocess.DEVNULL)
        try:
            c.start()
            c.wait()
            with pytest.raises(ContainerError, match=why):
                commit(c.id, "nope", root=store.root)
        finally:
            c.cleanup()
            manage.remove(c.id, force=True, root=store.root)
    assert store.find_image("nope") is None


def test_changed_base_image_is_refused(store, tmp_path):
    from nbcontainer.building.build import build_from_text

    build_from_text("FROM busybox\nRUN echo 1 > /v\n", "base", tmp_path, root=store.root,
                    out=lambda s: None)
    c = start_idle("base", store)
    try:
        build_from_text("FROM busybox\nRUN echo 2 > /v\n", "base", tmp_path, root=store.root,
                        out=lambda s: None)
        with pytest.raises(ImageError, match="has changed since container"):
            commit(c.id, "on-old-base", root=store.root)
    finally:
        stop(c)


def test_cli_commit_with_message(store):
    env = {**os.environ, "NBCONTAINER_ROOT": str(store.root)}

    def nbc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nbcontainer", *args], env=env,
                              capture_output=True, text=True)

    assert nbc("run", "--name", "clicommit", "busybox", "sh", "-c",
               "echo hi > /hi").returncode == 0
    try:
        p = nbc("commit", "clicommit", "clicommitted:1", "-m", "from the CLI")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("sha256:")
        shown = nbc("history", "clicommitted:1").stdout.splitlines()[1]
        assert "from the CLI" in shown and "3B" in shown
        bad = nbc("commit", "no-such-container", "x")
        assert bad.returncode == 125 and "no such container" in bad.stderr
    finally:
        nbc("rm", "-f", "clicommit")


def run_stopped(store: ImageStore, name: str) -> Container:
    """A kept busybox container that made CHANGES and exited."""
    c = Container(make_spec(["sh", "-c", CHANGES], image="busybox", name=name, net="none"),
                  root=store.root, keep=True, stdin=subprocess.DEVNULL,
                  stdout=subprocess.DEVNULL)
    c.start()
    assert c.wait().exit_code == 0
    c.cleanup()
    return c


def seen_in(image: str, store: ImageStore) -> dict[str, tuple]:
    c = start_idle(image, store)
    try:
        return tree(f"/proc/{c.pid}/root")
    finally:
        stop(c)


def test_stopped_container_commit_moves_its_upper_directory(store, tmp_path):
    from nbcontainer.images.snapshot import publish_tree

    c = run_stopped(store, "moved-one")
    try:
        upper = c.upper_dir
        inode = os.lstat(upper).st_ino
        # the old path, on the same upper directory (it only reads it), in a store of its own
        reference = publish_tree(ImageStore(tmp_path / "reference"), upper, "ref")
        record = commit("moved-one", "moved:1", root=store.root)
        assert reference is not None and record.layers[-1] == reference.diff_id
        layer = store.layer_fs(record.layers[-1])
        assert os.lstat(layer).st_ino == inode                # renamed, not copied
        assert tree(str(layer)) == tree(str(ImageStore(tmp_path / "reference").layer_fs(
            reference.diff_id)))
        # the container keeps what it saw: its image's layers, the committed one, a new upper
        st = state_mod.find(store.root, "moved-one")
        busybox = ensure_busybox(store)
        assert st.status == "exited"
        assert st.layers == [str(store.layer_fs(d)) for d in busybox.layers] + [str(layer)]
        assert upper.is_dir() and os.listdir(upper) == []
        # a second commit carries the moved layer (and records that nothing changed since)
        again = commit("moved-one", "moved:2", root=store.root)
        assert again.layers == record.layers
        assert [h.empty_layer for h in again.history[-2:]] == [False, True]
        assert sum(not h.empty_layer for h in again.history) == len(again.layers)
        first = seen_in("moved:1", store)
        assert seen_in("moved:2", store) == first
        assert "etc/hostname" not in first and first["data/new.txt"][1:3] == (1000, 2000)
        assert [k for k in first if k.startswith("usr/sbin/")] == ["usr/sbin/only"]
        # no image names the layer any more: the container still does, so it stays
        store.remove_image("moved:1")
        store.remove_image("moved:2")
        assert store.has_layer(record.layers[-1])
        # and the CLI still lists and removes it (plain `rm`: it is stopped)
        env = {**os.environ, "NBCONTAINER_ROOT": str(store.root)}
        ps = subprocess.run([sys.executable, "-m", "nbcontainer", "ps", "-a"], env=env,
                            capture_output=True, text=True)
        assert ps.returncode == 0 and "moved-one" in ps.stdout, ps
        rm = subprocess.run([sys.executable, "-m", "nbcontainer", "rm", "moved-one"], env=env,
                            capture_output=True, text=True)
        assert rm.returncode == 0, rm.stderr
    finally:
        if c.dir.exists():
            manage.remove(c.id, force=True, root=store.root)
    assert not c.dir.exists()
    assert store.gc()["layers"] == [record.layers[-1]]


def test_concurrent_commits_of_a_stopped_container_both_keep_its_changes(store):
    import threading

    c = run_stopped(store, "twice")
    records: dict[str, object] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: records.__setitem__(
            n, commit("twice", f"twice:{n}", root=store.root))) for n in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(records) == {1, 2}
        layers = [r.layers for r in records.values()]  # type: ignore[attr-defined]
        assert layers[0] == layers[1] and len(layers[0]) == 2
        assert seen_in("twice:1", store) == seen_in("twice:2", store)
    finally:
        manage.remove(c.id, force=True, root=store.root)
