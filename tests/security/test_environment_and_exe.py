"""Escape attempts through the process environment and /proc/1/exe (real containers).

* The supervisor's environment (a hub's API token, cloud credentials) must not be readable
  inside: not in ``os.environ``, not in ``/proc/self/environ`` nor ``/proc/1/environ``.
* ``/proc/1/exe`` must never resolve to a writable host binary (runc's CVE-2019-5736): a PID 1
  that stays Python runs a sealed in-memory copy of the interpreter.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import capture

from nbcontainer.runtime.zygote import Zygote

pytestmark = pytest.mark.root

SECRET = "nbc-test-secret-7f3a"

READ_ENVIRON = (
    "import os\n"
    "seen = [os.environ.get('HOSTNAME', ''), os.environ.get('NBC_TEST_TOKEN', '')]\n"
    "for pid in ('self', '1'):\n"
    "    with open(f'/proc/{pid}/environ', 'rb') as f:\n"
    "        seen.append(f.read().decode(errors='replace'))\n"
    "print('|'.join(seen))\n"
)

CHECK_EXE = (
    "import os\n"
    "target = os.readlink('/proc/1/exe')\n"
    "try:\n"
    "    fd = os.open('/proc/1/exe', os.O_WRONLY)\n"
    "    os.write(fd, b'owned')\n"
    "    verdict = 'WROTE'\n"
    "except OSError as err:\n"
    "    verdict = f'refused {err.errno}'\n"
    "print(target, '|', verdict)\n"
)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch):
    """A secret in the supervisor's environment, and a zygote started after it was set."""
    Zygote.shutdown()
    monkeypatch.setenv("NBC_TEST_TOKEN", SECRET)
    yield
    Zygote.shutdown()


@pytest.mark.parametrize("init", [False, True])
def test_the_supervisors_environment_is_not_visible_in_a_python_cell(secret_env, init) -> None:
    code, out, err = _run_python(READ_ENVIRON, init=init)
    assert code == 0, err
    assert SECRET not in out
    assert out.split("|")[0], "the container's own environment (HOSTNAME) is there"


def test_the_supervisors_environment_is_not_visible_to_a_cli_container() -> None:
    env = {**os.environ, "NBC_TEST_TOKEN": SECRET}
    p = subprocess.run([sys.executable, "-m", "nbcontainer", "run", "--init", "busybox", "sh",
                        "-c", "env; cat /proc/1/environ /proc/self/environ"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert SECRET not in p.stdout
    assert "HOSTNAME=" in p.stdout  # the container's own environment is there


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("init", [False, True])
def test_proc_1_exe_of_a_python_cell_is_a_sealed_copy(init: bool) -> None:
    host_python = os.path.realpath(sys.executable)
    before = _sha256(host_python)
    try:
        code, out, err = _run_python(CHECK_EXE, init=init)
    finally:
        Zygote.shutdown()
    assert code == 0, err
    target, verdict = (part.strip() for part in out.split("|"))
    assert target.startswith("/memfd:nbcontainer-python"), target
    assert verdict.startswith("refused"), verdict
    assert _sha256(host_python) == before


def test_proc_1_exe_of_an_init_container_from_the_cli_is_a_sealed_copy() -> None:
    p = subprocess.run([sys.executable, "-m", "nbcontainer", "run", "--init", "busybox",
                        "readlink", "/proc/1/exe"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("/memfd:nbcontainer-python"), p.stdout


def test_the_sealed_copy_refuses_writes_even_when_nothing_runs_it() -> None:
    from nbcontainer.runtime.sealed import sealed_interpreter

    path = sealed_interpreter()
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"owned")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _run_python(code: str, **spec: object) -> tuple[int, str, str]:
    """A Python body through the zygote, as a notebook cell runs."""
    return capture([], container={"python": code, "zygote": True}, **spec)
