"""Execute every edition of the course and render it as static HTML, for readers without root.

    scripts/render-course [--out build/course]      # as root, after scripts/setup

Every lesson of every edition (en and zh, student and instructor: notebooks/build.py's layout)
runs top to bottom in a fresh kernel started in the notebook's own directory, as Jupyter does
(so ``course`` picks the language and edition), exactly once; its executed copy is kept as
``OUT/LANG/EDITION/NN-name.ipynb`` and converted to ``NN-name.html`` (nbconvert's lab template,
images embedded: the live memory plot's last frame is an ``<img>``); ``OUT/index.html`` links
them all. A cell that fails without a ``raises-exception`` tag stops that lesson: its page is
still written, up to the failing cell, and the run exits 1 naming it.

tests/integration/test_notebooks.py uses the same functions: it executes each edition once,
checks it, and renders its page from the same run.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def builder() -> ModuleType:
    """notebooks/build.py as a module (a script next to this one, not part of the package)."""
    if "course_build" in sys.modules:
        return sys.modules["course_build"]
    spec = importlib.util.spec_from_file_location("course_build", HERE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["course_build"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Page:
    """One lesson of one edition: its committed notebook and where its rendering goes."""

    language: str
    edition: str
    path: Path  # the committed notebook

    @property
    def lesson(self) -> str:
        return self.path.stem

    @property
    def key(self) -> str:
        return f"{self.language}-{self.edition}-{self.lesson}"

    def out(self, root: Path, suffix: str) -> Path:
        return root / self.language / self.edition / f"{self.lesson}{suffix}"


def pages(notebooks: Path = HERE) -> list[Page]:
    """Every lesson of every edition the sources make, en first, student before instructor."""
    build = builder()
    found = []
    for language in build.languages(notebooks / "src"):
        for edition in build.EDITIONS:
            folder = build.edition_dir(language, edition, notebooks)
            for name in build.lessons(language, notebooks / "src"):
                found.append(Page(language, edition, folder / f"{name}.ipynb"))
    return found


def write_kernelspec(kernel_dir: Path, name: str, argv_prefix: list[str]) -> None:
    """A ``python3``-style kernelspec running this interpreter (``argv_prefix``: e.g. setpriv)."""
    spec = kernel_dir / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [*argv_prefix, sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": f"Python 3 ({name})", "language": "python",
    }))


def execute(path: Path, kernel_dir: Path, name: str, km_class: Any = None,
            connection_dir: Path | None = None, timeout: int = 300) -> tuple[Any, float, Any]:
    """Run the notebook at ``path`` top to bottom in a fresh kernel of kernelspec ``name``,
    started in the notebook's directory; (the executed notebook, seconds, the error or None).

    A cell tagged ``raises-exception`` may fail; any other failure stops the run and is
    returned (nbclient's CellExecutionError), the notebook executed up to it. The kernel is
    shut down gracefully, as Jupyter does, so its atexit hooks run (the magics remove their
    named containers)."""
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    km = (km_class or KernelManager)(kernel_name=name, kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(kernel_dir)]))
    if connection_dir is not None:
        km.connection_file = str(connection_dir / f"kernel-{path.stem}.json")
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, startup_timeout=120,
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        error = err
    finally:
        if km.has_kernel:  # we own km, so nbclient leaves it running; graceful, as Jupyter
            km.shutdown_kernel(now=False)  # (a shutdown request, a kill after 5 s)
    return nb, time.monotonic() - start, error


def first_output(nb: Any) -> str:
    """What the first code cell (the environment check, ``CAN_RUN = ...``) printed."""
    cell = next((c for c in nb.cells if c.cell_type == "code"), None)
    return "".join(o.get("text", "") for o in cell.outputs) if cell is not None else ""


def title(nb: Any) -> str:
    """The lesson's title: its first markdown heading."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return "?"


def render(page: Page, nb: Any, out: Path) -> Path:
    """Keep the executed notebook and write its HTML page under ``out``; the page's path."""
    import nbformat
    from nbconvert import HTMLExporter

    target = page.out(out, ".html")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, page.out(out, ".ipynb"))
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title(nb)}})
    target.write_text(body, encoding="utf-8")
    return target


EDITION_NAMES = {"student": "student edition", "instructor": "instructor edition (solutions)"}
LANGUAGE_NAMES = {"en": "English", "zh": "中文"}


def write_index(out: Path, done: list[tuple[Page, str]]) -> Path:
    """``out/index.html``: one table per language, a row per lesson, a link per edition."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>nbcontainer: the course, rendered</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "td,th{padding:.3em 1em;text-align:left}</style></head><body>",
             "<h1>Containers from first principles: the course, rendered</h1>",
             "<p>Every notebook executed on a root machine, outputs included (docs/course.md)."
             "</p>"]
    for language in dict.fromkeys(p.language for p, _ in done):
        parts.append(f"<h2>{html.escape(LANGUAGE_NAMES.get(language, language))}</h2>")
        parts.append("<table><tr><th>lesson</th>" + "".join(
            f"<th>{html.escape(name)}</th>" for name in EDITION_NAMES.values()) + "</tr>")
        titles: dict[str, str] = {}
        links: dict[tuple[str, str], str] = {}
        for page, lesson_title in done:
            if page.language == language:
                titles.setdefault(page.lesson, lesson_title)
                links[page.lesson, page.edition] = f"{language}/{page.edition}/{page.lesson}.html"
        for lesson, lesson_title in titles.items():
            cells = "".join(
                f'<td><a href="{html.escape(links[lesson, e])}">{html.escape(lesson)}</a></td>'
                if (lesson, e) in links else "<td>-</td>" for e in EDITION_NAMES)
            parts.append(f"<tr><td>{html.escape(lesson_title)}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "course",
                        help="where the pages go (default: build/course)")
    parser.add_argument("lessons", nargs="*", metavar="LESSON",
                        help="only these lessons (e.g. 02-cgroups); default: all")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("render-course: run it as root: the lessons' demonstrations need root, and "
              "without it the pages would show them skipped", file=sys.stderr)
        return 1
    todo = [p for p in pages() if not args.lessons or p.lesson in args.lessons]
    unknown = sorted(set(args.lessons) - {p.lesson for p in todo})
    if unknown:
        print(f"render-course: no lesson {', '.join(unknown)}; the lessons are "
              f"{', '.join(sorted({p.lesson for p in pages()}))}", file=sys.stderr)
        return 2
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ next to the notebooks
    failed = []
    done = []
    with tempfile.TemporaryDirectory(prefix="nbc-render-") as kernels:
        write_kernelspec(Path(kernels), "course-python3", [])
        for page in todo:
            nb, seconds, error = execute(page.path, Path(kernels), "course-python3")
            target = render(page, nb, args.out)
            done.append((page, title(nb)))
            problem = None
            if error is not None:
                problem = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()[-1]
            elif "CAN_RUN = True" not in first_output(nb):
                problem = ("the environment check says containers cannot run here, so the "
                           "page shows the demonstrations skipped (see its first cell)")
            if problem is not None:
                failed.append(f"{page.key}: {problem}")
            print(f"{page.key}: {'FAILED' if problem else 'ok'} in {seconds:.0f} s -> {target}",
                  flush=True)
    index = write_index(args.out, done)
    print(f"index: {index}")
    for line in failed:
        print(f"render-course: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
