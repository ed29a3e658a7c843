"""Progress of long work as users see it: one display updated in place in a real kernel, plain
lines from the CLI when its stderr is not a terminal, in-place lines when it is (a real pty)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_magics_kernel import Kernel, kernel  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "nbcontainer"]


def test_build_progress_is_one_display_updated_in_place(kernel: Kernel) -> None:  # noqa: F811
    cell = kernel.run("%%containerfile progress-demo\nFROM busybox\nRUN echo one > /one\n"
                      "ENV A=1\nRUN echo two > /two\n", timeout=120)
    try:
        assert cell.reply["status"] == "ok", cell.stream("stderr")
        shown = [m["content"] for _, m in cell.of("display_data")
                 if "text/html" in m["content"]["data"]]
        updates = [m["content"] for _, m in cell.of("update_display_data")]
        assert len(shown) == 1, shown  # one display, not one per step
        display_id = shown[0]["transient"]["display_id"]
        assert updates and {u["transient"]["display_id"] for u in updates} == {display_id}
        last = updates[-1]["data"]["text/plain"]
        assert last.startswith("build progress-demo:latest  4/4 steps  built "), last
        # the steps still stream as text below it
        assert "Step 4/4 : RUN echo two > /two" in cell.stream()
    finally:
        kernel.run("%container rmi progress-demo")


def _save_busybox(tmp_path: Path) -> Path:
    archive = tmp_path / "busybox.tar"
    subprocess.run([*CLI, "save", "busybox", "-o", str(archive)], check=True,
                   capture_output=True, timeout=120)
    return archive


def test_import_prints_plain_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    archive = _save_busybox(tmp_path)
    p = subprocess.run([*CLI, "import", str(archive), "plain-demo"], capture_output=True,
                       text=True, timeout=120)
    try:
        assert p.returncode == 0, p.stderr
        lines = p.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("layer 1/1 ") and \
            lines[0].endswith("  ..."), lines
        assert "already in the store" in lines[1]  # busybox's layer is there: nothing unpacked
        assert "\x1b" not in p.stderr and "\r" not in p.stderr
        assert p.stdout.startswith("sha256:")
    finally:
        subprocess.run([*CLI, "rmi", "plain-demo"], capture_output=True)
    # into an empty store, the layer is unpacked, and its size said
    fresh = {**os.environ, "NBCONTAINER_ROOT": str(tmp_path / "fresh-store")}
    p = subprocess.run([*CLI, "import", str(archive), "plain-demo"], capture_output=True,
                       text=True, timeout=120, env=fresh)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines()[1].endswith("MB  unpacked"), p.stderr


def test_import_draws_in_place_on_a_terminal(tmp_path: Path) -> None:
    archive = _save_busybox(tmp_path)
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([*CLI, "import", str(archive), "tty-demo"], stdin=slave,
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        chunks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        assert p.wait(60) == 0
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        subprocess.run([*CLI, "rmi", "tty-demo"], capture_output=True)
    raw = b"".join(chunks).decode()
    assert f"importing {archive}" in raw
    assert "\x1b[2A" in raw  # the title and the layer's line, redrawn in place
    assert "already in the store" in raw
