"""The fenced examples of README.md and docs/*.md, run as written, so the docs cannot drift.

Every block tagged ``sh``, ``bash``, ``python`` or ``yaml`` is collected (untagged blocks are
diagrams and sample output). Each is one of:

- a **shell** block: run by bash with ``-e``, ``nbcontainer`` and ``jupyter`` on PATH (this
  checkout's, from a throw-away venv whose prefix takes ``--sys-prefix`` installs), in a fresh
  store; what a block leaves (containers, networks) is removed afterwards;
- a **notebook** block (Python whose document uses magics): the document's notebook blocks
  run in order, as cells of one real IPython kernel, each expected to succeed;
- a **program** block (plain Python): run twice by this interpreter (a user runs an example
  again), in a fresh store;
- a **config** block (``c.X = ...``): executed against a traitlets ``Config``, and every class
  it configures must exist (ours are checked by their traits);
- a **yaml** block: parsed.

``SKIP`` lists the few that cannot run here, each with its reason. A block whose first line
differs from its entry there is not skipped any more: edit the table with the docs.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

#: (file, first line of the block) -> why it cannot run on a test machine.
SKIP = {
    ("README.md", "./scripts/setup && .venv/bin/nbcontainer run --memory 100m busybox sh -c "
     "'echo \"hello from $(hostname), I am PID $$\"; cat /proc/self/cgroup'"):
        "installs system packages and the venv: that is what CI's .ci/run does first",
    ("README.md", "nbcontainer run [OPTIONS] IMAGE [COMMAND [ARG...]]   # like docker run; "
     "stdin/stdout/stderr passed through"):
        "a synopsis with placeholders ([OPTIONS], [-a]), not commands",
    ("README.md", ".venv/bin/python bench/run_all.py          # as root; rewrites "
     "bench/RESULTS.md"):
        "rewrites bench/RESULTS.md and takes minutes; scripts/test runs its --quick smoke",
    ("deploy.md", "curl -L https://tljh.jupyter.org/bootstrap.py | sudo python3 - --admin "
     "instructor"):
        "installs The Littlest JupyterHub from the internet on a dedicated machine",
    ("deploy.md", "sudo mkdir -p /opt/tljh/user/share/jupyter/kernels/python3-root"):
        "writes into a TLJH installation (/opt/tljh)",
    ("deploy.md", "./scripts/setup        # or: pip install . 'jupyterhub>=5.3'; npm install -g "
     "configurable-http-proxy"):
        "installs the machine and starts a hub that serves until stopped: "
        "tests/integration/test_hub.py runs this very configuration",
}

#: (file, first line) -> what the documented failure says: blocks that show an error on purpose.
EXPECTED_ERRORS = {
    ("magics.md", "%%container --memory 50m,100m,200m --memory-swap 50m,100m,200m --plot"):
        "2 of 3 runs failed",  # the text: the smaller limits are OOM-killed, 200m is not
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    @property
    def first(self) -> str:
        return self.text.splitlines()[0] if self.text.strip() else ""

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def kind(self) -> str:
        if self.lang == "yaml":
            return "yaml"
        if self.lang in ("sh", "bash") and not self.text.startswith("%"):
            return "shell"
        if re.search(r"^c\.\w+\.\w+ = ", self.text, re.M) \
                and not re.search(r"^%", self.text, re.M):
            return "config"
        if _uses_magics(self.path):
            return "notebook"
        return "program"


def _uses_magics(path: Path) -> bool:
    return any(b.text.startswith("%") for b in _blocks_of(path))


def _blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    return [Block(path, text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in FENCE.finditer(text) if m.group(1) in ("sh", "bash", "python", "yaml")]


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in _blocks_of(path)]


def _skip_reason(block: Block) -> str | None:
    return SKIP.get((block.path.name, block.first))


def test_the_skip_list_names_blocks_that_exist() -> None:
    """A stale skip entry would hide nothing and mislead: each names a block of today's docs."""
    present = {(b.path.name, b.first) for b in all_blocks()}
    assert set(SKIP) <= present, set(SKIP) - present
    assert set(EXPECTED_ERRORS) <= present, set(EXPECTED_ERRORS) - present


def test_every_block_is_covered() -> None:
    """Nothing falls through: each block is run by one of the tests below or skipped."""
    kinds = {b.id: b.kind for b in all_blocks() if _skip_reason(b) is None}
    assert set(kinds.values()) <= {"shell", "notebook", "program", "config", "yaml"}
    assert len(all_blocks()) >= 25  # the extractor still finds the docs' examples


# -- the environment a reader has ---------------------------------------------------------------


@pytest.fixture(scope="module")
def reader_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH with this checkout's ``nbcontainer`` and ``jupyter``, from a venv of our own, so
    ``--sys-prefix`` writes into it and nothing outside the test's directory changes."""
    base = tmp_path_factory.mktemp("reader")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (site / "reader.pth").write_text("\n".join([str(REPO), *ours]) + "\n")
    bin_dir = venv / "bin"
    script = bin_dir / "nbcontainer"
    script.write_text(f'#!/bin/sh\nexec "{bin_dir}/python" -m nbcontainer "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    # jupyter and its subcommands (jupyter-kernelspec, ...): this interpreter's console
    # scripts, run by the reader's venv.
    for source in Path(sys.executable).parent.glob("jupyter*"):
        lines = source.read_text().splitlines(keepends=True)
        if lines and lines[0].startswith("#!"):
            copy = bin_dir / source.name
            copy.write_text(f"#!{bin_dir}/python\n" + "".join(lines[1:]))
            copy.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(REPO)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    return env


def _fresh_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "NBCONTAINER_ROOT": str(tmp_path / "store"), "HOME": str(home)}


