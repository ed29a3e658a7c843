"""JupyterLab in a real browser: the live memory plot, the final frame and an OOM kill, as a
user sees them.

A real ``jupyter lab`` server (``labserver.LabServer``: 127.0.0.1, a free port, a token, a
temporary root directory and temporary Jupyter directories, the test session's store) is driven
by Playwright's sync API in Debian's Chromium (``/usr/bin/chromium``: no browser download). Two
notebooks, each opened by URL and run with Run > Run All Cells:

* ``%load_ext nbcontainer`` and ``%%container`` cells in a stock ipykernel;
* the same work on the container kernel (``nbcontainer kernel install --user`` into the
  temporary Jupyter data directory, 250 MiB).

In each, while a 4-second cell runs, a sampler in the page reads the plot image's source from
the DOM every 40 ms: the image must change at least twice a second for the whole run (every
source a valid PNG); its last frame must stay after the cell ended, and be the image/png the
saved notebook holds. A cell that allocates far past its limit must show its plot and its error
(OOM-killed, naming the limit); Run All stops there, and the next cell, run by hand, must run in
the same kernel (no restart, no dialog).

Screenshots go to ``<pytest tmp dir>/screenshots`` (the path is printed) and are copied to
``$NBCONTAINER_SCREENSHOTS/<test name>/`` when that is set. The server is stopped by its pid at
the end, after its kernels were shut down through the REST API; a process of its tree still
alive then fails the test, and the autouse leak check sees that no container, cgroup, mount or
process is left.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - scripts/setup installs it with the test extra
    pytest.fail("the browser tests need the playwright package: pip install -e '.[test]' "
                "(scripts/setup does)", pytrace=False)

from labpage import FrameLog, NotebookPage, digest, png_of, wait_until
from labserver import LabServer

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
#: The live cell runs this long; the page must show at least this many frames a second.
LIVE_SECONDS = 4.0
MIN_FPS = 2.0
#: No pause between two frames while the cell runs may be longer than this (s).
MAX_GAP = 1.0
KERNEL_MEMORY = "250m"

LIVE_BODY = """\
import time
chunks = []
for i in range(40):  # 4 s: 2 MiB more every 0.1 s, so every frame differs
    chunks.append(bytearray(2 << 20))
    time.sleep(0.1)
print("allocated", sum(map(len, chunks)) >> 20, "MiB")"""

MAGIC_CELLS = [
    "%load_ext nbcontainer",
    "%%container --mem 200m\n" + LIVE_BODY,
    """\
%%container --mem 50m
import time
hog = []
for i in range(20):  # 200 MiB, 10 MiB at a time, under a 50 MiB limit
    hog.append(bytearray(10 << 20))
    time.sleep(0.02)
print("not reached")""",
    "%%container --mem 100m\nprint('after the OOM kill:', 6 * 7)",
]

KERNEL_CELLS = [
    "state = 'kept'",
    LIVE_BODY,
    """\
import time
hog = []
for i in range(60):  # 600 MiB, 10 MiB at a time, past the kernel's 250 MiB
    hog.append(bytearray(10 << 20))
    time.sleep(0.02)
