"""Build the course notebooks from their sources: one MyST markdown file per lesson and language.

    .venv/bin/python notebooks/build.py           # rewrites every edition (docs/course.md)
    .venv/bin/python notebooks/build.py --check   # exit 1, naming each stale file; writes nothing

Sources: ``notebooks/src/LANG/NN-name.md`` (jupytext MyST markdown). Each language present
(``en`` always, ``zh`` once ``notebooks/src/zh`` holds lessons) gets two editions:

* the **student** edition: cells tagged ``solution`` stripped (an ``exercise`` cell, the blank
  answer, stays), in ``notebooks/`` (en: today's paths and links) or ``notebooks/zh/``;
* the **instructor** edition: every cell, in ``notebooks/instructor/`` or
  ``notebooks/zh/instructor/``.

Cell ids come from the cell itself, never from its position (inserting a cell renumbers
nothing): an explicit ``:name:`` option, else a hash of the lesson name, cell type and source
(``-2``, ``-3`` for repeats). A zh code cell is identical to its en twin, so it gets the same
id. No outputs are ever written. Each edition directory below ``notebooks/`` gets symlinks to
``notebooks/course.py`` and ``course_messages.py``, so the lessons' ``import course`` works there
(and course.py tells the language and edition from the kernel's working directory).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
LANGUAGES = ("en", "zh")  # en first: every other language is checked against it
EDITIONS = ("student", "instructor")
LESSON = re.compile(r"[0-9][0-9]-[a-z0-9-]+")
ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # nbformat 4.5's cell id rule
# solution: the instructor's answer (stripped from the student edition); exercise: the blank
# answer cell the student fills in; hint: a markdown hint (a <details> block); raises-exception:
# a cell that fails on purpose (nbclient and the tests let it, and check that it did).
TAGS = ("solution", "exercise", "hint", "raises-exception")
OPTIONS = ("tags", "name")  # a cell's option block may hold only these
# Linked into every edition directory below notebooks/, so the lessons' `import course` works.
COURSE_FILES = ("course.py", "course_messages.py")
METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                   "name": "python3"},
    "language_info": {"name": "python"},
}


class SourceError(Exception):
    """A lesson source breaks an authoring rule (docs/course.md, "Editing the course")."""


@dataclass(frozen=True)
class Cell:
    kind: str  # "code" or "markdown"
    source: str
    tags: tuple[str, ...]
    id: str


def edition_dir(language: str, edition: str, root: Path = HERE) -> Path:
    """Where an edition's notebooks go: en's student edition keeps today's ``notebooks/``."""
    base = root if language == "en" else root / language
    return base / "instructor" if edition == "instructor" else base


def lessons(language: str, src: Path = SRC) -> dict[str, Path]:
    """The lesson sources of ``language``: name (``NN-name``) -> path."""
    return {p.stem: p for p in sorted((src / language).glob("[0-9][0-9]-*.md"))}


def languages(src: Path = SRC) -> list[str]:
    """The languages that have lessons (en first)."""
    return [lang for lang in LANGUAGES if lessons(lang, src)]


def read_cells(path: Path) -> list[Cell]:
    """Parse one source into cells with their stable ids, checking the authoring rules."""
    lesson = path.stem
    where = f"{path.parent.name}/{path.name}"
    if not LESSON.fullmatch(lesson):
        raise SourceError(f"{where}: a lesson file is named NN-name.md (digits, then lowercase "
                          "letters, digits and dashes)")
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="md:myst")
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(nb.cells, 1):
        here = f"{where}, cell {number} ({raw.source.splitlines()[0][:40] if raw.source else ''!r})"
        if raw.cell_type not in ("code", "markdown"):
            raise SourceError(f"{here}: a {raw.cell_type} cell; the course has code and "
                              "markdown cells only")
        unknown = sorted(set(raw.metadata) - set(OPTIONS))
        if unknown:
            raise SourceError(f"{here}: unknown cell option {', '.join(unknown)}; a cell's "
                              f"options are {' and '.join(OPTIONS)}")
        tags = tuple(raw.metadata.get("tags", ()))
        bad = [t for t in tags if t not in TAGS]
        if bad:
            raise SourceError(f"{here}: unknown tag {', '.join(map(repr, bad))}; the tags are "
                              f"{', '.join(TAGS)}")
        if "solution" in tags and "exercise" in tags:
            raise SourceError(f"{here}: a cell is either the solution or the blank exercise "
                              "cell, not both")
        if raw.cell_type == "markdown" and ("exercise" in tags or "raises-exception" in tags):
            raise SourceError(f"{here}: the exercise and raises-exception tags are for code "
                              "cells")
        name = raw.metadata.get("name")
        if name is not None:
            if not isinstance(name, str) or not ID.fullmatch(name):
                raise SourceError(f"{here}: the name {name!r} is not a cell id (1 to 64 "
                                  "letters, digits, '-' or '_')")
            base = name
        else:
            digest = hashlib.sha256(
                f"{lesson}\0{raw.cell_type}\0{raw.source}".encode()).hexdigest()
            base = f"{lesson[:2]}-{digest[:8]}"
        seen[base] = seen.get(base, 0) + 1
        if name is not None and seen[base] > 1:
            raise SourceError(f"{here}: the name {name!r} is used twice in this lesson")
        cell_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        cells.append(Cell(raw.cell_type, raw.source, tags, cell_id))
    return cells


