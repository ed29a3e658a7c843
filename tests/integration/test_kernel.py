"""The container kernel through jupyter_client, as JupyterLab and nbclient drive it (SPEC 5).

The kernelspecs are installed with ``nbcontainer kernel install --prefix`` into a temporary
Jupyter path. Tests that restart a container (OOM, restart) start and shut down their own kernel,
so the autouse ``no_leaks`` check sees everything gone at the end of each; the read-only checks
share one kernel per module.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
from jupyter_client.manager import KernelManager  # noqa: E402

from nbcontainer import cli  # noqa: E402

pytestmark = pytest.mark.root

KERNELS = {
    "nbc-test": [],
    "nbc-test-200m": ["--memory", "200m", "--display-name", "Python 3 (container, 200 MiB)"],
    "nbc-test-nonet": ["--net", "none"],
    "nbc-test-userns": ["--ns", "uts,pid,mount,ipc,user"],
}


@pytest.fixture(scope="module", autouse=True)
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Install the test kernelspecs under a temporary prefix and point JUPYTER_PATH at it."""
    prefix = tmp_path_factory.mktemp("jupyter")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    for name, options in KERNELS.items():
        assert cli.main(["kernel", "install", "--prefix", str(prefix), "--name", name,
                         *options]) == 0
    yield prefix
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@dataclass
class Cell:
    """What one execute_request produced on IOPub, and its reply."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] == kind]

    def stream(self, name: str = "stdout") -> str:
        return "".join(m["content"]["text"] for m in self.of("stream")
                       if m["content"]["name"] == name)

    @property
    def error(self) -> dict[str, Any] | None:
        errs = self.of("error")
        return errs[0]["content"] if errs else None

    @property
    def result(self) -> str | None:
        res = self.of("execute_result")
        return res[0]["content"]["data"]["text/plain"] if res else None

    def pngs(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.messages
                if m["msg_type"] in ("display_data", "update_display_data")
                and "image/png" in m["content"]["data"]]


class Kernel:
    """A started kernel and a blocking client; ``run`` executes a cell and collects it."""

    def __init__(self, name: str) -> None:
        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60, stdin: Any = None) -> Cell:
        cell = Cell()
        msg_id = self.kc.execute(code, allow_stdin=stdin is not None)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            if stdin is not None:
                try:
                    req = self.kc.get_stdin_msg(timeout=0.05)
                    if req["msg_type"] == "input_request":
                        self.kc.input(stdin(req["content"]["prompt"]))
                except queue.Empty:
                    pass
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1 if stdin else
                                            max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError(f"cell did not finish in {timeout} s: {code!r}") \
                        from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            cell.messages.append(msg)
            idle = msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
        while not cell.reply:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                cell.reply = reply
        return cell

    def value(self, expr: str) -> str:
        cell = self.run(expr)
        assert cell.error is None, cell.error
        assert cell.result is not None, cell.messages
        return cell.result

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernel(request: pytest.FixtureRequest) -> Iterator[Kernel]:
    """A kernel of its own (name from ``@pytest.mark.parametrize('kernel', [...])``)."""
    k = Kernel(getattr(request, "param", "nbc-test"))
    try:
        yield k
    finally:
        k.shutdown()


@pytest.fixture(scope="module")
def shared() -> Iterator[Kernel]:
    """One kernel for the checks that never end its container."""
    k = Kernel("nbc-test")
    yield k
    k.shutdown()


def test_install_writes_a_kernelspec_jupyter_lists(jupyter_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    # No --display-name: derived from the name (and options), so profiles differ.
    assert specs["nbc-test"]["spec"]["display_name"] == "Python 3 (container nbc-test)"
    assert specs["nbc-test-nonet"]["spec"]["display_name"] == \
        "Python 3 (container nbc-test-nonet: net none)"
    spec = specs["nbc-test-200m"]["spec"]
    assert spec["display_name"] == "Python 3 (container, 200 MiB)"
    assert "--memory=200m" in spec["argv"]
    assert spec["interrupt_mode"] == "message"
    assert (jupyter_path / "share/jupyter/kernels/nbc-test/logo-64x64.png").exists()


def test_state_persists_across_cells(shared: Kernel) -> None:
    shared.run("x = 40")
    shared.run("x += 2")
    assert shared.value("x") == "42"


def test_cells_run_in_their_own_pid_and_uts_namespaces(shared: Kernel) -> None:
    pid = int(shared.value("import os; os.getpid()"))
    assert pid <= 5, "the kernel inside should be PID 2 (init is PID 1)"
    inside = shared.value("import socket; socket.gethostname()").strip("'")
    assert inside != socket.gethostname()
    # !cmd runs inside the container too.
    assert shared.run("!hostname").stream().strip() == inside
    host_ns = os.readlink("/proc/self/ns/pid")
    assert shared.value("import os; os.readlink('/proc/self/ns/pid')").strip("'") != host_ns


def test_input_and_rich_output(shared: Kernel) -> None:
    cell = shared.run("name = input('who? ')\nprint('hello', name)", stdin=lambda _: "bob")
    assert cell.stream() == "hello bob\n"
    cell = shared.run("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                      "plt.plot([1, 2, 3]); plt.show()")
    assert cell.error is None, cell.error
    assert any("image/png" in m["content"]["data"] for m in cell.of("display_data"))


def test_memplot_draws_the_live_plot_from_outside(shared: Kernel) -> None:
    cell = shared.run("%memplot on\nimport time; time.sleep(0.3)")
    assert "live memory plot: on" in cell.stream()
    pngs = cell.pngs()
    assert pngs, "the relay should have published the memory plot"
    assert pngs[-1]["data"]["text/plain"].startswith("container memory: peak")
    cell = shared.run("%memplot off\nimport time; time.sleep(0.8)")
    assert not cell.pngs()
    cell = shared.run("%memplot sideways")
    assert cell.reply["content"]["status"] == "error"
    assert "UsageError" in cell.stream("stderr") and "on, off or auto" in cell.stream("stderr")


def test_interrupt_raises_keyboardinterrupt_inside(kernel: Kernel) -> None:
    kernel.run("y = 7")
    msg_id = kernel.kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
    while True:  # wait until the cell runs
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.3)
    t0 = time.monotonic()
    kernel.km.interrupt_kernel()
    # Generous waits (the v2 VM's TCG is ~10x slower): the cell itself would run 60 s.
    reply = kernel.kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    # The cell would run 60 s: a generous bound still tells "interrupted" from "ran on".
    assert time.monotonic() - t0 < 15
    assert kernel.value("y") == "7", "an interrupt keeps the container and its state"


@pytest.mark.parametrize("kernel", ["nbc-test-200m"], indirect=True)
def test_oom_kill_is_an_error_and_the_kernel_lives_on(kernel: Kernel) -> None:
    kernel.run("before = 1")
    cell = kernel.run("blob = b'x' * (1 << 30)")
    assert cell.reply["content"]["status"] == "error"
    err = cell.error
    assert err is not None and err["ename"] == "OOMKilled"
    assert "OOM-killed" in err["evalue"] and "200 MiB" in err["evalue"]
    assert "peak usage" in err["evalue"] and "state was lost" in err["evalue"]
    assert cell.pngs(), "an OOM kill always leaves the memory plot in the cell"
    assert kernel.km.is_alive()
    # The next cell works, in a fresh container, and says that state was lost.
    cell = kernel.run("print('after'); 'before' in dir()")
    assert "state was lost" in cell.stream("stderr")
    assert "200 MiB" in cell.stream("stderr")
    assert cell.stream() == "after\n"
    assert cell.result == "False"
    assert kernel.value("1 + 1") == "2"
    assert "state was lost" not in kernel.run("pass").stream("stderr")


def test_a_crash_inside_is_an_error_too(kernel: Kernel) -> None:
    cell = kernel.run("import os; os._exit(3)")
    assert cell.error is not None and cell.error["ename"] == "ContainerDied"
    assert "exited with code 3" in cell.error["evalue"]
    assert kernel.value("6 * 7") == "42"


def _containers() -> set[str]:
    base = Path(os.environ["NBCONTAINER_ROOT"]) / "containers"
    return {p.name for p in base.iterdir() if not p.name.startswith(".")} \
        if base.is_dir() else set()


def test_restart_replaces_the_container(kernel: Kernel) -> None:
    kernel.run("z = 1")
    first = kernel.value("import socket; socket.gethostname()").strip("'")
    assert first in _containers()
    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.run("z").error["ename"] == "NameError"
    second = kernel.value("import socket; socket.gethostname()").strip("'")
    assert second != first and second in _containers()
    assert first not in _containers(), "restart removed the old container"


def test_shutdown_leaves_nothing_behind() -> None:
    k = Kernel("nbc-test")
    k.run("import subprocess; p = subprocess.Popen(['sleep', '300'])")
    pid = k.km.provisioner.process.pid  # type: ignore[union-attr]
    k.shutdown()
    assert not k.km.is_alive()
    assert not os.path.exists(f"/proc/{pid}/status") or \
        "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not list(Path("/tmp").glob(f"nbck-{pid}-*"))
    # no_leaks checks the cgroup, the store record, the sleep process and the mounts.


@pytest.mark.allow_leftovers
def test_gc_removes_what_a_killed_kernel_left(tmp_path: Path) -> None:
    from conftest import leaks, snapshot

    from nbcontainer.runtime import manage

    before = snapshot()
    k = Kernel("nbc-test")
    assert k.value("1") == "1"
    k.km.provisioner.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    k.km.provisioner.process.wait()  # type: ignore[union-attr]
    k.kc.stop_channels()
    k.km.cleanup_resources()
    manage.gc()
    assert not leaks(before, wait=5.0)
    from nbcontainer.kernel.proxy import remove_stale_rundirs

    remove_stale_rundirs()
    assert not list(Path("/tmp").glob(f"nbck-{k.km.provisioner.process.pid}-*"))  # type: ignore[union-attr]


def test_net_none_kernel_is_reachable_through_ipc() -> None:
    k = Kernel("nbc-test-nonet")
    try:
        names = k.value("import socket; sorted(n for _, n in socket.if_nameindex())")
        assert names == "['lo']"
    finally:
        k.shutdown()


@pytest.mark.userns
def test_a_user_namespace_kernel_runs_as_root_inside_an_unprivileged_uid_outside() -> None:
    # Its run directory (a volume, not idmapped) is given to its mapped root when it starts.
    k = Kernel("nbc-test-userns")
    try:
        inside = k.value("import os; (os.getuid(), open('/proc/self/uid_map').read().split())")
        uid, mapping = eval(inside)  # noqa: S307 - a repr the test's kernel printed
        assert (uid, mapping[0]) == (0, "0") and int(mapping[1]) >= 65536
    finally:
        k.shutdown()


def test_notebook_runs_with_nbclient(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os, socket\nn = 20"),
        nbformat.v4.new_code_cell("n * 2 + 2"),
        nbformat.v4.new_code_cell("print(os.getpid())"),
        nbformat.v4.new_code_cell("from IPython.display import HTML\nHTML('<b>hi</b>')"),
        nbformat.v4.new_code_cell("print(os.getcwd())\n"
                                  "with open('written-inside.txt', 'w') as f: f.write('kept')"),
    ]
    client = nbclient.NotebookClient(nb, kernel_name="nbc-test", timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert int(nb.cells[2].outputs[0]["text"]) <= 5
    assert nb.cells[3].outputs[0]["data"]["text/html"] == "<b>hi</b>"
    # The notebook's directory is bound into the container and is its working directory: a
    # file a cell writes there is next to the notebook afterwards, as in a normal kernel.
    assert nb.cells[4].outputs[0]["text"].strip() == str(tmp_path)
    assert (tmp_path / "written-inside.txt").read_text() == "kept"
