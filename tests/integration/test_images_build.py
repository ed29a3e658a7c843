"""``build`` against the real runtime: the seed's 12-byte layer, the cache, COPY, config, failures.

Each RUN runs in a real container; the autouse ``no_leaks`` fixture checks that no container,
cgroup, mount or process is left, and the tests check the store for staging leftovers.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nbcontainer import Container, make_spec
from nbcontainer.building.build import BuildError, build, build_from_text
from nbcontainer.errors import ContainerError, UsageError
from nbcontainer.images.builtin import ensure_busybox
from nbcontainer.images.store import ImageStore

pytestmark = pytest.mark.root

LESSON = 'FROM busybox\nRUN echo "Hello world" > /tmp/newfile\n'


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    """A fresh store per test, so layer counts and cache hits are this test's own."""
    return ImageStore(tmp_path / "store")


def lines_of(fn, *args, **kwargs) -> tuple[object, list[str]]:
    """Call a build function collecting what it prints."""
    out: list[str] = []
    return fn(*args, out=out.append, **kwargs), out


def run_image(image: str, root: Path, command: list[str] | None = None) -> tuple[int, str]:
    """Run ``image`` (its default command unless one is given); return (status, output)."""
    rfd, wfd = os.pipe()
    c = Container(make_spec(command or [], image=image), root=root, stdout=wfd, stderr=wfd,
                  stdin=subprocess.DEVNULL)
    try:
        c.start()
    finally:
        os.close(wfd)
    try:
        result = c.wait()
    finally:
        c.cleanup()
    with os.fdopen(rfd) as f:
        return result.exit_code, f.read()


def assert_no_staging(store: ImageStore) -> None:
    assert [p for p in os.listdir(store.tmp) if not p.endswith(".lock")] == []
    assert [p for p in os.listdir(store.tmp) if p.endswith(".lock")] == []


def test_lesson_adds_one_twelve_byte_layer_on_the_shared_busybox_layer(store, tmp_path):
    record, out = lines_of(build_from_text, LESSON, "changed-busybox", tmp_path, root=store.root)
    busybox = ensure_busybox(store)
    assert record.layers[:-1] == busybox.layers          # the base layer is shared...
    assert len(record.layers) == len(busybox.layers) + 1  # ...and exactly one layer is added
    new = store.layer_meta(record.layers[-1])
    assert new.size == 12                                 # "Hello world\n"
    files = sorted(str(p.relative_to(store.layer_fs(new.diff_id)))
                   for p in store.layer_fs(new.diff_id).rglob("*"))
    assert files == ["tmp", "tmp/newfile"]
    assert len(os.listdir(store.layers)) == 2             # busybox's layer stored once
    last = record.history[-1]
    assert (last.size, last.empty_layer) == (12, False)
    assert last.created_by == 'RUN /bin/sh -c echo "Hello world" > /tmp/newfile'
    assert out[0] == "Step 1/2 : FROM busybox"
    assert "Step 2/2 : RUN echo \"Hello world\" > /tmp/newfile" in out
    assert out[-1] == "Successfully tagged changed-busybox:latest"
    assert store.get_image("changed-busybox").id == record.id
    assert run_image("changed-busybox", store.root, ["cat", "/tmp/newfile"]) == (0, "Hello world\n")
    assert_no_staging(store)


def test_rebuild_is_served_by_the_cache(store, tmp_path):
    first, _ = lines_of(build_from_text, LESSON, "lesson", tmp_path, root=store.root)
    layers = sorted(os.listdir(store.layers))
    again, out = lines_of(build_from_text, LESSON, "lesson:v2", tmp_path, root=store.root)
    assert " ---> Using cache" in out
    assert not any(line.startswith(" ---> Running in") for line in out)
    assert again.id == first.id and again.layers == first.layers
    assert sorted(os.listdir(store.layers)) == layers     # no new layer


def test_history_cli_shows_created_by_and_sizes(store, tmp_path):
    build_from_text(LESSON, "hist", tmp_path, root=store.root, out=lambda s: None)
    env = {**os.environ, "NBCONTAINER_ROOT": str(store.root)}
    shown = subprocess.run([sys.executable, "-m", "nbcontainer", "history", "hist", "--no-trunc"],
                           capture_output=True, text=True, env=env, check=True).stdout
    top = shown.splitlines()[1]
    assert 'RUN /bin/sh -c echo "Hello world" > /tmp/newfile' in top and "12B" in top
    assert "busybox" in shown.splitlines()[2]


