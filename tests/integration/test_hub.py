"""A real JupyterHub with three students at the same time (docs/deploy.md, section 2).

The hub runs ``docs/hub/jupyterhub_config.py`` as an admin would: ``jupyterhub`` from pip,
configurable-http-proxy from npm (scripts/setup puts it in ``.node/``), on 127.0.0.1 with free
ports and a temporary directory for its database, cookie secret, pid files and the students'
homes. Three students log in with the shared password through the login form, get an API
token, start their servers through the hub's REST API, and drive their kernels through the
proxy: jupyter-server's sessions API and the kernel's ``/api/kernels/<id>/channels``
websocket, the way JupyterLab does. At the same time they run the cgroups notebook
(``notebooks/02-cgroups.ipynb``, every cell, OOM cells included) and ``%%container`` cells.

Checked: a student sees and can remove only their own containers (three containers called
``lab`` coexist; removing another student's by id is "no such container"); their containers'
cgroups lie below their server's, so the memory limit the hub sets per student caps a container
that asks for more; an image one student builds, the others run (images are shared); a
student's token does not open another student's server; stopping the servers leaves nothing
(no container record, no cgroup, no process, nothing the spawner had to kill), and stopping
the hub stops the proxy.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

try:  # the `hub` extra: scripts/setup installs it, so a missing one fails the test, not skips
    import jupyterhub  # noqa: F401
    import requests
    import websocket
    MISSING = ""
except ImportError as err:
    MISSING = f"{err.name} is not installed: scripts/setup installs the `hub` extra " \
        "(pip install -e '.[hub]')"
nbformat = pytest.importorskip("nbformat")

from nbcontainer.runtime import state as state_mod  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v1, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "docs" / "hub" / "jupyterhub_config.py"
CHP = REPO / ".node" / "node_modules" / ".bin" / "configurable-http-proxy"
NOTEBOOK = "02-cgroups.ipynb"
STUDENTS = ("alice", "bob", "carol")
PASSWORD = "container-course"
MEMORY_LIMIT_MIB = 768  # per student: server + kernel + every container of theirs
CELL_SECONDS = 300  # one cell, on a busy 2-core machine running three notebooks at once
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxy_command() -> str:
    found = shutil.which("configurable-http-proxy") or (str(CHP) if CHP.exists() else None)
    if found is None:
        pytest.fail("configurable-http-proxy is missing: scripts/setup installs it "
                    f"(npm install --prefix .node configurable-http-proxy), expected at {CHP}")
    return found


class Hub:
    """A JupyterHub process of this test (and the proxy it starts), stopped by pid."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cgroup_name = f"jupyterhub-test-{os.getpid()}"
        self.log_path = directory / "hub.log"
        self.env = {
            **os.environ,
            "NBC_HUB_PASSWORD": PASSWORD, "NBC_HUB_USERS": ",".join(STUDENTS),
            "NBC_HUB_IP": "127.0.0.1", "NBC_HUB_PORT": str(self.port),
            "NBC_HUB_API_PORT": str(free_port()), "NBC_HUB_PROXY_API_PORT": str(free_port()),
            "NBC_HUB_DIR": str(directory / "state"), "NBC_HUB_HOMES": str(directory / "homes"),
            "NBC_HUB_COURSE": str(REPO / "notebooks"), "NBC_HUB_CGROUP": self.cgroup_name,
            "NBC_HUB_MEMORY": f"{MEMORY_LIMIT_MIB}M", "NBC_HUB_CPUS": "1",
            "NBC_HUB_CHP": proxy_command(),
        }
        # The servers' kernels import this checkout even when it is not the installed one.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: psutil.Process | None = None  # pid and start time: never a reused pid

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=self.dir,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the hub exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/api/", timeout=5).status_code == 200:
                    pid_file = self.dir / "state" / "jupyterhub-proxy.pid"
                    self.proxy = psutil.Process(int(pid_file.read_text()))
                    assert self.proxy.ppid() == self.proc.pid, "the proxy is not the hub's"
                    return
            time.sleep(0.5)
        pytest.fail(f"the hub did not answer in {START_SECONDS} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the hub (it stops the servers left and its proxy); SIGKILL after 60 s.
        A proxy still running afterwards is killed by its pid, and the test fails."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        proxy_left = False
        with contextlib.suppress(psutil.NoSuchProcess):
            proxy_left = self.proxy is not None and self.proxy.is_running() and \
                self.proxy.status() != psutil.STATUS_ZOMBIE
        if proxy_left:
            assert self.proxy is not None
            self.proxy.kill()
            self.proxy.wait(timeout=30)
        assert not proxy_left, "the hub stopped but its configurable-http-proxy did not"

    def user_cgroups(self, user: str) -> list[Path]:
        """The student's cgroup directories the spawner made (one per v1 hierarchy)."""
        return sorted(Path("/sys/fs/cgroup").glob(f"*/**/{self.cgroup_name}/user-*-{user}"))

    def cgroup_dirs(self) -> list[Path]:
        return sorted(Path("/sys/fs/cgroup").glob(f"*/**/{self.cgroup_name}"))


class Student:
    """One student: a browser-like login, an API token, a server, a kernel websocket."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub, self.name = hub, name
        self.token = ""
        self.ws: Any = None
        self.session = uuid.uuid4().hex

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log_in(self) -> None:
        """The login form (wrong password refused), then a token made with the login cookie."""
        web = requests.Session()
        assert web.get(f"{self.hub.url}/hub/login", timeout=30).status_code == 200
        form = {"username": self.name, "_xsrf": web.cookies.get("_xsrf")}
        wrong = web.post(f"{self.hub.url}/hub/login", data={**form, "password": "not-it-at-all"},
                         allow_redirects=False, timeout=30)
        assert wrong.status_code == 403, f"a wrong password was accepted ({wrong.status_code})"
        right = web.post(f"{self.hub.url}/hub/login", data={**form, "password": PASSWORD},
                         allow_redirects=False, timeout=30)
        assert right.status_code == 302, f"login failed: {right.status_code} {right.text[:300]}"
        reply = web.post(f"{self.hub.url}/hub/api/users/{self.name}/tokens",
                         json={"note": "test_hub", "expires_in": 3600},
                         headers={"X-XSRFToken": web.cookies.get("_xsrf", "")}, timeout=30)
        assert reply.status_code == 201, reply.text[:300]
        self.token = reply.json()["token"]

    def start_server(self) -> None:
        reply = requests.post(f"{self.hub.url}/hub/api/users/{self.name}/server",
                              headers=self.headers, timeout=START_SECONDS)
        assert reply.status_code in (201, 202), reply.text[:300]
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            user = requests.get(f"{self.hub.url}/hub/api/users/{self.name}",
                                headers=self.headers, timeout=30).json()
            if (user.get("servers", {}).get("") or {}).get("ready"):
                return
            time.sleep(0.5)
        pytest.fail(f"{self.name}'s server was not ready in {START_SECONDS} s")

    def open_notebook(self, path: str) -> None:
        """A session for the notebook (as JupyterLab opens one), and its kernel's websocket."""
        reply = requests.post(f"{self.hub.url}/user/{self.name}/api/sessions",
                              headers=self.headers, timeout=60,
                              json={"path": path, "name": path, "type": "notebook",
                                    "kernel": {"name": "python3"}})
        assert reply.status_code == 201, reply.text[:300]
        kernel = reply.json()["kernel"]["id"]
        ws_url = self.hub.url.replace("http://", "ws://")
        self.ws = websocket.create_connection(
            f"{ws_url}/user/{self.name}/api/kernels/{kernel}/channels?session_id={self.session}",
            header=[f"Authorization: token {self.token}"], timeout=60)

    def execute(self, code: str, timeout: float = CELL_SECONDS) -> tuple[dict, list[dict]]:
        """Run ``code``; (execute_reply content, iopub messages of the cell) once idle."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.name, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        reply: dict | None = None
        idle = False
        outputs: list[dict] = []
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: cell did not finish in {timeout} s:\n{code}")
            self.ws.settimeout(min(left, 60))
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            else:
                outputs.append({"type": kind, **msg["content"]})
        return reply, outputs

    def run(self, code: str) -> str:
        """Run ``code``, which must succeed; its text output."""
        reply, outputs = self.execute(code)
        assert reply["status"] == "ok", f"{self.name}: {code!r} failed: {_text(outputs)}"
        return _text(outputs)

    def stop_server(self) -> None:
        reply = requests.delete(f"{self.hub.url}/hub/api/users/{self.name}/server",
                                headers=self.headers, timeout=120)
        assert reply.status_code in (202, 204), reply.text[:300]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            user = requests.get(f"{self.hub.url}/hub/api/users/{self.name}",
                                headers=self.headers, timeout=30).json()
            if not user.get("servers"):
                return
            time.sleep(0.5)
        pytest.fail(f"{self.name}'s server did not stop in 120 s")

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None


def _text(outputs: list[dict]) -> str:
    """Streams, plain-text results and errors of a cell, as one text."""
    parts = []
    for out in outputs:
        if out["type"] == "stream":
            parts.append(out["text"])
        elif out["type"] in ("execute_result", "display_data") and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"] + "\n")
        elif out["type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}\n")
    return "".join(parts)


def run_notebook(student: Student, path: Path) -> float:
    """Every code cell of the notebook, in order, as "Run All": a cell tagged
    ``raises-exception`` must fail, every other must succeed. Returns the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    plots = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        reply, outputs = student.execute(cell.source)
        plots += sum(1 for o in outputs if "image/png" in o.get("data", {}))
        expected = "error" if "raises-exception" in cell.metadata.get("tags", []) else "ok"
        assert reply["status"] == expected, (
            f"{student.name}: cell {index} of {path.name} ended {reply['status']}, expected "
            f"{expected}:\n{cell.source}\n---\n{_text(outputs)[-2000:]}")
    assert plots, f"{student.name}: {path.name} showed no live memory plot"
    return time.monotonic() - start


def records(name: str) -> dict[str, state_mod.ContainerState]:
    """Every student's container called ``name``, by user (the store as root sees it)."""
    return {st.user or "": st for st in state_mod.all_states(every_user=True) if st.name == name}


def ps_rows(text: str) -> list[tuple[str, str]]:
    """(id, name) of each row of ``ps`` output."""
    lines = [line.split() for line in text.strip().splitlines()[1:] if line.strip()]
    return [(fields[0], fields[-1]) for fields in lines]


def student_session(student: Student, barrier: threading.Barrier, report: dict) -> None:
    """One student's part; runs in a thread, in step with the others at the barriers."""
    try:
        student.log_in()
        student.start_server()
        student.open_notebook(NOTEBOOK)
        where = student.run("import os; print(os.environ['JUPYTERHUB_USER'], os.getcwd())")
        assert where.split() == [student.name, str(student.hub.dir / "homes" / student.name)]
        barrier.wait()  # the three notebooks run at the same time
        report[f"{student.name} notebook s"] = run_notebook(
            student, student.hub.dir / "homes" / student.name / NOTEBOOK)

        # Same container name for everyone; a sleeping process keeps each one busy.
        out = student.run("%%container --name lab --mem 64m --image busybox sh\n"
                          "sleep 1000 >/dev/null 2>&1 &\necho lab is up")
        assert "lab is up" in out
        if student.name == "alice":
            student.run("%%containerfile shared-by-alice\nFROM busybox\n"
                        "RUN echo made by alice > /who\n")
        barrier.wait()  # every lab exists; alice's image is built

        labs = records("lab")
        assert set(labs) == set(STUDENTS), f"expected one lab per student, got {labs}"
        mine = labs[student.name]
        memory = Path(mine.cgroup_paths["memory"])
        server_cgroup = [p for p in student.hub.user_cgroups(student.name)
                         if p.parts[4] == "memory"]
        assert len(server_cgroup) == 1 and memory.is_relative_to(server_cgroup[0]), (
            f"{student.name}'s container cgroup {memory} is not below their server's "
            f"{server_cgroup}")
        rows = ps_rows(student.run("%container ps"))
        assert rows == [(mine.id, "lab")], f"{student.name} sees {rows}, expected only own lab"
        for other in STUDENTS:
            if other != student.name:
                out = student.run(f"%container rm -f {labs[other].id}")
                assert "no such container" in out, f"{student.name} removing {other}'s: {out}"
                denied = requests.get(f"{student.hub.url}/user/{other}/api/kernels",
                                      headers=student.headers, allow_redirects=False, timeout=30)
                assert denied.status_code in (302, 403, 404), (
                    f"{student.name}'s token opened {other}'s server ({denied.status_code})")
        out = student.run("%%container --image shared-by-alice sh\ncat /who")
        assert "made by alice" in out, out
        barrier.wait()  # every attempt on another's container is done

        assert ps_rows(student.run("%container ps")) == [(mine.id, "lab")], \
            f"{student.name}'s lab did not survive the others' attempts"
        student.run("%container rm -f lab")
        assert ps_rows(student.run("%container ps")) == []

        # The hub's per-student limit caps a container that asks for more.
        reply, outputs = student.execute(
            "%%container --mem 4g --memory-swap 4g\nchunks = []\n"
            "for i in range(96):\n    chunks.append(bytearray(16 << 20))\n"
            "print('allocated 1.5 GiB')\n")
        text = _text(outputs)
        assert reply["status"] == "error" and "OOM-killed" in text, text[-2000:]
        peak = re.search(r"peak usage ([\d.]+) (KiB|MiB|GiB)", text)
        assert peak is not None, text[-2000:]
        peak_mib = float(peak.group(1)) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[peak.group(2)]
        report[f"{student.name} capped peak MiB"] = peak_mib
        assert peak_mib < MEMORY_LIMIT_MIB, f"peak {peak_mib} MiB over the student's limit"
        assert "still here" in student.run("print('still here')")

        # One named container left running: stopping the server must remove it.
        student.run("%%container --name keep --image busybox sh\nsleep 1000 >/dev/null 2>&1 &")
        barrier.wait()
    except BaseException:
        barrier.abort()
        raise
    finally:
        student.close()


def test_three_students_on_a_real_hub(tmp_path: Path) -> None:
    if MISSING:
        pytest.fail(MISSING)
    hub = Hub(tmp_path)
    hub.start()
    students = [Student(hub, name) for name in STUDENTS]
    report: dict[str, float] = {}
    try:
        barrier = threading.Barrier(len(students), timeout=900)
        with ThreadPoolExecutor(len(students)) as pool:
            futures = [pool.submit(student_session, s, barrier, report) for s in students]
            errors = [f.exception() for f in futures]
        failures = [e for e in errors if e is not None and
                    not isinstance(e, threading.BrokenBarrierError)]
        if failures or any(errors):
            raise failures[0] if failures else errors[0]  # type: ignore[misc]
        assert set(records("keep")) == set(STUDENTS)
        for student in students:
            student.stop_server()
        assert state_mod.all_states(every_user=True) == [], "containers outlived their servers"
        assert hub.cgroup_dirs() == [], f"cgroups left: {hub.cgroup_dirs()}"
        assert "left processes behind" not in hub.log(), hub.log()[-3000:]
        print(json.dumps(report, indent=1))
    finally:
        for student in students:
            student.close()
        hub.stop()
        _remove_cgroups(hub)
    assert hub.cgroup_dirs() == []


def _remove_cgroups(hub: Hub) -> None:
    """After a failure: the test's own cgroups (the hub's spawner normally removes them)."""
    for top in hub.cgroup_dirs():
        for sub, _dirs, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(sub)
