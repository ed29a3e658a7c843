"""Lesson 07 (build a container yourself), executed from its MyST source as "Run All" would.

The lesson builds its containers by hand (fork, unshare, mount, pivot_root, cgroup files, ip
links), outside nbcontainer, so what the autouse leak check knows of (nbcontainer's cgroups,
links, mounts, processes) is only part of what it could leave behind: this test also checks
its own names, the ``byo-*`` cgroups, bridge and work directories.

Three runs: the instructor edition as root (every step's check prints ✓, both exercises'
solutions pass), the student edition as root (solution cells stripped: the exercise checks
say "not yet" and nothing fails), and the student edition as uid 65534, as on Binder (the
first cell says containers cannot run, every later cell skips).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SOURCE = NOTEBOOKS / "src" / "en" / "07-build-a-container-yourself.md"
NOBODY = 65534
STEP_CHECKS = 10  # cells whose first line is "# CHECK step ..."
MAX_SECONDS = 180


def edition(student: bool) -> Any:
    nb = jupytext.read(SOURCE)
    if student:
        nb.cells = [c for c in nb.cells if "solution" not in c.metadata.get("tags", [])]
    return nb


class SharedConnectionKernelManager(KernelManager):
    """Writes the connection file where an unprivileged kernel can read it."""

    def write_connection_file(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().write_connection_file(**kwargs)
        os.chmod(self.connection_file, 0o644)


@pytest.fixture(scope="module")
def kernels() -> Iterator[Path]:
    """Kernelspecs for this interpreter: ``byo-root`` and ``byo-nobody`` (uid 65534)."""
    base = Path(tempfile.mkdtemp(prefix="nbc-lesson07-"))
    os.chmod(base, 0o755)
    for name, prefix in (("byo-root", []), ("byo-nobody", [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"])):
        (base / name).mkdir()
        (base / name / "kernel.json").write_text(json.dumps({
            "argv": [*prefix, sys.executable, "-m", "ipykernel_launcher", "-f",
                     "{connection_file}"],
            "display_name": name, "language": "python"}))
    (base / "home").mkdir(mode=0o777)
    os.chmod(base / "home", 0o777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run(nb: Any, kernels: Path, name: str) -> Any:
    """Execute ``nb`` in a fresh kernel; shut it down gracefully (so its atexit hooks run).
    nbclient raises at the first failing cell (none of this lesson's may fail)."""
    nobody = name == "byo-nobody"
    km = (SharedConnectionKernelManager if nobody else KernelManager)(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    if nobody:
        km.connection_file = str(kernels / "kernel-nobody.json")
    client = nbclient.NotebookClient(nb, km=km, timeout=300, startup_timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.monotonic()
    try:
        client.execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=False)
    assert time.monotonic() - start < MAX_SECONDS, f"took {time.monotonic() - start:.0f} s"
    return nb


def text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def mine() -> set[str]:
    """What the lesson names ``byo``: cgroups (below any hierarchy), links, work dirs."""
    found = {f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith("byo")}
    found |= {f"dir {n}" for n in os.listdir(tempfile.gettempdir()) if n.startswith("byo-")}
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found |= {f"cgroup {dirpath}/{d}" for d in dirnames if d.startswith(("byo-", "mini-"))}
        if dirpath.count("/") > 8:
            dirnames.clear()
    return found


@pytest.fixture
def nothing_left() -> Iterator[None]:
    before = mine()
    yield
    assert mine() - before == set(), f"lesson 07 left behind: {mine() - before}"


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("student", [False, True], ids=["instructor", "student"])
def test_lesson07_as_root(student: bool, kernels: Path, nothing_left: None,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    nb = run(edition(student), kernels, "byo-root")
    assert "CAN_RUN = True" in text(nb.cells[1]), text(nb.cells[1])
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# CHECK")]
    steps = [c for c in checks if c.source.startswith("# CHECK step")]
    assert len(steps) == STEP_CHECKS, [c.source.splitlines()[0] for c in steps]
    for cell in steps:
        assert text(cell).startswith("✓"), f"{cell.source.splitlines()[0]}: {text(cell)}"
    exercises = [text(c) for c in checks if c.source.startswith("# CHECK exercise")]
    assert len(exercises) == 2
    for out in exercises:
        assert out.startswith("not yet: " if student else "✓"), out


@pytest.mark.root
def test_lesson07_skips_without_root(kernels: Path, nothing_left: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Binder: the first cell says why nothing runs; no cell fails."""
    home = kernels / "home"
    for var, path in (("HOME", home), ("IPYTHONDIR", home / ".ipython"),
                      ("MPLCONFIGDIR", home / ".mpl")):
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    nb = run(edition(True), kernels, "byo-nobody")
    first = text(nb.cells[1])
    assert "CAN_RUN = False" in first and "not running as root" in first, first
    skipped = [c for c in nb.cells if "[skipped" in text(c)]
    assert len(skipped) >= 20, f"only {len(skipped)} cells said they skipped"
