"""Helpers shared by the course notebooks: the environment check, exercise checks, display helpers.

Every notebook starts with ``CAN_RUN = course.check()``. It prints, in plain words, what this
machine offers (root, cgroup layout, overlayfs, user namespaces, busybox) and what will not work
and why. When containers cannot run here (e.g. on Binder: no root, no cgroup delegation), the
``%%container`` / ``%%containerfile`` magics are replaced by stand-ins that print the cell instead
of running it, and every other demonstration cell checks ``CAN_RUN`` -- so "Run All" still goes
top to bottom and you can read the lessons.

Language and edition come from the kernel's working directory, which Jupyter (and nbclient)
set to the notebook's directory: ``.../zh`` and ``.../zh/instructor`` are Chinese,
``.../instructor`` and ``.../zh/instructor`` the instructor edition (notebooks/build.py makes
that layout). The lessons' code cells are the same in every language; what they print goes
through :func:`msg` and the table in ``course_messages.py``. Exercise checks use
:func:`answered` and :func:`expect` (docs/course.md, "Exercise checks").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import unicodedata
from pathlib import Path

from course_messages import MESSAGES

MAN = "https://man7.org/linux/man-pages/man7/{}.7.html"
# Fonts with CJK glyphs, most wanted first (Debian: fonts-wqy-microhei, which scripts/setup
# installs; fonts-noto-cjk). matplotlib falls back to them for the glyphs DejaVu Sans lacks.
CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP")
# Where those packages put them: matplotlib's font cache, made before a font was installed,
# does not list it, so the files are added by path.
CJK_FONT_FILES = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
                  "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def edition_of(directory: str | os.PathLike[str]) -> tuple[str, str]:
    """(language, edition) of a notebook in ``directory``: ``("zh", "instructor")`` for
    ``.../zh/instructor``, ``("en", "student")`` for ``notebooks/`` itself or anywhere else."""
    path = Path(directory)
    edition = "instructor" if path.name == "instructor" else "student"
    folder = path.parent if edition == "instructor" else path
    language = folder.name if folder.name in MESSAGES and folder.name != "en" else "en"
    return language, edition


LANG, EDITION = edition_of(os.getcwd())


class ExerciseError(AssertionError):
    """An instructor edition's solution is missing or fails its own check (CI runs them)."""


def msg(key: str, **fields: object) -> str:
    """The message ``key`` in the reader's language (English if not translated yet)."""
    if key not in MESSAGES["en"]:
        raise KeyError(f"no message {key!r} in course_messages.py (add it to the en table)")
    return MESSAGES.get(LANG, {}).get(key, MESSAGES["en"][key]).format(**fields)


def say(key: str, **fields: object) -> None:
    """Print the message ``key`` in the reader's language."""
    print(msg(key, **fields))


def answered(**answers: object) -> bool:
    """True when every answer is filled in: a blank answer is ``...`` (Ellipsis).

    Call it with the answer cell's names, ``course.answered(limit=limit)``. In the student
    edition a blank answer prints how to go on and returns False, so the check is skipped and
    "Run All" goes on; in the instructor edition a blank answer means the solution cell is
    missing, and that raises :class:`ExerciseError`.
    """
    blank = [name for name, value in answers.items() if value is Ellipsis]
    if not blank:
        return True
    if EDITION == "instructor":
        raise ExerciseError(msg("exercise.no_solution", names=", ".join(blank)))
    say("exercise.blank")
    return False


def expect(condition: object, hint: str, ok: str = "exercise.ok", **fields: object) -> bool:
    """An exercise check: print ``ok`` when ``condition`` holds, else the hint ``hint``.

    Both are message keys, formatted with ``fields``. A wrong answer never raises in the
    student edition (the reader tries again); in the instructor edition it raises
    :class:`ExerciseError`, so a broken solution fails CI.
    """
    if condition:
        say(ok, **fields)
        return True
    if EDITION == "instructor":
        raise ExerciseError(msg("exercise.wrong_solution", hint=msg(hint, **fields)))
    say("exercise.not_yet", hint=msg(hint, **fields))
    return False


def _cjk_fonts() -> None:
    """Let matplotlib draw Chinese labels: an installed CJK font as the fallback after the
    default sans-serif (Latin glyphs stay as in the English edition). Without one, Chinese
    labels show empty boxes and a warning."""
    try:
        from matplotlib import font_manager, rcParams
    except ImportError:  # pragma: no cover - matplotlib is a dependency of nbcontainer
        return
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed & set(CJK_FONTS):
        for path in CJK_FONT_FILES:
            if os.path.exists(path):
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if found:  # font fallback goes along font.family, glyph by glyph (matplotlib >= 3.6)
        rcParams["font.family"] = ["sans-serif", *found]


if LANG == "zh":
    _cjk_fonts()


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - outside Jupyter
        return None
    return get_ipython()


