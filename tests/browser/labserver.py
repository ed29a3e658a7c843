"""A real ``jupyter lab`` server for the browser tests, isolated from the machine's Jupyter.

The server listens on 127.0.0.1 on a free port with a token of its own, serves a temporary root
directory, and reads and writes only temporary Jupyter directories (config, data, runtime, lab
settings and workspaces, IPython's profile): nothing of the machine's Jupyter is read from the
user's directories or written. The environment's own ``etc/jupyter`` is still read, since that is
where pip enabled JupyterLab's server extension. Kernels it starts inherit ``NBCONTAINER_ROOT``,
the test session's store, so the leak check sees their containers.

:meth:`LabServer.stop` shuts the kernels down through the REST API (as the UI's "Shut Down All
Kernels" does: their ``atexit`` hooks run), then stops the server by its pid with SIGTERM, and
reports any process of the server's tree still alive after that (killing it by pid, so that one
failure does not spill into the next test).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

#: JupyterLab settings that keep the page deterministic and on loopback: every cell is in the
#: DOM (no windowing, so a cell's output can be read wherever it is scrolled), and no news or
#: update check (they would fetch from the internet).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the server is told not to try others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabServer:
    """One ``jupyter lab`` process serving ``root``, with its Jupyter directories under ``base``."""

    def __init__(self, base: Path, store: str, start_timeout: float = 90.0) -> None:
        self.base = base
        self.root = base / "notebooks"
        self.config_dir = base / "jupyter-config"
        self.data_dir = base / "jupyter-data"
        self.runtime_dir = base / "jupyter-runtime"
        self.log_path = base / "jupyter-lab.log"
        for d in (self.root, self.config_dir, self.data_dir, self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.env = self._environment(store)
        self.proc: subprocess.Popen[bytes] | None = None
        self._tree: dict[int, float] = {}

    def _environment(self, store: str) -> dict[str, str]:
        """This process's environment with every Jupyter and IPython directory made temporary."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JUPYTER_", "JUPYTERLAB_")) and k != "IPYTHONDIR"}
        env.update({
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
            "JUPYTER_DATA_DIR": str(self.data_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTERLAB_SETTINGS_DIR": str(self.config_dir / "lab" / "user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.config_dir / "lab" / "workspaces"),
            "IPYTHONDIR": str(self.base / "ipython"),
            "NBCONTAINER_ROOT": store,
            # Kernels started by the server find nbcontainer's CLI and Python next to this one.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", "/usr/bin:/bin")]),
        })
        return env

    # ------------------------------------------------------------------ set-up

    def install_kernels(self, container_kernel_args: list[str]) -> None:
        """Install ``python3`` (this interpreter's ipykernel) and the container kernel
        ``nbc-browser`` into the temporary data directory (``--user`` with JUPYTER_DATA_DIR)."""
        self._run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3",
                   "--display-name", "Python 3"])
        self._run([sys.executable, "-m", "nbcontainer", "kernel", "install", "--user",
                   "--name", "nbc-browser", *container_kernel_args])
        installed = sorted(p.name for p in (self.data_dir / "kernels").iterdir())
        assert installed == ["nbc-browser", "python3"], installed

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv} failed ({done.returncode}): {done.stderr}"

    def write_settings(self) -> None:
        """JupyterLab user settings (see :data:`LAB_SETTINGS`) in the temporary settings dir."""
        settings = self.config_dir / "lab" / "user-settings"
        for rel, values in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def write_notebook(self, name: str, kernel: str, display_name: str,
                       cells: list[str]) -> Path:
        """An nbformat 4 notebook of code cells, without outputs, on kernelspec ``kernel``."""
        nb = {
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": kernel, "display_name": display_name,
                               "language": "python"},
                "language_info": {"name": "python"},
            },
            "cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {},
                       "execution_count": None, "outputs": [], "source": source}
                      for i, source in enumerate(cells)],
        }
        path = self.root / name
        path.write_text(json.dumps(nb, indent=1))
        return path

    # ------------------------------------------------------------------ life cycle

    def start(self) -> LabServer:
        """Start ``jupyter lab`` and wait until its REST API answers (or fail with its log)."""
        argv = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            # Nothing fetched from the internet: no update check, no news, no PyPI listing.
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the server writes it until stop()
        try:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=self.root,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                if self.api("GET", "/api/status").get("started"):
                    return self
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"jupyter lab did not answer within {self.start_timeout} s:\n"
                             f"{self.log()}")

    def log(self, tail: int = 6000) -> str:
        """The end of the server's log (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def api(self, method: str, path: str, timeout: float = 10.0) -> Any:
        """One REST call with the token; the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        # No proxy: the server is on loopback, whatever the machine's proxy settings say.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page_url(self, notebook: str) -> str:
        """The JupyterLab URL that opens ``notebook`` (its kernel starts with it)."""
        return f"{self.url}/lab/tree/{notebook}?token={self.token}"

    def kernels(self) -> list[dict[str, Any]]:
        """The server's running kernels (REST ``/api/kernels``)."""
        return list(self.api("GET", "/api/kernels"))

    def _remember_tree(self) -> None:
        """Note every process of the server's tree (pid and start time) while it runs."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            server = psutil.Process(self.proc.pid)
            for p in [server, *server.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    self._tree.setdefault(p.pid, p.create_time())

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Shut the kernels down (REST), then SIGTERM the server by pid and wait for it.

        Returns a description of every process of its tree still alive after that (each then
        killed by pid): empty when the server and its kernels stopped by themselves.
        """
        if self.proc is None:
            return []
        self._remember_tree()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                for kernel in self.kernels():
                    with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                        self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=timeout)
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return [f"jupyter lab (pid {self.proc.pid}) ignored SIGTERM for {timeout} s"]
        return self._reap_tree(timeout=10.0)

    def _reap_tree(self, timeout: float) -> list[str]:
        """Wait for the remembered processes to exit; kill (by pid) and name any that do not."""
        deadline = time.monotonic() + timeout
        left: list[psutil.Process] = []
        while True:
            left = []
            for pid, created in self._tree.items():
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(p)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        described = []
        for p in left:
            with contextlib.suppress(psutil.Error):
                described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
                p.kill()
        psutil.wait_procs(left, timeout=10)
        return described