def _networks() -> set[str]:
    from nbcontainer.net import networks

    return {n["name"] for n in networks.list_networks()}


def _sweep(env: dict[str, str], networks_before: set[str]) -> None:
    """Remove what a block left running or kept: its containers, then the networks it made
    (only those: networks are machine-wide)."""
    from nbcontainer.net import networks
    from nbcontainer.runtime import manage
    from nbcontainer.runtime import state as state_mod

    root = Path(env["NBCONTAINER_ROOT"])
    if root.is_dir():
        for st in state_mod.all_states(root):
            manage.remove(st.id, force=True, root=root)
    for name in sorted(_networks() - networks_before):
        networks.remove(name)


# -- the runners ------------------------------------------------------------------------------


def _params(kind: str) -> list[object]:
    found = []
    for block in all_blocks():
        if block.kind != kind:
            continue
        reason = _skip_reason(block)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        found.append(pytest.param(block, id=block.id, marks=marks))
    return found


@pytest.mark.parametrize("block", _params("shell"))
def test_shell_example(block: Block, reader_env: dict[str, str], tmp_path: Path) -> None:
    env = _fresh_env(reader_env, tmp_path)
    # `.venv/bin/X` is the checkout's venv after scripts/setup: here, the reader's PATH.
    script = re.sub(r"(?<![\w/])\.venv/bin/", "", block.text)
    before = _networks()
    try:
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env,
                           cwd=str(REPO), capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
    finally:
        _sweep(env, before)
    assert p.returncode == 0, f"{block.id} failed:\n{script}\n--- stdout\n{p.stdout}\n" \
                              f"--- stderr\n{p.stderr}"
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("block", _params("program"))
def test_python_example_runs_twice(block: Block, reader_env: dict[str, str],
                                   tmp_path: Path) -> None:
    env = _fresh_env(reader_env, tmp_path)
    before = _networks()
    try:
        for attempt in (1, 2):
            p = subprocess.run([sys.executable, "-c", block.text], env=env, cwd=str(tmp_path),
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, f"{block.id}, run {attempt}:\n{p.stderr}"
    finally:
        _sweep(env, before)


@pytest.mark.parametrize("block", _params("config"))
def test_config_example(block: Block) -> None:
    from traitlets.config import Config

    c = Config()
    exec(compile(block.text, block.id, "exec"), {"c": c})  # noqa: S102 - our own docs
    assert c, f"{block.id} configures nothing"
    if "ContainerMagics" in c:
        from nbcontainer.notebook.magics import ContainerMagics

        traits = ContainerMagics.class_trait_names(config=True)
        unknown = set(c.ContainerMagics) - set(traits)
        assert not unknown, f"{block.id}: ContainerMagics has no {sorted(unknown)}"
        magics = ContainerMagics(shell=None, config=c)  # a bad value is a TraitError here
        for name, value in c.ContainerMagics.items():
            assert getattr(magics, name) == value


@pytest.mark.parametrize("block", _params("yaml"))
def test_yaml_example(block: Block) -> None:
    yaml = pytest.importorskip("yaml")
    assert isinstance(yaml.safe_load(block.text), dict)


def _notebook_docs() -> list[object]:
    docs = []
    for path in DOCS:
        cells = [b for b in _blocks_of(path) if b.kind == "notebook"]
        if cells:
            docs.append(pytest.param(path, cells, id=path.name))
    return docs


@pytest.mark.parametrize("path, cells", _notebook_docs())
def test_notebook_examples_in_order(path: Path, cells: list[Block],
                                    reader_env: dict[str, str], tmp_path: Path) -> None:
    """The document's Python blocks as the cells of one notebook, top to bottom."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    env = _fresh_env(reader_env, tmp_path)
    spec_dir = tmp_path / "kernels" / "docs"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "docs", "language": "python"}))
    km = KernelManager(kernel_name="docs",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))
    before = _networks()
    km.start_kernel(cwd=str(tmp_path), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        for cell in cells:
            outputs: list[str] = []

            def keep(msg: dict[str, object], into: list[str] = outputs) -> None:
                content = msg["content"]
                assert isinstance(content, dict)
                into.append(str(content.get("text") or content.get("evalue") or ""))

            reply = kc.execute_interactive(cell.text, timeout=120, output_hook=keep)
            status = reply["content"]["status"]
            expected = EXPECTED_ERRORS.get((cell.path.name, cell.first))
            if expected is not None:
                assert status == "error" and expected in reply["content"]["evalue"], \
                    f"{cell.id}: expected the documented error {expected!r}"
                continue
            said = "".join(outputs)
            # a %container line reports a CLI failure in its output, not as the cell's error
            assert not re.search(r"^nbcontainer: ", said, re.M) and "Traceback" not in said, \
                f"{cell.id}:\n{said}"
            assert status == "ok", f"{cell.id} failed: {reply['content'].get('evalue')}\n" \
                                   f"{''.join(outputs)}"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and km.is_alive():
            time.sleep(0.1)
        _sweep(env, before)
