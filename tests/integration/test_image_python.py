"""A Python body on an image runs the image's own python3 (issue 13, item 6), with -i/-o.

The image is made from the host's Debian interpreter: /usr/bin/python3.X, its standard library
(without tests and bytecode), and the shared libraries it and its extension modules link to,
imported as an OCI layout. Inside, only that image exists: the body sees the image's
interpreter at /usr/bin/python3, not the kernel's venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from oci_registry import Layer, write_image, write_layout
from test_magics_kernel import Kernel, kernel  # noqa: F401 (the fixture)

from nbcontainer.images.oci import import_image

pytestmark = pytest.mark.root

VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
HOST_PYTHON = Path("/usr/bin") / VERSION


def _libraries(binaries: list[Path]) -> set[Path]:
    out = subprocess.run(["ldd", *map(str, binaries)], capture_output=True, text=True).stdout
    libs = {Path(parts[2]) for line in out.splitlines()
            if len(parts := line.split()) >= 3 and parts[1] == "=>" and parts[2].startswith("/")}
    libs |= {Path(line.split()[0]) for line in out.splitlines()
             if line.strip().startswith("/") and "ld-linux" in line}
    return libs


def debian_python_layer() -> Layer:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, bytes | tuple[str, str]] = {
        f"usr/bin/{VERSION}": HOST_PYTHON.read_bytes(), "usr/bin/python3": ("link", VERSION)}
    dynload = sorted((stdlib / "lib-dynload").glob("*.so"))
    for lib in _libraries([HOST_PYTHON, *dynload]):
        real = lib.resolve()
        files[str(real).lstrip("/")] = real.read_bytes()
        # The name the binary asks for (/lib64/ld-linux-x86-64.so.2, a soname), under usr/
        # as on a merged-/usr system: a link to the real file.
        asked = Path(str(lib).replace("/lib", "/usr/lib", 1)) if not str(lib).startswith(
            "/usr/") else lib
        if asked != real:
            files[str(asked).lstrip("/")] = ("link", str(real))
    for path in stdlib.rglob("*"):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in ("test", "idlelib", "tkinter", "site-packages", "dist-packages") or (
                "__pycache__" in rel.parts) or path.is_dir():
            continue
        files[str(path).lstrip("/")] = (("link", os.readlink(path)) if path.is_symlink()
                                        else path.read_bytes())
    files["lib"] = ("link", "usr/lib")
    files["lib64"] = ("link", "usr/lib64")
    files["bin"] = ("link", "usr/bin")
    return Layer(files, "none")


@pytest.fixture(scope="module")
def debian_python_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not HOST_PYTHON.exists() or Path(sys.executable).resolve() != HOST_PYTHON:
        pytest.skip(f"needs the host's Debian interpreter {HOST_PYTHON} to build the image")
    layout = tmp_path_factory.mktemp("debpy") / "layout"
    desc = write_image(layout, [debian_python_layer()],
                       config_extra={"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]})
    write_layout(layout, "v1", [desc])
    name = f"debpy:{sys.version_info.major}.{sys.version_info.minor}"
    import_image(layout, name)
    return name


def test_python_body_runs_the_images_python3_with_inputs_and_outputs(
        debian_python_image: str, kernel: Kernel) -> None:  # noqa: F811 (the imported fixture)
    cell = kernel.run("x = {'numbers': [1, 2.5], 'when': __import__('datetime').date(2026, 1, 2)}")
    assert cell.reply["status"] == "ok"
    cell = kernel.run(
        f"%%container --image {debian_python_image} -i x -o y\n"
        "import sys, os\n"
        "print('inside', sys.executable, flush=True)\n"
        "y = {'exe': sys.executable, 'prefix': sys.prefix, 'x': x, 'pid': os.getpid(),\n"
        "     'version': list(sys.version_info[:2])}\n", timeout=120)
    assert cell.reply["status"] == "ok", (cell.stream("stderr"), cell.error)
    assert cell.stream() == "inside /usr/bin/python3\n"
    cell = kernel.run("print(y['exe'], y['prefix'], y['pid'], y['version'], y['x'] == x)")
    exe, prefix, pid, *rest = cell.stream().split(" ", 3)
    assert (exe, prefix, pid) == ("/usr/bin/python3", "/usr", "1"), cell.stream()
    assert rest[0].strip().endswith("True")


def test_an_image_without_python3_says_so(kernel: Kernel) -> None:  # noqa: F811
    cell = kernel.run("%%container --image busybox\nprint('hello')", timeout=60)
    assert cell.error is not None
    assert "has none on its PATH" in cell.error["evalue"], cell.error["evalue"]
    assert "%%container --image busybox sh" in cell.error["evalue"]
