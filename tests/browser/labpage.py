"""Driving a JupyterLab notebook page with Playwright's sync API, as a user would.

Selectors follow JupyterLab 4's DOM (and Galata, JupyterLab's own Playwright helpers,
``galata/src/helpers/notebook.ts`` and ``menu.ts``): a notebook's cells are ``.jp-Cell`` under
``.jp-Notebook``; a cell's prompt reads ``[*]:`` while it runs and ``[N]:`` once it ran; an
``image/png`` output is an ``<img>`` with a ``data:image/png;base64,...`` source inside
``.jp-OutputArea-output``; the kernel's state is written in the status bar (``Idle``). A display
updated in place (``update_display_data``, what the live plot sends) re-renders that image, so
reading its source repeatedly from the DOM shows every frame the page received.

Every wait is bounded: Playwright's default timeout is set on the context, and loops here carry
their own deadlines.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Installed in the page: every 40 ms, the source of the first image of cell ``index`` and the
#: cell's prompt; a sample is kept when either changed. The sampler runs in the page so that
#: the test's own round trips do not limit how often the DOM is read.
SAMPLER_JS = """
(index) => {
  const t0 = performance.now();
  const samples = [];
  let last = null;
  const read = () => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
    if (!cell) { return; }
    const img = cell.querySelector('.jp-OutputArea-output img');
    const src = img ? img.getAttribute('src') : null;
    const prompt = (cell.querySelector('.jp-InputPrompt') || {}).textContent || '';
    const key = prompt + '\\u0000' + src;
    if (key !== last) {
      samples.push({t: (performance.now() - t0) / 1000, src: src, prompt: prompt.trim()});
      last = key;
    }
  };
  read();
  const timer = setInterval(read, 40);
  window.__nbcSampler = {samples: samples, stop: () => clearInterval(timer)};
}
"""


@dataclass
class Sample:
    """What the sampler saw at time ``t`` (s since it started)."""

    t: float
    src: str | None = field(repr=False)  # tens of KB of base64: kept out of failure messages
    prompt: str

    @property
    def running(self) -> bool:
        return "*" in self.prompt


@dataclass
class FrameLog:
    """The image sources one cell showed, in the order the page showed them."""

    samples: list[Sample] = field(default_factory=list)

    def frames(self) -> list[tuple[float, str]]:
        """(time first seen, source) of each new image source while the cell ran."""
        seen: list[tuple[float, str]] = []
        for s in self.samples:
            if s.src and s.running and (not seen or seen[-1][1] != s.src):
                seen.append((s.t, s.src))
        return seen

    def run_end(self) -> float | None:
        """When the prompt stopped showing ``*`` (the execute reply arrived)."""
        started = False
        for s in self.samples:
            if s.running:
                started = True
            elif started:
                return s.t
        return None


def png_of(src: str) -> bytes:
    """The PNG bytes of a ``data:image/png;base64,`` source (asserts that it is one)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), f"not an inline PNG: {src[:60]!r}"
    data = base64.b64decode(src[len(prefix):])
    assert data.startswith(PNG_MAGIC), "the image source is not a PNG"
    return data


def digest(src: str) -> str:
    return hashlib.sha256(src.encode()).hexdigest()[:16]


