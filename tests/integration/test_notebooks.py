"""The teaching notebooks (SPEC section 6), executed top to bottom as a reader's "Run All" would,
in every edition (en and zh, student and instructor: docs/course.md), and rendered as HTML.

Each notebook runs once, in a fresh ipykernel started in the notebook's own directory (so
``course`` picks the edition's language and edition) from a ``python3``-style kernelspec
written to a temporary directory and pointing at this interpreter (the kernel inherits this
session's private store, ``NBCONTAINER_ROOT``). notebooks/render.py does the running and the
rendering, for this test and for scripts/render-course alike. nbclient stops at the first
error in a cell that is not tagged ``raises-exception``; the test also checks that every tagged
cell really raised (the lesson shows its OOM kill), that the cgroups notebook keeps the live
memory plot as an image/png, and that the kernel is shut down before the test ends, gracefully
as Jupyter does (so its atexit hooks run: the magics remove their named containers, 01 its
hand-made bridge, also after a failed cell), so the autouse leak check sees every named
container, cgroup, mount and link the notebook made gone; bridges, which the leak check leaves
out, are checked here, and so is what 07 (build a container yourself) makes by hand, outside
nbcontainer, where the leak check does not look: its ``byo-*``/``mini-*`` cgroups, ``byo*``
links and ``byo-*`` work directories. In an instructor edition the solutions run and their checks
(``course.expect``) raise when a solution is wrong.

The executed notebook becomes its HTML page (in ``$NBCONTAINER_COURSE_HTML``, scripts/test
sets it to build/course, else a temporary directory); ``test_rendered_course`` then writes the
index and checks the pages: every image of the run is an ``<img>`` (02-cgroups' live plot
among them).

A second run executes every student edition as an unprivileged user (uid 65534), as on Binder:
the first cell must say that containers cannot run and every later cell must skip, not crash.
Whether the committed notebooks match their sources is tests/unit/test_course_sources.py's.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def load_render() -> Any:
    """notebooks/render.py as a module (a script, not part of the package)."""
    import importlib.util

    if "course_render" in sys.modules:
        return sys.modules["course_render"]
    spec = importlib.util.spec_from_file_location("course_render", NOTEBOOK_DIR / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["course_render"] = module
    spec.loader.exec_module(module)
    return module


render = load_render()
sys.path.insert(0, str(NOTEBOOK_DIR))
from course_messages import MESSAGES  # noqa: E402

sys.path.remove(str(NOTEBOOK_DIR))
PAGES = render.pages()
STUDENT = [p for p in PAGES if p.edition == "student"]
NOBODY = 65534
# "Under about two minutes" each on an idle machine; the bound leaves room for a busy 2-core VM.
MAX_SECONDS = 240
IMG = re.compile(r'<img[^>]+src="data:image/png;base64,')


def key(page: Any) -> str:
    return str(page.key)


class SharedConnectionKernelManager(KernelManager):
    """Writes the connection file where an unprivileged kernel can read it."""

    def write_connection_file(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().write_connection_file(**kwargs)
        os.chmod(self.connection_file, 0o644)


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


def hand_made() -> set[str]:
    """What lesson 07 makes by hand and names ``byo``/``mini``: cgroups (below any hierarchy),
    links, work directories in the temporary directory."""
    found = {f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith("byo")}
    found |= {f"dir {n}" for n in os.listdir(tempfile.gettempdir()) if n.startswith("byo-")}
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found |= {f"cgroup {dirpath}/{d}" for d in dirnames if d.startswith(("byo-", "mini-"))}
        if dirpath.count("/") > 8:
            dirnames.clear()
    return found


@pytest.fixture
def nothing_hand_made_left() -> Iterator[None]:
    """No ``byo``/``mini`` cgroup, link or work directory appeared during the test."""
    before = hand_made()
    yield
    left = hand_made() - before
    assert not left, f"the notebook left behind: {sorted(left)}"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``course-python3`` kernelspec (this interpreter) and a ``course-nobody`` one."""
    kernels = tmp_path_factory.mktemp("kernels")
    os.chmod(kernels, 0o755)
    render.write_kernelspec(kernels, "course-python3", [])
    render.write_kernelspec(kernels, "course-nobody",
                            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                             "--clear-groups"])
    return kernels


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the rendered pages go: ``$NBCONTAINER_COURSE_HTML`` (kept) or a temporary one."""
    wanted = os.environ.get("NBCONTAINER_COURSE_HTML")
    if wanted:
        out = Path(wanted)
        shutil.rmtree(out, ignore_errors=True)  # no page of an earlier run may pass for this one
        out.mkdir(parents=True)
        return out
    return tmp_path_factory.mktemp("course-html")


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Any, int]]:
    """The pages rendered by this module's runs: key -> (page, number of PNG outputs)."""
    return {}


