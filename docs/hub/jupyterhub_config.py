"""A root-enabled JupyterHub on one machine, for the container course (docs/deploy.md, section 2).

``tests/integration/test_hub.py`` runs exactly this file: a real hub, configurable-http-proxy,
three students logging in and running the course at the same time.

Every student's single-user server runs **as root** (the course needs root: namespaces,
cgroups, overlay mounts) in cgroups of its own, below the hub's, with the student's limits:
memory (``Spawner.mem_limit``), CPU (``Spawner.cpu_limit``) and tasks
(``CourseSpawner.tasks_max``). nbcontainer puts a container's cgroup below the cgroup of the
process that starts it (the student's kernel), so these limits cap the student's server, kernel
*and every container they start*. ``$JUPYTERHUB_USER``, which the hub gives every server, makes
``ps``, ``rm`` and container names per student (images are shared). Root in a server is root on
the machine: use a machine (or VM) that holds nothing but the course. The v1 controllers of a
cgroup v1 or hybrid machine are used; on a pure cgroup v2 machine use SystemdSpawner with
``Delegate=yes`` (docs/deploy.md, section 3).

Settings, from the environment (defaults for a course VM)::

    NBC_HUB_PASSWORD   the shared password students log in with (8 characters or more; required)
    NBC_HUB_USERS      comma-separated allowed user names (default: anyone with the password)
    NBC_HUB_IP         address the proxy listens on (default: all); NBC_HUB_PORT (8000)
    NBC_HUB_API_PORT   the hub's own port on 127.0.0.1 (8081); NBC_HUB_PROXY_API_PORT (8001)
    NBC_HUB_DIR        the hub's database, cookie secret and pid files (/srv/jupyterhub)
    NBC_HUB_HOMES      the students' home directories, one per user (/srv/course)
    NBC_HUB_COURSE     the notebooks copied into a new home (this repository's notebooks/)
    NBC_HUB_MEMORY     memory per student (1G); NBC_HUB_CPUS (1); NBC_HUB_TASKS (1024)
    NBC_HUB_CGROUP     the cgroup, below the hub's own, holding the students' (jupyterhub)
    NBC_HUB_CHP        the configurable-http-proxy command (default: on PATH, else the one
                       scripts/setup installs in .node/ of this repository)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Integer, Unicode

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The v1 hierarchies a student's server is put in, each with one of their limits.
CONTROLLERS = ("memory", "cpu", "pids")


def _own_cgroup(controller: str) -> Path:
    """This process's (the hub's) cgroup directory in the v1 hierarchy of ``controller``."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return CGROUP_ROOT / controller / path.lstrip("/")
    raise RuntimeError(
        f"no cgroup v1 {controller} hierarchy: this spawner needs a cgroup v1 or hybrid "
        "machine; on cgroup v2 use SystemdSpawner with Delegate=yes (docs/deploy.md)")


def _procs(directory: Path) -> list[int]:
    """The processes in the cgroup ``directory`` and below it."""
    pids: list[int] = []
    for sub, _dirs, _ in os.walk(directory):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (Path(sub) / "cgroup.procs").read_text().split()]
    return pids


def _kill_and_remove(directory: Path) -> list[int]:
    """Kill every process of the cgroup ``directory`` and its children, remove them all
    (deepest first); return the pids that were still there (systemd's KillMode=control-group)."""
    left: list[int] = []
    if not directory.is_dir():
        return left
    for sub, _dirs, _ in os.walk(directory, topdown=False):
        procs = Path(sub) / "cgroup.procs"
        for _ in range(50):  # bounded: a fork bomb cannot keep the cgroup busy forever
            pids = [int(p) for p in procs.read_text().split()] if procs.exists() else []
            if not pids:
                break
            left += pids
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for _ in range(50):
            try:
                os.rmdir(sub)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY while the last killed tasks exit
                time.sleep(0.1)
    return sorted(set(left))


