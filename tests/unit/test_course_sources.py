"""The course's sources and its builder (docs/course.md, "Editing the course"); no root, no kernel.

The committed notebooks are the build of notebooks/src (every edition, no outputs); cell ids
do not move when a cell is inserted; the student edition leaves the solutions out; a zh lesson's
code cells are its en twin's (same cells, tags and ids); every message key a lesson uses
exists, in every language; the Python in the lessons passes ruff; ``course`` tells the
language and edition from the kernel's directory, and its exercise checks hint in the student
edition and raise in the instructor edition.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def load(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build = load("course_build", NOTEBOOKS / "build.py")
messages = load("course_messages", NOTEBOOKS / "course_messages.py").MESSAGES
KEY = re.compile(r"""["']((?:env|table|exercise|[0-9][0-9])\.[\w.?-]+)["']""")


def source(tmp_path: Path, text: str, name: str = "09-demo", language: str = "en") -> Path:
    path = tmp_path / "src" / language / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def code(body: str, options: str = "") -> str:
    return f"```{{code-cell}} ipython3\n{options}{body}\n```\n\n"


def test_committed_match_sources() -> None:
    """Every committed notebook and course link is what notebooks/build.py makes of
    notebooks/src, and no notebook is left from a removed lesson (a hand edit of an .ipynb,
    or a forgotten build, fails here)."""
    write, orphans = build.stale()
    assert not write and not orphans, (
        f"stale: {[str(p.relative_to(REPO)) for p in write]}, orphaned: "
        f"{[str(p.relative_to(REPO)) for p in orphans]}: run "
        "`.venv/bin/python notebooks/build.py` and commit the result")


def test_committed_without_outputs() -> None:
    """Every edition's notebooks are valid and carry no outputs or execution counts."""
    files, _ = build.expected()
    assert len(files) >= 12, f"expected the course's editions in {NOTEBOOKS}"
    for path in files:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path} cell {cell.id} has outputs"
                assert cell.execution_count is None, f"{path} cell {cell.id} was executed"


def test_check_names_stale_files(tmp_path: Path) -> None:
    """``build.py --check`` on a copy of notebooks/ (clean: test_committed_match_sources):
    exit 1 naming the notebooks an edited source makes stale; a build makes it clean again."""
    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, copy, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    run = [sys.executable, "-B", str(copy / "build.py")]
    src = copy / "src" / "en" / "03-union-filesystems.md"
    src.write_text(src.read_text() + "\nOne more paragraph.\n")
    checked = subprocess.run([*run, "--check"], capture_output=True, text=True)
    assert checked.returncode == 1, checked
    assert "stale: notebooks/03-union-filesystems.ipynb" in checked.stderr, checked.stderr
    assert "stale: notebooks/instructor/03-union-filesystems.ipynb" in checked.stderr
    assert "01-namespaces" not in checked.stderr
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert subprocess.run([*run, "--check"], capture_output=True).returncode == 0


def test_ids_come_from_the_cell_not_its_position(tmp_path: Path) -> None:
    """Inserting a cell changes no other cell's id; a repeated cell gets -2; ``:name:`` wins."""
    cells = ["# Demo\n\n", code("x = 1"), code("print(x)"), code("print(x)"),
             code("y = 2", ":name: the-answer\n\n")]
    path = source(tmp_path, "".join(cells))
    before = [c.id for c in build.read_cells(path)]
    assert before[2] + "-2" == before[3] and before[4] == "the-answer"
    assert all(re.fullmatch(r"09-[0-9a-f]{8}", i) for i in before[:3]), before
    source(tmp_path, "".join([*cells[:2], code("z = 0"), *cells[2:]]))
    after = [c.id for c in build.read_cells(path)]
    assert after[:2] + after[3:] == before and after[2] not in before