print("not reached")""",
    "print('after the OOM kill:', 6 * 7, 'state' in globals())",
]


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """The directory the test's screenshots go to (printed; copied to $NBCONTAINER_SCREENSHOTS)."""
    directory = tmp_path / "screenshots"
    directory.mkdir()
    yield directory
    shots = sorted(directory.glob("*.png"))
    frames = sorted(directory.glob("*/*.png"))
    extra = os.environ.get("NBCONTAINER_SCREENSHOTS")
    copied = ""
    if extra:
        target = Path(extra) / request.node.name
        shutil.rmtree(target, ignore_errors=True)  # this test's copy from an earlier run
        shutil.copytree(directory, target)
        copied = f" (copied to {target})"
    with capsys.disabled():
        print(f"\n{request.node.name}: {len(shots)} screenshots and {len(frames)} live plot "
              f"frames in {directory}{copied}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabServer]:
    """A running JupyterLab with the python3 and container kernels in its own data dir."""
    server = LabServer(tmp_path / "lab", os.environ["NBCONTAINER_ROOT"])
    server.write_settings()
    server.install_kernels(["--display-name", "Python 3 (container, browser test)",
                            "--memory", KERNEL_MEMORY])
    server.start()
    left: list[str] = []
    try:
        yield server
    finally:
        left = server.stop()
    assert not left, ("processes of the JupyterLab server were still running after it was "
                      "stopped:\n" + "\n".join(left) + f"\n{server.log()}")


@pytest.fixture
def page(tmp_path: Path, lab: LabServer) -> Iterator[Page]:
    """A page in headless Chromium that can reach the lab server on loopback only."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium "
                    "(scripts/setup does)", pytrace=False)
    home = tmp_path / "chromium-home"
    home.mkdir()
    # Chromium's caches and crash reports go to a home of its own, not the machine's.
    env: dict[str, str | float | bool] = {
        **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache")}
    failed: list[str] = []
    # Anything but loopback goes to a "proxy" that refuses connections: a port bound here and
    # never listened on. Chromium reaches loopback directly (it never proxies it), so the lab
    # server is the only address the page can talk to, without intercepting its requests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as dead, sync_playwright() as pw:
        dead.bind(("127.0.0.1", 0))
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, timeout=60_000, env=env,
            args=["--disable-dev-shm-usage",
                  f"--proxy-server=http://127.0.0.1:{dead.getsockname()[1]}"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1100})
            context.set_default_timeout(30_000)
            context.set_default_navigation_timeout(60_000)
            new_page = context.new_page()
            new_page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            new_page.on("pageerror", lambda err: failed.append(f"page error: {err}"))
            yield new_page
            context.close()
        finally:
            browser.close()
    if failed:  # shown with a failure; expected ones (a closed websocket) are harmless
        print("failed requests and page errors:", *failed, sep="\n  ")


# ---------------------------------------------------------------------------------- checks

def check_live_frames(log: FrameLog, label: str, save_to: Path) -> list[tuple[float, str]]:
    """The image changed at least MIN_FPS times a second, with no long pause, while the cell
    ran; every source was a valid PNG (each is saved to ``save_to``). Returns the frames."""
    frames = log.frames()
    end = log.run_end()
    assert end is not None, f"{label}: the cell never finished in the sampler's view"
    assert len(frames) >= 2, f"{label}: {len(frames)} plot frame(s) seen while the cell ran"
    save_to.mkdir()
    for i, (t, src) in enumerate(frames, 1):
        (save_to / f"{i:02d}-at-{t:.2f}s.png").write_bytes(png_of(src))
    first = frames[0][0]
    span = end - first
    rate = (len(frames) - 1) / span  # changes a second, from the first frame to the cell's end
    gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
    print(f"{label}: {len(frames)} distinct frames in {span:.2f} s (first at "
          f"{first:.2f} s of the sampler, run ended at {end:.2f} s): {rate:.2f} per second, "
          f"longest pause {max(gaps):.2f} s")
    # The first frame comes after auto mode's half second and the kernel's first figure
    # (matplotlib's import, on a busy machine up to a second more): half the run is left.
    assert span >= LIVE_SECONDS / 2, f"{label}: the plot showed for only {span:.2f} s"
    assert rate >= MIN_FPS, (f"{label}: the live plot showed {len(frames)} frames in "
                             f"{span:.2f} s ({rate:.2f}/s); at least {MIN_FPS}/s expected")
    assert max(gaps) <= MAX_GAP, f"{label}: the plot froze for {max(gaps):.2f} s mid-run"
    assert len({digest(src) for _, src in frames}) == len(frames)
    return frames


def check_final_frame_stays(nb: NotebookPage, index: int, log: FrameLog, label: str) -> str:
    """From the cell's end to the sampler's stop (1.5 s later) the image never went away nor
    changed, and it is the only image of the cell: the final frame stays. Returns it."""
    end = log.run_end()
    after = [s for s in log.samples if end is not None and s.t >= end]
    assert after, f"{label}: the sampler saw no sample after the cell ended"
    final = after[0].src
    assert final, f"{label}: no image once the cell ended"
    assert all(s.src == final for s in after), f"{label}: the image changed after the cell ended"
    png_of(final)
    srcs = nb.image_srcs(index)
    assert srcs == [final], f"{label}: the cell shows {len(srcs)} image(s), not its final frame"
    return final


def saved_outputs(path: Path, index: int) -> list[dict]:
    """The outputs of cell ``index`` as saved in the notebook file."""
    return list(json.loads(path.read_text())["cells"][index]["outputs"])


def saved_png(outputs: list[dict]) -> list[str]:
    return [o["data"]["image/png"].replace("\n", "") for o in outputs
            if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]


def run_live_and_oom(nb: NotebookPage, label: str, limit: str) -> tuple[int, str]:
    """Run All: check the live cell (1), its final frame, and the OOM cell (2) with its plot
    and error; Run All stops at the OOM cell. Returns (the OOM cell's execution count, the
    live cell's final frame)."""
    nb.start_sampler(1)
    nb.run_all()
    nb.wait_running(1, timeout=60)
    wait_until(lambda: nb.image_srcs(1), timeout=30, what=f"{label}: the first plot frame")
    nb.page.wait_for_timeout(1500)
    nb.screenshot("live-plot-running")
    nb.wait_executed(1, timeout=60)
    nb.page.wait_for_timeout(1500)
    log = nb.stop_sampler()
    check_live_frames(log, label, nb.screenshots / f"{nb.prefix}-live-frames")
    final = check_final_frame_stays(nb, 1, log, label)
    assert "allocated 80 MiB" in nb.output_text(1)

    oom_count = nb.wait_executed(2, timeout=60)
    nb.wait_idle()
    nb.screenshot("oom-cell")
    errors = nb.error_text(2)
    assert "OOM-killed" in errors and f"memory limit of {limit}" in errors, errors
    oom_plots = nb.image_srcs(2)
    assert len(oom_plots) == 1, f"{label}: the OOM-killed cell shows {len(oom_plots)} plots"
    png_of(oom_plots[0])
    assert "not reached" not in nb.output_text(2)
    assert nb.prompt(3) in ("[ ]:", "[ ]"), f"Run All went past the failed cell: {nb.prompt(3)}"
    return oom_count, final


def run_after_oom(nb: NotebookPage, lab: LabServer, kernel_id: str) -> tuple[int, str]:
    """Run the cell after the OOM kill by hand: it runs in the same kernel, no dialog."""
    nb.run_cell(3)
    count = nb.wait_executed(3, timeout=90)
    nb.wait_idle()
    nb.screenshot("after-oom")
    assert [k["id"] for k in lab.kernels()] == [kernel_id], "the kernel was replaced"
    assert nb.page.locator(".jp-Dialog").count() == 0, nb.page.locator(".jp-Dialog").inner_text()
    return count, nb.output_text(3)


def check_saved(nb: NotebookPage, notebook: Path, final: str, label: str) -> None:
    """The saved notebook keeps the live cell's final frame and the OOM cell's plot and error."""
    nb.save()
    live = saved_png(saved_outputs(notebook, 1))
    assert len(live) == 1 and f"data:image/png;base64,{live[0]}" == final, (
        f"{label}: the saved notebook's plot is not the final frame the page showed")
    oom = saved_outputs(notebook, 2)
    assert len(saved_png(oom)) == 1 and any(o["output_type"] == "error" for o in oom)


# ---------------------------------------------------------------------------------- tests

def test_magics_notebook(lab: LabServer, page: Page, screenshots: Path) -> None:
    """``%%container`` cells in a stock ipykernel: live plot, final frame, OOM kill, survival."""
    notebook = lab.write_notebook("magics.ipynb", "python3", "Python 3", MAGIC_CELLS)
    nb = NotebookPage(page, screenshots, "magics")
    try:
        nb.open(lab.page_url(notebook.name))
        [kernel] = lab.kernels()
        oom_count, final = run_live_and_oom(nb, "%%container", "50 MiB")
        count, text = run_after_oom(nb, lab, kernel["id"])
        assert count == oom_count + 1, "the execution count restarted: the kernel did"
        assert "after the OOM kill: 42" in text
        check_saved(nb, notebook, final, "%%container")
    finally:
        nb.last_screenshot("end")


def test_container_kernel_notebook(lab: LabServer, page: Page, screenshots: Path) -> None:
    """The container kernel: live plot, final frame, OOM kill, the next cell in a fresh
    container of the same kernel."""
    notebook = lab.write_notebook("kernel.ipynb", "nbc-browser",
                                  "Python 3 (container, browser test)", KERNEL_CELLS)
    nb = NotebookPage(page, screenshots, "kernel")
    try:
        nb.open(lab.page_url(notebook.name))
        [kernel] = lab.kernels()
        assert kernel["name"] == "nbc-browser"
        _, final = run_live_and_oom(nb, "container kernel", "250 MiB")
        _, text = run_after_oom(nb, lab, kernel["id"])
        assert "nbcontainer: state was lost" in text, text
        assert "after the OOM kill: 42 False" in text, text
        check_saved(nb, notebook, final, "container kernel")
    finally:
        nb.last_screenshot("end")