def notebook(cells: list[Cell], edition: str) -> nbformat.NotebookNode:
    """The edition's notebook: no outputs, no execution counts, only the tags as metadata."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = nbformat.from_dict(METADATA)
    for cell in cells:
        if edition == "student" and "solution" in cell.tags:
            continue
        new = (nbformat.v4.new_code_cell if cell.kind == "code"
               else nbformat.v4.new_markdown_cell)(cell.source)
        new.id = cell.id
        if cell.tags:
            new.metadata["tags"] = list(cell.tags)
        nb.cells.append(new)
    nbformat.validate(nb)
    return nb


def expected(root: Path = HERE, src: Path = SRC) -> tuple[dict[Path, str], dict[Path, str]]:
    """Every file the build writes (path -> text) and every symlink (path -> its target)."""
    files: dict[Path, str] = {}
    links: dict[Path, str] = {}
    for language in languages(src):
        for name, path in lessons(language, src).items():
            cells = read_cells(path)
            for edition in EDITIONS:
                text = nbformat.writes(notebook(cells, edition))
                files[edition_dir(language, edition, root) / f"{name}.ipynb"] = text + "\n"
        for edition in EDITIONS:
            folder = edition_dir(language, edition, root)
            if folder != root:
                for name in COURSE_FILES:
                    links[folder / name] = os.path.relpath(root / name, folder)
    return files, links


def stale(root: Path = HERE, src: Path = SRC) -> tuple[list[Path], list[Path]]:
    """(files and links to write, notebooks no source makes any more) for ``root``."""
    files, links = expected(root, src)
    write = [p for p, text in files.items()
             if not p.is_file() or p.is_symlink() or p.read_text(encoding="utf-8") != text]
    write += [p for p, target in links.items()
              if not p.is_symlink() or os.readlink(p) != target]
    dirs = {edition_dir(lang, ed, root) for lang in LANGUAGES for ed in EDITIONS}
    orphans = sorted(p for d in dirs for p in d.glob("[0-9][0-9]-*.ipynb") if p not in files)
    return sorted(write), orphans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming every stale or orphaned file")
    args = parser.parse_args(argv)
    try:
        files, links = expected()
        write, orphans = stale()
    except SourceError as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 2
    show = {p: p.relative_to(HERE.parent) for p in [*write, *orphans]}
    if args.check:
        for p in write:
            print(f"stale: {show[p]}", file=sys.stderr)
        for p in orphans:
            print(f"orphaned (no source makes it): {show[p]}", file=sys.stderr)
        if write or orphans:
            print("build.py: run `.venv/bin/python notebooks/build.py` and commit the result",
                  file=sys.stderr)
            return 1
        return 0
    for p in write:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p in links:
            if p.is_symlink() or p.exists():
                p.unlink()
            p.symlink_to(links[p])
        else:
            if p.is_symlink():
                p.unlink()
            p.write_text(files[p], encoding="utf-8")
        print("wrote", show[p])
    for p in orphans:
        p.unlink()
        print("removed", show[p])
    return 0


if __name__ == "__main__":
    sys.exit(main())