def test_cli_build_streams_steps(store, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text('FROM busybox\nRUN echo streamed-output\n')
    env = {**os.environ, "NBCONTAINER_ROOT": str(store.root)}
    p = subprocess.run([sys.executable, "-m", "nbcontainer", "build", "-t", "clibuilt", str(ctx)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines.index("Step 2/2 : RUN echo streamed-output") < lines.index("streamed-output")
    assert lines[-1] == "Successfully tagged clibuilt:latest"


def test_copy_keeps_modes_and_copies_directories(store, tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "tree" / "sub").mkdir(parents=True)
    (ctx / "app.sh").write_text("#!/bin/sh\necho app\n")
    os.chmod(ctx / "app.sh", 0o751)
    (ctx / "tree" / "sub" / "data").write_text("data\n")
    os.chmod(ctx / "tree" / "sub" / "data", 0o640)
    os.symlink("../app.sh", ctx / "tree" / "link")   # inside the context: kept as a link
    (ctx / "Containerfile").write_text(
        "FROM busybox\nWORKDIR /srv\nCOPY app.sh ./bin/\nCOPY tree /opt/tree/\n"
        'COPY ["app.sh", "/renamed"]\n')
    record, _ = lines_of(build, ctx, "copied", root=store.root)
    code, out = run_image("copied", store.root, [
        "sh", "-c", "stat -c '%n %a %u:%g' /srv/bin/app.sh /opt/tree/sub/data /renamed /tmp; "
                    "readlink /opt/tree/link; /srv/bin/app.sh"])
    assert code == 0, out
    assert out.splitlines() == ["/srv/bin/app.sh 751 0:0", "/opt/tree/sub/data 640 0:0",
                                "/renamed 751 0:0", "/tmp 1777 0:0", "../app.sh", "app"]
    # parent directories that exist below keep their attributes in the COPY layer
    copy_layer = store.layer_fs(record.layers[-1])
    assert [p.name for p in copy_layer.iterdir()] == ["renamed"]


@pytest.mark.parametrize("source, why", [
    ("../outside", "outside the build context"),
    ("/etc/passwd", "outside the build context"),
    ("sub/../../outside", "outside the build context"),
    ("evil", "symlink pointing outside"),
    ("evildir/passwd", "symlink pointing outside"),
    ("missing", "not found"),
])
def test_copy_cannot_escape_the_context(store, tmp_path, source, why):
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (tmp_path / "outside").write_text("secret\n")
    os.symlink("/etc/passwd", ctx / "evil")
    os.symlink("/etc", ctx / "evildir")
    with pytest.raises(UsageError, match=why) as info:
        build_from_text(f"FROM busybox\nCOPY {source} /x\n", "escape", ctx, root=store.root,
                        out=lambda s: None)
    assert str(info.value).startswith("line 2: COPY:")
    assert store.find_image("escape") is None
    assert_no_staging(store)


def test_copy_cache_follows_the_content(store, tmp_path):
    (tmp_path / "f").write_text("one\n")
    text = "FROM busybox\nCOPY f /f\n"
    first, _ = lines_of(build_from_text, text, "c", tmp_path, root=store.root)
    _, out = lines_of(build_from_text, text, "c", tmp_path, root=store.root)
    assert " ---> Using cache" in out
    (tmp_path / "f").write_text("two\n")
    second, out = lines_of(build_from_text, text, "c", tmp_path, root=store.root)
    assert " ---> Using cache" not in out and second.layers[-1] != first.layers[-1]
    os.chmod(tmp_path / "f", 0o700)
    _, out = lines_of(build_from_text, text, "c", tmp_path, root=store.root)
    assert " ---> Using cache" not in out


def test_config_steps_reach_the_image_and_its_default_command(store, tmp_path):
    text = ('FROM busybox\nENV GREETING=hello WHO="the class"\nENV LEGACY old style\n'
            "WORKDIR /work\nWORKDIR sub\nLABEL course=containers\n"
            "RUN echo \"$GREETING\" > here\n"
            'CMD echo "$GREETING $WHO $LEGACY from $(pwd)"; cat here\n')
    record, _ = lines_of(build_from_text, text, "configured", tmp_path, root=store.root)
    assert "GREETING=hello" in record.env and "WHO=the class" in record.env
    assert "LEGACY=old style" in record.env
    assert record.workdir == "/work/sub"
    assert record.cmd == ["/bin/sh", "-c", 'echo "$GREETING $WHO $LEGACY from $(pwd)"; cat here']
    assert record.labels["course"] == "containers"
    assert [h.empty_layer for h in record.history[1:]] == [True] * 5 + [False, True]
    assert run_image("configured", store.root) == (
        0, "hello the class old style from /work/sub\nhello\n")


def test_empty_run_adds_history_but_no_layer(store, tmp_path):
    record, out = lines_of(build_from_text, "FROM busybox\nRUN true\n", "noop", tmp_path,
                           root=store.root)
    assert record.layers == ensure_busybox(store).layers
    assert record.history[-1].empty_layer and record.history[-1].created_by.startswith("RUN")
    assert " ---> no file changes (empty layer)" in out


def test_failing_run_stops_the_build_and_leaves_nothing(store, tmp_path):
    text = "FROM busybox\nRUN echo partial > /f; exit 3\nRUN echo never\n"
    out: list[str] = []
    with pytest.raises(BuildError, match=r"step 2/3 \(line 2: RUN .*exited with code 3"):
        build_from_text(text, "broken", tmp_path, root=store.root, out=out.append)
    assert "partial" not in out and not any("never" in line for line in out)
    assert store.find_image("broken") is None
    assert len(os.listdir(store.layers)) == 1            # only busybox
    assert os.listdir(store.root / "containers") in ([], [".lock"])
    assert_no_staging(store)


@pytest.mark.parametrize("text, message", [
    ("FROM busybox\n\nADD x /x\n",
     "line 3: unsupported instruction ADD; supported: FROM, RUN, COPY, ENV, WORKDIR, CMD, LABEL"),
    ("FROM host\nRUN true\n", "line 1: FROM: the host image cannot be a base"),
    ("FROM nosuchimage\n", "line 1: FROM: image 'nosuchimage' not found"),
    ("FROM busybox AS one\n", "multi-stage"),
])
def test_bad_containerfiles_fail_before_anything_runs(store, tmp_path, text, message):
    with pytest.raises(ContainerError) as info:
        build_from_text(text, "bad", tmp_path, root=store.root, out=lambda s: None)
    assert message in str(info.value)
    assert store.find_image("bad") is None


def test_ownership_and_modes_from_run_survive(store, tmp_path):
    text = ("FROM busybox\nRUN mkdir -m 700 /secret && echo s > /secret/f && "
            "chown -R 1000:1000 /secret && rm /etc/group && rm -r /home\n")
    record, _ = lines_of(build_from_text, text, "owned", tmp_path, root=store.root)
    layer = store.layer_fs(record.layers[-1])
    st = os.lstat(layer / "secret")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 1000, 1000)
    code, out = run_image("owned", store.root, [
        "sh", "-c", "stat -c '%a %u' /secret; test -e /etc/group || echo gone; "
                    "test -e /home || echo gone"])
    assert (code, out) == (0, "700 1000\ngone\ngone\n")


def test_rmi_drops_the_layer_then_the_cache_misses_cleanly(store, tmp_path):
    first, _ = lines_of(build_from_text, LESSON, "gone", tmp_path, root=store.root)
    store.remove_image("gone")
    assert not store.has_layer(first.layers[-1])
    assert store.gc()["layers"] == []                     # rmi already took it
    again, out = lines_of(build_from_text, LESSON, "gone", tmp_path, root=store.root)
    assert " ---> Using cache" not in out
    assert again.layers[:-1] == first.layers[:-1]         # the busybox layer stayed
    assert store.layer_meta(again.layers[-1]).size == 12  # (a new mtime: a new diff_id)
    assert run_image("gone", store.root, ["cat", "/tmp/newfile"]) == (0, "Hello world\n")


@pytest.mark.slow  # ~5 s here; the import of 500 layers is minutes under the v2 VM's TCG
def test_five_hundred_layers_in_one_overlay_mount(store, tmp_path):
    """overlayfs stacks at most 500 lower layers; an image of exactly 500 runs, each layer
    visible and the topmost winning (mount(2) data is one page: the lowerdir must be short)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
    from test_images_helpers import entry, make_oci_layout, make_tar

    from nbcontainer.images.oci import import_image

    base = make_tar([entry("bin", "dir"), entry("bin/busybox", data=Path("/bin/busybox")
                                                .read_bytes(), mode=0o755),
                     entry("bin/sh", "sym", linkname="busybox"),
                     entry("bin/ls", "sym", linkname="busybox"),
                     entry("bin/cat", "sym", linkname="busybox"),
                     entry("bin/wc", "sym", linkname="busybox"), entry("layers", "dir")])
    layers = [base] + [make_tar([entry(f"layers/{i}", data=f"{i}\n".encode()),
                                 entry("top", data=f"{i}\n".encode())]) for i in range(1, 500)]
    record = import_image(make_oci_layout(tmp_path / "in", layers), "tall:500", store.root)
    assert len(record.layers) == 500
    code, out = run_image("tall:500", store.root,
                          ["sh", "-c", "ls /layers | wc -l; cat /top /layers/1 /layers/250"])
    assert code == 0, out
    assert out.split() == ["499", "499", "1", "250"]
