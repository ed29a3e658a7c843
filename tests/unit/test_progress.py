"""Progress displays: the terminal (in place on a real pty, plain lines elsewhere) and the
notebook (one display, updated through its handle)."""

from __future__ import annotations

import io
import os
import re
import select

import pytest

from nbcontainer.progress import MAX_RATE, Progress, TerminalRenderer, human_bytes


class Clock:
    """A clock the test moves: the rate limit is then exact, not a matter of timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def screen_of(output: str) -> list[str]:
    """What a terminal shows after ``output``: the few sequences the renderer uses
    (CR, LF, ESC[nA cursor up, ESC[J clear below, ESC[K clear to end of line)."""
    lines = [""]
    row = col = 0
    for token in re.findall(r"\x1b\[(\d*)([AJK])|(\r)|(\n)|([^\x1b\r\n]+)", output):
        count, code, cr, lf, text = token
        if code == "A":
            row = max(0, row - int(count or 1))
        elif code == "J":
            lines[row] = lines[row][:col]
            del lines[row + 1:]
        elif code == "K":
            lines[row] = lines[row][:col]
        elif cr:
            col = 0
        elif lf:
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif text:
            line = lines[row]
            lines[row] = line[:col] + text + line[col + len(text):]
            col += len(text)
    return lines


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == \
        ["0B", "1023B", "1.0kB", "5.0MB", "3.0GB"]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    clock = Clock()
    with Progress(TerminalRenderer(out), "pulling busybox", clock=clock) as p:
        a = p.task("layer 1/2 aaaa", total=4 << 20)
        b = p.task("layer 2/2 bbbb", total=1 << 20)
        for i in range(1, 5):
            clock.now += 1
            a.update(i << 20)
        a.finish("unpacked")
        b.fail("digest mismatch")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "layer 1/2 aaaa  ...",
        "layer 2/2 bbbb  ...",
        "layer 1/2 aaaa  4.0MB/4.0MB  unpacked",
        "layer 2/2 bbbb  0B/1.0MB  digest mismatch",
    ]


def _pty_stream() -> tuple[int, io.TextIOWrapper]:
    master, slave = os.openpty()
    stream = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), encoding="utf-8",
                              write_through=True)
    return master, stream


def _drain(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        data = os.read(master, 65536)
        if not data:
            break
        chunks.append(data)
    # the pty's line discipline turns LF into CRLF on output: undo it for the screen model
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_in_place_on_a_terminal() -> None:
    master, stream = _pty_stream()
    try:
        renderer = TerminalRenderer(stream)
        assert renderer.tty  # found by isatty(), from the real pty
        clock = Clock()
        p = Progress(renderer, "build demo", clock=clock)
        task = p.task("build demo:latest", total=4, unit="steps")
        for step in range(4):
            clock.now += 1
            task.update(step, note=f"RUN step {step}")
            if step == 2:
                p.write("Step 3/4 : RUN echo hi")
        task.finish("built 123456789abc")
        p.close()
        raw = _drain(master)
    finally:
        stream.close()
        os.close(master)
    assert "\x1b[2A" in raw  # redrawn over its own two lines, not appended
    screen = [line for line in screen_of(raw) if line]
    # the text written meanwhile stays above; the progress is drawn once, in its last state
    assert screen == ["Step 3/4 : RUN echo hi", "build demo",
                      "build demo:latest  4/4 steps  built 123456789abc"]


def test_running_task_shows_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(TerminalRenderer(out, tty=True), clock=Clock())
    p.task("layer 1/1 cccc", total=100, unit="B").update(50)
    p.task("layer 2/2", total=None)  # a draw: the first task's state is shown
    assert "layer 1/1 cccc  [==========          ]  50B/100B" in screen_of(out.getvalue())


def test_updates_are_rate_limited_but_ends_always_drawn() -> None:
    draws: list[bool] = []

    class Counting(TerminalRenderer):
        def draw(self, progress: Progress, changed: object, final: bool) -> None:
            draws.append(final)

    clock = Clock()
    p = Progress(Counting(io.StringIO()), clock=clock)
    task = p.task("x", total=1000)
    for i in range(1000):  # 1000 updates in one second of the test's clock
        clock.now += 0.001
        task.update(i)
    task.finish()
    p.close()
    updates = len(draws) - 3  # the start, the finish, the close
    assert updates <= MAX_RATE + 1
    assert draws[-1] is True


def test_notebook_display_is_created_once_then_updated() -> None:
    pytest.importorskip("IPython")
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    from nbcontainer.notebook.progress import for_notebook

    shell = InteractiveShell.instance()
    saved = shell.display_pub
    shell.display_pub = CapturingDisplayPublisher()
    try:
        clock = Clock()
        p = for_notebook("importing demo.tar")
        p._clock = clock
        layer = p.task("layer 1/1 dddd", total=2 << 20)
        clock.now += 1
        layer.update(1 << 20)
        layer.finish("unpacked")
        p.close()
        outputs = shell.display_pub.outputs
    finally:
        shell.display_pub = saved
    assert len(outputs) >= 3
    ids = {o["transient"]["display_id"] for o in outputs}
    assert len(ids) == 1  # one display
    assert [o["update"] for o in outputs] == [False] + [True] * (len(outputs) - 1)
    last = outputs[-1]["data"]
    assert last["text/plain"] == "importing demo.tar\nlayer 1/1 dddd  2.0MB/2.0MB  unpacked"
    assert "&#10003;" in last["text/html"] and "<progress" not in last["text/html"]
    assert '<progress value="0.500"' in outputs[1]["data"]["text/html"]