def test_student_edition_leaves_solutions_out(tmp_path: Path) -> None:
    text = ("Pick a limit.\n\n+++ {\"tags\": [\"hint\"]}\n\n<details>a hint</details>\n\n"
            + code("limit = ...", ":tags: [exercise]\n\n")
            + code('limit = "64m"', ":tags: [solution]\n\n")
            + "+++ {\"tags\": [\"solution\"]}\n\nWhy 64m works.\n\n"
            + code("course.expect(limit != ..., '09.limit.hint')"))
    cells = build.read_cells(source(tmp_path, text))
    student = build.notebook(cells, "student")
    teacher = build.notebook(cells, "instructor")
    assert [c.source for c in teacher.cells] == [c.source for c in cells]
    assert [c.source for c in student.cells] == [
        "Pick a limit.", "<details>a hint</details>", "limit = ...",
        "course.expect(limit != ..., '09.limit.hint')"]
    assert student.cells[2].metadata.tags == ["exercise"]
    assert [c.id for c in student.cells] == [c.id for c in teacher.cells
                                             if "solution" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("text, message", [
    (code("x = 1", ":tags: [solutoin]\n\n"), "unknown tag 'solutoin'"),
    (code("x = 1", ":editable: false\n\n"), "unknown cell option editable"),
    (code("x = 1", ":tags: [solution, exercise]\n\n"), "either the solution or the blank"),
    (code("x = 1", ":name: no spaces\n\n"), "is not a cell id"),
    (code("x = 1", ":name: twice\n\n") + code("x = 2", ":name: twice\n\n"), "used twice"),
    ("+++ {\"tags\": [\"raises-exception\"]}\n\nprose\n", "are for code cells"),
])
def test_source_errors_name_the_cell(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(build.SourceError, match=re.escape(message)) as err:
        build.read_cells(source(tmp_path, "# Demo\n\n" + text))
    assert "en/09-demo.md, cell " in str(err.value)


def code_cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.id, c.source, c.tags) for c in build.read_cells(path) if c.kind == "code"]


def test_zh_code_cells_are_the_en_cells() -> None:
    """A zh lesson's code cells are its en twin's: same sequence, sources, tags and ids; once
    zh has lessons, every en lesson has its zh twin and the other way round."""
    en, zh = build.lessons("en"), build.lessons("zh")
    if not zh:
        pytest.skip("notebooks/src/zh holds no lesson yet (the Chinese edition is to come)")
    assert sorted(en) == sorted(zh), (f"lessons without a zh twin: {sorted(set(en) - set(zh))}; "
                                      f"without an en twin: {sorted(set(zh) - set(en))}")
    for name in en:
        ours, theirs = code_cells(en[name]), code_cells(zh[name])
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            assert a == b, f"{name}: code cell {i + 1} differs between en and zh:\n{a}\n{b}"
        assert len(ours) == len(theirs), f"{name}: {len(ours)} code cells in en, " \
            f"{len(theirs)} in zh"


def test_message_keys_exist_in_every_language() -> None:
    """Every key the lessons' code names is in the en table, every en key in every other
    language's table, with the same ``{fields}``."""
    fields = re.compile(r"{(\w+)")
    for language, table in messages.items():
        missing = sorted(set(messages["en"]) - set(table))
        assert not missing, f"course_messages.py: {language} lacks {missing}"
        extra = sorted(set(table) - set(messages["en"]))
        assert not extra, f"course_messages.py: {language} has keys en lacks: {extra}"
        for k, text in table.items():
            assert set(fields.findall(text)) == set(fields.findall(messages["en"][k])), \
                f"course_messages.py: {language} {k!r} has other {{fields}} than en"
    for language in build.languages():
        for name, path in build.lessons(language).items():
            for cell in build.read_cells(path):
                if cell.kind == "code":
                    for k in KEY.findall(cell.source):
                        assert k in messages["en"], \
                            f"{language}/{name}.md uses message {k!r}, not in course_messages.py"


def declare_outputs(source: str) -> str | None:
    """For a ``%%container ... -o a,b`` cell (ruff skips cells that start with a cell magic)
    the names it brings back into the notebook, as a Python line, so later cells' uses of them
    are not undefined names; None for any other cell."""
    first = source.split("\n", 1)[0]
    if not first.startswith("%%container"):
        return None
    words = shlex.split(first)[1:]
    names = []
    for i, word in enumerate(words):
        if word in ("-o", "--output") and i + 1 < len(words):
            names += words[i + 1].split(",")
        elif word.startswith("--output="):
            names += word.split("=", 1)[1].split(",")
        elif word.startswith("-o") and len(word) > 2:
            names += word[2:].split(",")
    return " = ".join([*names, "None"]) if names else None


