"""The teaching notebooks (SPEC section 6), executed top to bottom as a reader's "Run All" would.

Each notebook runs in a fresh ipykernel started from a ``python3``-style kernelspec written to a
temporary directory and pointing at this interpreter (the kernel inherits this session's private
store, ``NBCONTAINER_ROOT``). nbclient stops at the first error in a cell that is not tagged
``raises-exception``; the test also checks that every tagged cell really raised (the lesson
shows its OOM kill), that the cgroups notebook keeps the live memory plot as an image/png, and
that the kernel is shut down before the test ends, gracefully as Jupyter does (so its atexit
hooks run: the magics remove their named containers, 01 its hand-made bridge, also after a
failed cell), so the autouse leak check sees every named container, cgroup, mount and link the
notebook made gone; bridges, which the leak check leaves out, are checked here.

A second run executes every notebook as an unprivileged user (uid 65534), as on Binder: the
first cell must say that containers cannot run and every later cell must skip, not crash.
``test_committed_without_outputs`` and ``test_committed_match_sources`` need neither root
nor a kernel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
NOBODY = 65534
# "Under about two minutes" each on an idle machine; the bound leaves room for a busy 2-core VM.
MAX_SECONDS = 240


def load_builder() -> Any:
    """notebooks/build.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("course_build", NOTEBOOK_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("course_build", module)
    spec.loader.exec_module(module)
    return module


def ids(path: Path) -> str:
    return path.stem


def write_kernelspec(kernel_dir: Path, name: str, argv_prefix: list[str]) -> None:
    spec = kernel_dir / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [*argv_prefix, sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": f"Python 3 ({name})", "language": "python",
    }))


class SharedConnectionKernelManager(KernelManager):
    """Writes the connection file where an unprivileged kernel can read it."""

    def write_connection_file(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().write_connection_file(**kwargs)
        os.chmod(self.connection_file, 0o644)


def execute(path: Path, kernel_dir: Path, name: str, km_class: type[KernelManager] = KernelManager,
            connection_dir: Path | None = None) -> tuple[Any, float]:
    """Run the notebook in a fresh kernel of kernelspec ``name``; return it, executed, and secs."""
    nb = nbformat.read(path, as_version=4)
    km = km_class(kernel_name=name, kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(kernel_dir)]))
    if connection_dir is not None:
        km.connection_file = str(connection_dir / f"kernel-{path.stem}.json")
    client = nbclient.NotebookClient(nb, km=km, timeout=300, startup_timeout=120,
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.monotonic()
    try:
        client.execute()
    finally:
        if km.has_kernel:  # we own km, so nbclient leaves it running; graceful, as Jupyter
            km.shutdown_kernel(now=False)  # (a shutdown request, a kill after 5 s)
    return nb, time.monotonic() - start


def errors_of(nb: Any) -> list[tuple[str, list[str], str]]:
    """(cell id, tags, 'ename: evalue') of every cell whose output holds an error."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((cell.get("id", "?"), cell.metadata.get("tags", []),
                              f"{out['ename']}: {out['evalue']}"))
    return found


def pngs(nb: Any) -> int:
    return sum(1 for cell in nb.cells for out in cell.get("outputs", [])
               if "image/png" in out.get("data", {}))


def bridges() -> set[str]:
    """The host's bridges. The autouse leak check leaves bridges out (nbcontainer keeps its own
    ``nbc0``/``nbc-*`` like docker0), so the notebook test checks the ones a lesson makes by
    hand (01's ``demo-br<kernel pid>``) itself."""
    return {name for name in os.listdir("/sys/class/net")
            if os.path.isdir(f"/sys/class/net/{name}/bridge")}


def left_bridges(before: set[str]) -> list[str]:
    """Bridges made since ``before`` that are neither nbcontainer's own nor a running kernel's
    (01 names its bridge after its kernel's PID, so a class, or a test run next to this one,
    can run the lesson at the same time)."""
    def foreign(name: str) -> bool:
        match = re.fullmatch(r"demo-br(\d+)", name)
        return bool(match) and os.path.exists(f"/proc/{match.group(1)}")

    return sorted(b for b in bridges() - before
                  if b != "nbc0" and not b.startswith("nbc-") and not foreign(b))


def test_committed_without_outputs() -> None:
    """The notebooks in the repository carry no outputs or execution counts."""
    assert len(NOTEBOOKS) >= 5, f"expected the course notebooks in {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} cell {cell.id} has outputs"
                assert cell.execution_count is None, f"{path.name} cell {cell.id} was executed"


def test_committed_match_sources() -> None:
    """Every committed notebook is what notebooks/build.py makes of the sources in notebooks/src
    (a hand edit of an .ipynb, or a forgotten rebuild, fails here), and none is left over."""
    build = load_builder()
    write, orphans = build.stale()
    assert not write and not orphans, (
        f"stale: {[str(p.relative_to(NOTEBOOK_DIR)) for p in write]}, orphaned: "
        f"{[str(p.relative_to(NOTEBOOK_DIR)) for p in orphans]}: run "
        "`.venv/bin/python notebooks/build.py` and commit the result")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``course-python3`` kernelspec (this interpreter) and a ``course-nobody`` one."""
    kernels = tmp_path_factory.mktemp("kernels")
    os.chmod(kernels, 0o755)
    write_kernelspec(kernels, "course-python3", [])
    write_kernelspec(kernels, "course-nobody",
                     ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"])
    return kernels


@pytest.fixture(autouse=True)
def no_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels inherit this: importing notebooks/course.py must not write notebooks/__pycache__."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


@pytest.mark.root
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_as_root(path: Path, kernel_dir: Path) -> None:
    """Run All as root: no error outside ``raises-exception`` cells, and those do raise."""
    before = bridges()
    nb, seconds = execute(path, kernel_dir, "course-python3")
    assert not left_bridges(before), f"{path.name} left bridges: {left_bridges(before)}"
    print(f"{path.name}: {seconds:.1f} s")
    errors = errors_of(nb)
    untagged = [e for e in errors if "raises-exception" not in e[1]]
    assert not untagged, f"cells failed: {untagged}"
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "CAN_RUN = True" in first, f"the environment check refused to run: {first}"
    failed_ids = {e[0] for e in errors}
    for cell in nb.cells:
        if "raises-exception" in cell.metadata.get("tags", []):
            assert cell.id in failed_ids, f"{path.name} cell {cell.id} is tagged "\
                "raises-exception but did not raise: the lesson no longer shows its failure"
    if path.stem == "02-cgroups":
        assert pngs(nb) >= 1, "the cgroups notebook must keep the live memory plot as image/png"
        oom_cell = next(c for c in nb.cells if "raises-exception" in c.metadata.get("tags", []))
        assert any("image/png" in o.get("data", {}) for o in oom_cell.outputs), \
            "the OOM cell's output must hold its memory plot"
    assert seconds < MAX_SECONDS, f"{path.name} took {seconds:.0f} s"


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="nbc-course-nobody-"))
    os.chmod(path, 0o755)
    (path / "home").mkdir(mode=0o777)
    os.chmod(path / "home", 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_skips_without_root(path: Path, kernel_dir: Path, nobody_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Binder (no root): the first cell says so, and no cell crashes."""
    home = nobody_dir / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(home / ".ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / ".mpl"))
    nb, _ = execute(path, kernel_dir, "course-nobody", SharedConnectionKernelManager,
                    connection_dir=nobody_dir)
    assert not errors_of(nb), f"cells failed without root: {errors_of(nb)}"
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "CAN_RUN = False" in first and "not running as root" in first, first
