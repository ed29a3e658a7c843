"""``nbcontainer kernel install --user`` and ``--sys-prefix`` as a user runs them (SPEC 5).

Both go where Jupyter looks and ``jupyter kernelspec list`` shows them. Nothing is left on
the machine: ``--user`` writes under a temporary HOME, ``--sys-prefix`` into a throw-away
virtual environment whose ``sys.prefix`` is a temporary directory.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
WORKTREE = str(Path(__file__).resolve().parents[2])
KERNELSPEC = Path(sys.executable).parent / "jupyter-kernelspec"


def _env(home: Path, python_path: list[str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER_", "XDG_")) and k != "PYTHONPATH"}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([WORKTREE, *(python_path or [])])
    return env


def _listed(python: str, env: dict[str, str]) -> dict[str, str]:
    """``jupyter kernelspec list --json`` run by ``python``: name -> resource dir."""
    out = subprocess.run([python, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return {n: k["resource_dir"] for n, k in json.loads(out)["kernelspecs"].items()}


def test_kernel_install_user_goes_to_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    before = _listed(sys.executable, env)
    p = subprocess.run([sys.executable, "-m", "nbcontainer", "kernel", "install", "--user",
                        "--name", "nbc-user-test", "--memory", "300m"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    where = home / ".local/share/jupyter/kernels/nbc-user-test"
    assert f"in {where}" in p.stdout
    data = json.loads((where / "kernel.json").read_text())
    assert data["display_name"] == "Python 3 (container nbc-user-test: memory 300m)"
    assert data["argv"][1:3] == ["-m", "nbcontainer.kernel"] and data["argv"][-1] == "--memory=300m"
    assert _listed(sys.executable, env) == {**before, "nbc-user-test": str(where)}
    # `jupyter kernelspec list`, the command a user types, shows it too
    if KERNELSPEC.exists():
        listing = subprocess.run([str(KERNELSPEC), "list"], env=env, capture_output=True,
                                 text=True).stdout
        assert "nbc-user-test" in listing and str(where) in listing


def test_kernel_install_sys_prefix_goes_to_the_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # The throw-away environment borrows this one's packages; its sys.prefix is its own.
    env = _env(tmp_path, site.getsitepackages())
    prefix = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert Path(prefix) == venv
    ours = Path(sys.prefix) / "share/jupyter/kernels/nbc-prefix-test"
    p = subprocess.run([python, "-m", "nbcontainer", "kernel", "install", "--sys-prefix",
                        "--name", "nbc-prefix-test", "--display-name", "In the venv"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    where = venv / "share/jupyter/kernels/nbc-prefix-test"
    data = json.loads((where / "kernel.json").read_text())
    assert data["display_name"] == "In the venv"
    assert data["argv"][0] == python, "the kernel runs with the environment's interpreter"
    assert _listed(python, env)["nbc-prefix-test"] == str(where)
    assert not ours.exists(), "--sys-prefix wrote outside the environment it ran in"