def test_lessons_pass_ruff(tmp_path: Path) -> None:
    """The code cells of every instructor edition (every cell of the course) pass ruff with
    the project's rules (pyproject.toml: a few relaxed for notebooks)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (pip install -e '.[test]')")
    paths = []
    for language in build.languages():
        for name in build.lessons(language):
            nb = nbformat.read(build.edition_dir(language, "instructor") / f"{name}.ipynb",
                               as_version=4)
            for cell in nb.cells:
                declared = declare_outputs(cell.source) if cell.cell_type == "code" else None
                if declared is not None:
                    cell.source = declared + "  # %%container -o: ruff skips magic cells"
            path = tmp_path / language / f"{name}.ipynb"
            path.parent.mkdir(exist_ok=True)
            nbformat.write(nb, path)
            paths.append(path)
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--config", str(REPO / "pyproject.toml"),
         "--output-format", "concise", *map(str, paths)], capture_output=True, text=True)
    report = result.stdout.replace(str(tmp_path) + "/", "notebooks/src/")
    assert result.returncode == 0, f"ruff (cell N counts every cell of the lesson):\n{report}"


def test_declare_outputs() -> None:
    assert declare_outputs("%%container --cpus 0.5 -o share\nx") == "share = None"
    assert declare_outputs("%%container -o a,b --output=c -od\n") == "a = b = c = d = None"
    assert declare_outputs("%%container sh\necho") is None
    assert declare_outputs("x = 1") is None


@pytest.mark.parametrize("where, expected", [
    ("notebooks", ("en", "student")), ("notebooks/instructor", ("en", "instructor")),
    ("notebooks/zh", ("zh", "student")), ("notebooks/zh/instructor", ("zh", "instructor")),
    ("srv/course/alice/zh", ("zh", "student")), ("home/alice", ("en", "student")),
])
def test_language_and_edition_from_directory(where: str, expected: tuple[str, str]) -> None:
    course = load("course_for_test", NOTEBOOKS / "course.py")  # its course_messages: above
    assert course.edition_of(Path("/") / where) == expected


CHECKS = """
import course
print(course.LANG, course.EDITION)
answer = ...
if course.answered(answer=answer):
    print("checked a blank")
answer = 41
course.expect(answer == 42, "exercise.ok", ok="exercise.ok")
course.side_by_side({"a": "1"}, {"a": "1"})
"""


def run_checks(directory: Path) -> subprocess.CompletedProcess[str]:
    """The check helpers as a lesson's kernel runs them, started in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in build.COURSE_FILES:
        if not (directory / name).exists():
            (directory / name).symlink_to(NOTEBOOKS / name)
    return subprocess.run([sys.executable, "-B", "-c", CHECKS], cwd=directory,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


def test_exercise_checks_hint_for_students(tmp_path: Path) -> None:
    """Student edition: a blank answer and a wrong one print, in the reader's language, and
    never raise (Run All goes on)."""
    en = run_checks(tmp_path / "course")
    assert en.returncode == 0, en.stderr
    assert en.stdout.splitlines()[0] == "en student"
    assert messages["en"]["exercise.blank"] in en.stdout
    assert "checked a blank" not in en.stdout
    assert "✗ Not yet: " in en.stdout and "host" in en.stdout
    zh = run_checks(tmp_path / "zh")
    assert zh.returncode == 0, zh.stderr
    assert zh.stdout.splitlines()[0] == "zh student"
    assert messages["zh"]["exercise.blank"] in zh.stdout
    assert "✗ 还不对：" in zh.stdout and "宿主机" in zh.stdout


def test_exercise_checks_raise_for_instructors(tmp_path: Path) -> None:
    """Instructor edition: a blank answer (no solution cell) raises ExerciseError; so does a
    solution that fails its check (shown with a filled answer)."""
    blank = run_checks(tmp_path / "zh" / "instructor")
    assert blank.returncode == 1 and "course.ExerciseError" in blank.stderr, blank.stderr
    assert "answer" in blank.stderr.splitlines()[-1]
    wrong = subprocess.run(
        [sys.executable, "-B", "-c", CHECKS.replace("answer = ...", "answer = 1")],
        cwd=tmp_path / "zh" / "instructor", capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin"})
    assert wrong.returncode == 1 and "ExerciseError" in wrong.stderr, wrong.stderr
    assert "checked a blank" in wrong.stdout


def test_render_index_links_every_page(tmp_path: Path) -> None:
    """The rendered course's index (notebooks/render.py) links each page it is given."""
    render = load("course_render", NOTEBOOKS / "render.py")
    pages = render.pages()
    assert {(p.language, p.edition) for p in pages} >= {("en", "student"), ("en", "instructor")}
    index = render.write_index(tmp_path, [(p, p.lesson) for p in pages])
    links = set(re.findall(r'href="([^"]+)"', index.read_text()))
    assert links == {f"{p.language}/{p.edition}/{p.lesson}.html" for p in pages}