@pytest.fixture(autouse=True)
def no_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels inherit this: importing notebooks/course.py must not write notebooks/__pycache__."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


@pytest.mark.root
@pytest.mark.parametrize("page", PAGES, ids=key)
def test_notebook_runs_as_root(page: Any, kernel_dir: Path, html_dir: Path,
                               rendered: dict[str, tuple[Any, int]],
                               nothing_hand_made_left: None) -> None:
    """Run All as root: no error outside ``raises-exception`` cells, and those do raise; then
    the executed notebook is rendered (also when it failed, as scripts/render-course does)."""
    before = bridges()
    nb, seconds, error = render.execute(page.path, kernel_dir, "course-python3")
    render.render(page, nb, html_dir)
    rendered[page.key] = (page, pngs(nb))
    assert not left_bridges(before), f"{page.key} left bridges: {left_bridges(before)}"
    print(f"{page.key}: {seconds:.1f} s")
    errors = errors_of(nb)
    untagged = [e for e in errors if "raises-exception" not in e[1]]
    assert error is None and not untagged, f"cells failed: {untagged or error}"
    first = render.first_output(nb)
    assert "CAN_RUN = True" in first, f"the environment check refused to run: {first}"
    failed_ids = {e[0] for e in errors}
    for cell in nb.cells:
        if "raises-exception" in cell.metadata.get("tags", []):
            assert cell.id in failed_ids, f"{page.key} cell {cell.id} is tagged "\
                "raises-exception but did not raise: the lesson no longer shows its failure"
    if page.lesson == "02-cgroups":
        assert pngs(nb) >= 1, "the cgroups notebook must keep the live memory plot as image/png"
        oom_cell = next(c for c in nb.cells if "raises-exception" in c.metadata.get("tags", []))
        assert any("image/png" in o.get("data", {}) for o in oom_cell.outputs), \
            "the OOM cell's output must hold its memory plot"
    assert seconds < MAX_SECONDS, f"{page.key} took {seconds:.0f} s"


@pytest.mark.root
def test_rendered_course(html_dir: Path, rendered: dict[str, tuple[Any, int]]) -> None:
    """The HTML of the runs above: every page holds each of its run's images as an embedded
    ``<img>`` (02-cgroups: the live memory plot's final frames), and the index links every
    page. Runs after them (pytest keeps the file's order)."""
    if not rendered:
        pytest.skip("no notebook ran in this session (run the whole file)")
    index = render.write_index(html_dir, [(p, render.title(nbformat.read(
        p.out(html_dir, ".ipynb"), as_version=4))) for p, _ in rendered.values()])
    links = set(re.findall(r'href="([^"]+)"', index.read_text(encoding="utf-8")))
    for page, images in rendered.values():
        target = page.out(html_dir, ".html")
        assert target.relative_to(html_dir).as_posix() in links, f"the index misses {target}"
        text = target.read_text(encoding="utf-8")
        assert len(IMG.findall(text)) == images, \
            f"{target}: {len(IMG.findall(text))} embedded images, the run made {images}"
        if page.lesson == "02-cgroups":
            assert images >= 2, f"{target}: the live memory plots are missing"
    missing = [p.key for p in PAGES if p.key not in rendered]
    if missing:
        pytest.skip(f"pages checked; not rendered in this session: {', '.join(missing)}")


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
@pytest.mark.parametrize("page", STUDENT, ids=key)
def test_notebook_skips_without_root(page: Any, kernel_dir: Path, nobody_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     nothing_hand_made_left: None) -> None:
    """As on Binder (no root): the first cell says so in the edition's language, and no cell
    crashes."""
    home = nobody_dir / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(home / ".ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / ".mpl"))
    nb, _, error = render.execute(page.path, kernel_dir, "course-nobody",
                                  SharedConnectionKernelManager, connection_dir=nobody_dir)
    assert error is None and not errors_of(nb), \
        f"cells failed without root: {errors_of(nb) or error}"
    first = render.first_output(nb)
    not_root = MESSAGES[page.language]["env.not_root"]
    assert "CAN_RUN = False" in first and not_root in first, first
