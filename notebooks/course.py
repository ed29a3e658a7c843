"""Helpers shared by the course notebooks: the environment check and small display helpers.

Every notebook starts with ``CAN_RUN = course.check()``. It prints, in plain words, what this
machine offers (root, cgroup layout, overlayfs, user namespaces, busybox) and what will not work
and why. When containers cannot run here (e.g. on Binder: no root, no cgroup delegation), the
``%%container`` / ``%%containerfile`` magics are replaced by stand-ins that print the cell instead
of running it, and every other demonstration cell checks ``CAN_RUN`` -- so "Run All" still goes
top to bottom and you can read the lessons.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys

MAN = "https://man7.org/linux/man-pages/man7/{}.7.html"


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
        problems.append("this is not Linux: namespaces, cgroups and overlayfs are Linux features")
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    line(root, "root", f"uid {os.geteuid() if hasattr(os, 'geteuid') else '?'}")
    if not root:
        problems.append(
            "not running as root: creating namespaces, mounting overlays and writing cgroup "
            "limits all need root (CAP_SYS_ADMIN). Binder and most hosted notebooks run as an "
            "unprivileged user, so the demonstrations below are shown but not run. Use a "
            "root-enabled JupyterHub or a lab VM (see docs/deploy.md).")
    try:
        from nbcontainer import cgroups

        layout = cgroups.detect()
        has_memory = "memory" in layout.controllers
        line(layout.version != "none", "cgroups",
             f"{layout.version}; controllers: {', '.join(sorted(layout.controllers)) or 'none'}")
        if layout.version == "none":
            problems.append("no cgroup filesystem under /sys/fs/cgroup: no limits can be set")
        elif not has_memory:
            problems.append("the memory cgroup controller is missing: --memory will not work")
    except Exception as err:  # noqa: BLE001 - a report, never a crash
        line(False, "cgroups", f"cannot read the layout: {err}")
        problems.append(f"cannot read the cgroup layout ({err})")
    try:
        with open("/proc/filesystems") as f:
            overlay = "overlay" in f.read()
    except OSError:
        overlay = False
    line(overlay, "overlayfs", "available" if overlay else "not in /proc/filesystems")
    if not overlay:
        problems.append("overlayfs is not available (try `modprobe overlay` as root): images "
                        "other than `--image none` will not work")
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            userns = f.read().strip() != "0"
    except OSError:
        userns = False
    line(userns, "user namespaces", "allowed" if userns else "disabled (--ns user will fail)")
    busybox = shutil.which("busybox") or next(
        (p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    line(busybox is not None, "busybox", busybox or "missing: apt-get install busybox-static")
    if busybox is None:
        problems.append("busybox-static is missing: the `busybox` image cannot be built")
    for name, ok in (extra or {}).items():
        line(ok, name, "available" if ok else "missing (the cells that need it are skipped)")

    can_run = root and overlay and busybox is not None and sys.platform.startswith("linux")
    print("\n".join(lines))
    if problems:
        print("\nWhat will not work here, and why:")
        for p in problems:
            print(" -", p)
    print("\nCAN_RUN =", can_run,
          "(demonstrations run)" if can_run else "(demonstrations are shown, not run)")
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
        print("[skipped: containers cannot run here -- see the first cell]")
        if cell is not None:
            print(f"%%container {line}\n{cell}")

    ip.register_magic_function(skipped, "line_cell", "container")
    ip.register_magic_function(skipped, "cell", "containerfile")


def side_by_side(host: dict[str, str], container: dict[str, str],
                 titles: tuple[str, str] = ("host", "container")) -> None:
    """Print two mappings as a table, marking the rows that differ."""
    keys = sorted(set(host) | set(container))
    width = max(len(k) for k in keys) if keys else 4
    print(f"{'':<{width}}  {titles[0]:<24}  {titles[1]:<24}  same?")
    for k in keys:
        a, b = host.get(k, "-"), container.get(k, "-")
        print(f"{k:<{width}}  {a:<24}  {b:<24}  {'same' if a == b else 'DIFFERENT'}")


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