class NotebookPage:
    """One JupyterLab page with one notebook open."""

    def __init__(self, page: Page, screenshots: Path, prefix: str) -> None:
        self.page = page
        self.screenshots = screenshots
        self.prefix = prefix
        self.shots: list[Path] = []

    # ------------------------------------------------------------------ navigation

    def open(self, url: str, timeout: float = 90.0) -> None:
        """Load the notebook's URL and wait until its kernel is idle (started and ready)."""
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        expect(self.page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(
            timeout=timeout * 1000)
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """The status bar says the kernel is idle (Galata's ``waitForRun`` reads the same).

        A dialog (a kernel that died, a page that failed to load) fails at once, with its text.
        """
        statusbar = self.page.locator("#jp-main-statusbar")
        dialog = self.page.locator(".jp-Dialog")

        def idle() -> bool:
            if dialog.count():
                raise AssertionError(f"JupyterLab shows a dialog: {dialog.first.inner_text()}")
            return statusbar.count() > 0 and "Idle" in statusbar.inner_text(timeout=5000)

        wait_until(idle, timeout, "the kernel to be idle (the status bar's 'Idle')",
                   interval=0.2)

    def status(self) -> str:
        return self.page.locator("#jp-main-statusbar").inner_text(timeout=5000)

    def menu(self, *path: str) -> None:
        """Click a menu item by its labels, e.g. ``menu("Run", "Run All Cells")``."""
        self.page.locator(
            f'li:has(div.lm-MenuBar-itemLabel:text-is("{path[0]}"))').click()
        for label in path[1:]:
            self.page.locator(".lm-Menu").last.locator(
                f'li:has(div.lm-Menu-itemLabel:text-is("{label}"))').click()

    def run_all(self) -> None:
        """Run > Run All Cells (it stops at the first cell that raises, like nbclient)."""
        self.menu("Run", "Run All Cells")

    def run_cell(self, index: int) -> None:
        """Select cell ``index`` by clicking its editor, then Shift+Enter."""
        self.cell(index).locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")

    def save(self) -> None:
        """File > Save Notebook, then wait until the page says nothing is unsaved."""
        self.cell(0).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Control+s")
        expect(self.page.locator(".jp-mod-dirty")).to_have_count(0, timeout=20000)

    # ------------------------------------------------------------------ cells

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        return self.cell(index).locator(".jp-InputPrompt").inner_text(timeout=5000).strip()

    def wait_executed(self, index: int, timeout: float) -> int:
        """Wait until cell ``index`` shows an execution count; return it."""
        prompt = self.cell(index).locator(".jp-InputPrompt")
        expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=timeout * 1000)
        match = re.search(r"\[(\d+)\]", prompt.inner_text(timeout=5000))
        assert match is not None
        return int(match.group(1))

    def wait_running(self, index: int, timeout: float) -> None:
        expect(self.cell(index).locator(".jp-InputPrompt")).to_have_text(
            re.compile(r"\[\*\]"), timeout=timeout * 1000)

    def output_text(self, index: int) -> str:
        """Everything cell ``index``'s output area shows as text (streams, errors)."""
        area = self.cell(index).locator(".jp-OutputArea")
        return area.inner_text(timeout=5000) if area.count() else ""

    def error_text(self, index: int) -> str:
        """The error outputs (tracebacks rendered as stderr) of cell ``index``."""
        errors = self.cell(index).locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        return "\n".join(errors.all_inner_texts())

    def image_srcs(self, index: int) -> list[str]:
        """The sources of the images in cell ``index``'s outputs."""
        imgs = self.cell(index).locator(".jp-OutputArea-output img")
        return [s for s in (imgs.nth(i).get_attribute("src", timeout=5000)
                            for i in range(imgs.count())) if s]

    # ------------------------------------------------------------------ live frames

    def start_sampler(self, index: int) -> None:
        self.page.evaluate(SAMPLER_JS, index)

    def stop_sampler(self) -> FrameLog:
        raw: list[dict[str, Any]] = self.page.evaluate(
            "() => { window.__nbcSampler.stop(); return window.__nbcSampler.samples; }")
        return FrameLog([Sample(float(s["t"]), s["src"], str(s["prompt"])) for s in raw])

    # ------------------------------------------------------------------ screenshots

    def screenshot(self, name: str) -> Path:
        """A screenshot of the page as it is now, under the test's screenshot directory."""
        path = self.screenshots / f"{self.prefix}-{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), timeout=20000)
        self.shots.append(path)
        return path


    def last_screenshot(self, name: str) -> None:
        """A screenshot at the end of a test, also a failed one (its own failure is printed,
        so that it does not hide the test's)."""
        try:
            self.screenshot(name)
        except Exception as err:  # noqa: BLE001 - the page may be what failed
            print(f"no final screenshot: {err}")


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