class CourseSpawner(SimpleLocalProcessSpawner):
    """A student's server as root, in cgroups of its own carrying the student's limits.

    SimpleLocalProcessSpawner starts ``jupyterhub-singleuser`` as the hub's user (root here)
    with ``home_dir_template`` as its home; this adds the cgroups (made on start, emptied and
    removed on stop) and a copy of the course notebooks in a new home.
    """

    tasks_max = Integer(1024, config=True, help="Most tasks (pids.max) of one student.")
    cgroup_name = Unicode("jupyterhub", config=True,
                          help="The cgroup below the hub's own holding the students' cgroups.")
    course = Unicode("", config=True, help="Directory copied into a new home (the course).")
    shutdown_timeout = Integer(30, config=True,
                               help="Seconds a server (and its kernels) may take to shut down.")

    def _cgroups(self) -> dict[str, Path]:
        safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", self.user.name)
        leaf = f"user-{self.user.id}-{safe}"  # the id keeps two escaped names apart
        return {c: _own_cgroup(c) / self.cgroup_name / leaf for c in CONTROLLERS}

    def _make_cgroups(self) -> dict[str, Path]:
        dirs = self._cgroups()
        for controller, path in dirs.items():
            path.mkdir(parents=True, exist_ok=True)
            if controller == "memory" and self.mem_limit:
                (path / "memory.limit_in_bytes").write_text(str(self.mem_limit))
            if controller == "cpu" and self.cpu_limit:
                period = int((path / "cpu.cfs_period_us").read_text())
                (path / "cpu.cfs_quota_us").write_text(str(int(self.cpu_limit * period)))
            if controller == "pids" and self.tasks_max:
                (path / "pids.max").write_text(str(self.tasks_max))
        return dirs

    async def start(self):  # type: ignore[no-untyped-def]
        home = Path(self.home_dir)
        if self.course and not home.exists():
            # The student editions only: not the solutions (instructor/, zh/instructor/), the
            # lessons' sources or their builder (docs/course.md).
            shutil.copytree(self.course, home, ignore=shutil.ignore_patterns(
                "__pycache__", ".ipynb_checkpoints", "instructor", "src", "build.py"))
        dirs = self._make_cgroups()
        # The server joins its cgroups before it runs anything (a shell, then exec): what it
        # starts, kernels and their containers, is born inside the student's limits.
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'
        self.cmd = ["/bin/sh", "-c", join, "nbc-join-cgroups",
                    *(str(d / "cgroup.procs") for d in dirs.values()), "--",
                    str(Path(sys.prefix) / "bin" / "jupyterhub-singleuser")]
        return await super().start()

    async def stop(self, now=False):  # type: ignore[no-untyped-def]
        if not now and await self.poll() is None:
            # jupyter-server shuts its kernels down on SIGTERM (their exit removes the
            # student's named containers); on SIGINT, LocalProcessSpawner's first signal, a
            # server without a terminal exits at once and leaves its kernels orphaned.
            await self._signal(signal.SIGTERM)
            await self.wait_for_death(self.shutdown_timeout)
        await super().stop(now=now)
        dirs = self._cgroups()
        deadline = time.monotonic() + self.shutdown_timeout
        while time.monotonic() < deadline and any(_procs(d) for d in dirs.values()):
            await asyncio.sleep(0.2)  # kernels finishing their own shutdown
        killed = False
        for directory in dirs.values():
            left = _kill_and_remove(directory)
            if left:
                killed = True
                self.log.warning("%s's server left processes behind in %s: killed %s",
                                 self.user.name, directory, left)
        if killed:  # containers killed from outside: their records, links and cgroups go too
            gc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nbcontainer.cli", "gc", env=self.get_env(),
                stdin=asyncio.subprocess.DEVNULL)
            try:
                await asyncio.wait_for(gc.wait(), 120)
            except asyncio.TimeoutError:
                gc.kill()
                await gc.wait()
        for controller in CONTROLLERS:  # the shared parent, once no student is left in it
            with contextlib.suppress(OSError):
                (_own_cgroup(controller) / self.cgroup_name).rmdir()

c = get_config()  # noqa: F821 - JupyterHub's config loader defines it
env = os.environ
state = Path(env.get("NBC_HUB_DIR", "/srv/jupyterhub"))
state.mkdir(parents=True, exist_ok=True, mode=0o700)

c.JupyterHub.bind_url = f"http://{env.get('NBC_HUB_IP', '')}:{env.get('NBC_HUB_PORT', '8000')}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env.get('NBC_HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('NBC_HUB_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [
    env.get("NBC_HUB_CHP") or shutil.which("configurable-http-proxy")
    or str(REPO / ".node" / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # the hub stopping stops every student's server

# Students log in with their name and one shared password (no system accounts needed).
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env["NBC_HUB_PASSWORD"]
if env.get("NBC_HUB_USERS"):
    c.Authenticator.allowed_users = set(env["NBC_HUB_USERS"].split(","))
else:
    c.Authenticator.allow_all = True

c.JupyterHub.spawner_class = CourseSpawner
c.CourseSpawner.home_dir_template = str(Path(env.get("NBC_HUB_HOMES", "/srv/course")) /
                                        "{username}")
c.CourseSpawner.course = env.get("NBC_HUB_COURSE", str(REPO / "notebooks"))
c.CourseSpawner.cgroup_name = env.get("NBC_HUB_CGROUP", "jupyterhub")
c.Spawner.mem_limit = env.get("NBC_HUB_MEMORY", "1G")
c.Spawner.cpu_limit = float(env.get("NBC_HUB_CPUS", "1"))
c.CourseSpawner.tasks_max = int(env.get("NBC_HUB_TASKS", "1024"))
c.Spawner.args = ["--allow-root"]  # jupyter-server refuses root without it
c.Spawner.default_url = "/lab"
# nbcontainer's own settings (store, cgroup parent, registries) reach the students' kernels.
c.Spawner.env_keep = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL",
                      *sorted(k for k in env if k.startswith("NBCONTAINER_"))]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