def check(extra: dict[str, bool] | None = None, plot: str | None = None) -> bool:
    """Print what this machine offers; load ``%load_ext nbcontainer`` or stand-ins; return CAN_RUN.

    ``extra`` adds notebook-specific optional checks (name -> available) to the report.
    ``plot`` sets ``ContainerMagics.plot`` (``auto``, ``always``, ``never``) for the notebook:
    lessons that are not about memory keep their outputs free of plots.
    """
    problems: list[str] = []
    lines: list[str] = []

    def line(ok: bool, name: str, detail: str) -> None:
        lines.append(f"[{'ok ' if ok else 'NO '}] {name:<16} {detail}")

    if not sys.platform.startswith("linux"):
        problems.append(msg("env.not_linux"))
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    line(root, "root", f"uid {os.geteuid() if hasattr(os, 'geteuid') else '?'}")
    if not root:
        problems.append(msg("env.not_root"))
    try:
        from nbcontainer import cgroups

        layout = cgroups.detect()
        has_memory = "memory" in layout.controllers
        controllers = ", ".join(sorted(layout.controllers)) or msg("env.none")
        line(layout.version != "none", "cgroups",
             msg("env.cgroups_line", version=layout.version, controllers=controllers))
        if layout.version == "none":
            problems.append(msg("env.no_cgroupfs"))
        elif not has_memory:
            problems.append(msg("env.no_memory"))
    except Exception as err:  # noqa: BLE001 - a report, never a crash
        line(False, "cgroups", msg("env.cgroups_unreadable_line", error=err))
        problems.append(msg("env.cgroups_unreadable", error=err))
    try:
        with open("/proc/filesystems") as f:
            overlay = "overlay" in f.read()
    except OSError:
        overlay = False
    line(overlay, "overlayfs", msg("env.available") if overlay else msg("env.overlay_missing"))
    if not overlay:
        problems.append(msg("env.no_overlay"))
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            userns = f.read().strip() != "0"
    except OSError:
        userns = False
    line(userns, "user namespaces",
         msg("env.userns_allowed") if userns else msg("env.userns_disabled"))
    busybox = shutil.which("busybox") or next(
        (p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    line(busybox is not None, "busybox", busybox or msg("env.busybox_missing_line"))
    if busybox is None:
        problems.append(msg("env.no_busybox"))
    for name, ok in (extra or {}).items():
        line(ok, name, msg("env.available") if ok else msg("env.extra_missing"))

    can_run = root and overlay and busybox is not None and sys.platform.startswith("linux")
    print("\n".join(lines))
    if problems:
        print("\n" + msg("env.problems"))
        for p in problems:
            print(" -", p)
    print("\nCAN_RUN =", can_run, msg("env.runs") if can_run else msg("env.shown"))
    _load_magics(can_run, plot)
    return can_run


def _load_magics(can_run: bool, plot: str | None = None) -> None:
    ip = _ipython()
    if ip is None:
        return
    if can_run:
        ip.run_line_magic("load_ext", "nbcontainer")
        if plot is not None:
            ip.run_line_magic("config", f"ContainerMagics.plot = {plot!r}")
        return

    def skipped(line: str, cell: str | None = None) -> None:
        say("env.skipped")
        if cell is not None:
            print(f"%%container {line}\n{cell}")

    ip.register_magic_function(skipped, "line_cell", "container")
    ip.register_magic_function(skipped, "cell", "containerfile")


def side_by_side(host: dict[str, str], container: dict[str, str],
                 titles: tuple[str, str] | None = None) -> None:
    """Print two mappings as a table, marking the rows that differ (titles: message keys or
    text; by default "host" and "container" in the reader's language)."""
    left, right = (msg(t) if t in MESSAGES["en"] else t
                   for t in (titles or ("table.host", "table.container")))
    keys = sorted(set(host) | set(container))
    width = max(len(k) for k in keys) if keys else 4
    print(f"{'':<{width}}  {pad(left, 24)}  {pad(right, 24)}  {msg('table.same?')}")
    for k in keys:
        a, b = host.get(k, "-"), container.get(k, "-")
        print(f"{k:<{width}}  {pad(a, 24)}  {pad(b, 24)}  "
              f"{msg('table.same') if a == b else msg('table.different')}")


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` columns of a monospaced font, where a Chinese
    character takes two (str.ljust counts it as one, and the zh tables would not line up)."""
    columns = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - columns)


def namespaces_of(pid: str | int = "self") -> dict[str, str]:
    """``readlink /proc/PID/ns/*``: namespace type -> ``type:[inode]``."""
    base = f"/proc/{pid}/ns"
    out = {}
    for name in sorted(os.listdir(base)):
        if name.endswith("_for_children"):
            continue
        with contextlib.suppress(OSError):  # a namespace type this kernel lacks
            out[name] = os.readlink(os.path.join(base, name))
    return out


def run_capture(command: list[str], **options) -> tuple[object, str]:
    """Run a container to its end (``nbcontainer.run``) and return (Result, its stdout+stderr).

    ``options`` are those of :func:`nbcontainer.make_spec` (image, memory, ns, ...).
    """
    import tempfile

    from nbcontainer import make_spec, run

    with tempfile.TemporaryFile() as out:
        result = run(make_spec(command, **options), stdout=out, stderr=out)
        out.seek(0)
        return result, out.read().decode(errors="replace")
