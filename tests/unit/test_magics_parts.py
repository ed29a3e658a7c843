"""The parts under the magics, without root: the cell bootstrap, the pump, the meter, the plot.

The bootstrap and the pump run real child processes (plain subprocesses instead of containers:
the protocol over stdin and the extra fd is the same); the meter is fed a scripted sampler so
the OOM and peak logic can be checked exactly.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from nbcontainer.cgroups import CgroupStats
from nbcontainer.notebook.dataformat import Encoded, loads
from nbcontainer.notebook.meter import CALM_AFTER, MIB, Meter, Series
from nbcontainer.notebook.streams import Interrupted, Pipes, Pump
from nbcontainer.notebook.transfer import (
    Program,
    TransferError,
    pack_inputs,
    parse_names,
    python_command,
    unpack_outputs,
)


class Local:
    """A value of a class of this test module: not data, so it does not travel."""

    def __init__(self, v: int) -> None:
        self.v = v


def run_child(argv: list[str], data: bytes, with_out: bool = False,
              tick=None) -> tuple[int, str, str, bytes]:
    pipes = Pipes(with_output_fd=with_out)
    kw = pipes.child_kwargs()
    proc = subprocess.Popen(argv, stdin=kw["stdin"], stdout=kw["stdout"], stderr=kw["stderr"],
                            pass_fds=kw["pass_fds"])
    pipes.close_child_ends()
    out, err = io.StringIO(), io.StringIO()
    try:
        code = Pump(pipes, data, out, err, tick=tick).run(proc, grace=2)
    finally:
        proc.kill()
        proc.wait()
        pipes.close()
    return code, out.getvalue(), err.getvalue(), bytes(pipes.output)


def run_program(source: str, inputs: dict | None = None, outputs: tuple[str, ...] = (),
                packed: dict | None = None):
    if packed is None:
        packed = pack_inputs(tuple(inputs or {}), inputs or {})
    # The out fd number is only known once the pipes exist: build the program after them.
    pipes = Pipes(with_output_fd=bool(outputs))
    data = Program(source, packed, outputs, pipes.out_w).encode()
    kw = pipes.child_kwargs()
    proc = subprocess.Popen(python_command(sys.executable), stdin=kw["stdin"],
                            stdout=kw["stdout"], stderr=kw["stderr"], pass_fds=kw["pass_fds"])
    pipes.close_child_ends()
    out, err = io.StringIO(), io.StringIO()
    try:
        code = Pump(pipes, data, out, err).run(proc)
    finally:
        proc.kill()
        proc.wait()
        pipes.close()
    return code, out.getvalue(), err.getvalue(), bytes(pipes.output)


# -- transfer ----------------------------------------------------------------------------------


def test_bootstrap_round_trip():
    code, out, err, data = run_program("print('n =', n)\ntotal = sum(xs) * n\nname = __name__",
                                       {"n": 3, "xs": [1, 2, 3]}, ("total", "name"))
    assert code == 0, err
    assert out == "n = 3\n"
    assert unpack_outputs(("total", "name"), data) == {"total": 18, "name": "__main__"}


def test_bootstrap_traceback_points_at_the_cell():
    code, _, err, _ = run_program("x = 1\nraise ValueError('bad value')\n")
    assert code == 1
    assert 'File "<cell>", line 2' in err and "raise ValueError('bad value')" in err
    assert "ValueError: bad value" in err and "_nbc_main" not in err


def test_bootstrap_sys_exit_code():
    assert run_program("import sys; sys.exit(7)")[0] == 7
    assert run_program("raise SystemExit")[0] == 0


def test_missing_and_refused_outputs_are_named():
    code, _, _, data = run_program("import threading\nlock = threading.Lock()", {},
                                   ("lock", "ghost"))
    assert code == 0
    with pytest.raises(TransferError) as info:
        unpack_outputs(("lock", "ghost"), data)
    text = str(info.value)
    assert ("-o lock: cannot bring back a value of type _thread.lock; -o moves data only"
            in text)
    assert "-o ghost: the cell did not define 'ghost'" in text


def test_input_that_cannot_be_loaded_inside_is_named():
    code, _, err, _ = run_program("pass", packed={"obj": Encoded([b"NBCD\x01Z"], 6)})
    assert code == 3
    assert "-i obj: cannot be loaded inside the container: unknown tag b'Z'" in err


def test_pack_inputs_errors():
    with pytest.raises(TransferError, match="-i f: cannot send a value of type function; -i "
                                            "moves data only"):
        pack_inputs(("f",), {"f": lambda: 1})
    with pytest.raises(TransferError, match=r"-i obj: cannot send a value of type "
                                            r"test_magics_parts.Local \(at obj\[1\]\)"):
        pack_inputs(("obj",), {"obj": [1, Local(1)]})
    with pytest.raises(TransferError, match="no variable 'nope'"):
        pack_inputs(("nope",), {})
    assert loads(bytes(pack_inputs(("a",), {"a": [1]})["a"])) == [1]


def test_parse_names():
    assert parse_names("a, b,c", "-i") == ("a", "b", "c")
    assert parse_names("", "-o") == ()
    with pytest.raises(ValueError, match="-o: 'a-b' is not a Python variable name"):
        parse_names("a-b", "-o")


# -- pump ---------------------------------------------------------------------------------------


def test_pump_decodes_utf8_split_across_reads():
    script = ("import os, time\nos.write(1, b'caf\\xc3')\ntime.sleep(0.3)\n"
              "os.write(1, b'\\xa9\\n')\nos.write(2, b'\\xff\\n')")
    code, out, err, _ = run_child([sys.executable, "-c", script], b"")
    assert code == 0
    assert out == "café\n"
    assert err == "\ufffd\n"


def test_pump_feeds_a_large_body_while_reading_output():
    # cat echoes while we still write: a blocking write of 4 MiB would deadlock here.
    body = b"x" * (4 << 20)
    code, out, _, _ = run_child(["cat"], body)
    assert code == 0 and len(out) == len(body)


def test_pump_streams_before_the_end():
    seen: list[tuple[float, str]] = []

    class Sink(io.StringIO):
        def write(self, s: str) -> int:
            seen.append((time.monotonic(), s))
            return super().write(s)

    pipes = Pipes()
    kw = pipes.child_kwargs()
    proc = subprocess.Popen([sys.executable, "-u", "-c",
                             "import time; print('a'); time.sleep(1); print('b')"],
                            stdin=kw["stdin"], stdout=kw["stdout"], stderr=kw["stderr"])
    pipes.close_child_ends()
    try:
        Pump(pipes, b"", Sink(), io.StringIO()).run(proc)
        end = time.monotonic()
    finally:
        proc.wait()
        pipes.close()
    first = next(t for t, s in seen if "a" in s)
    assert end - first > 0.7


def test_interrupt_sends_sigint_then_reports():
    script = ("import signal, sys, time\n"
              "def h(*a):\n    print('got SIGINT', flush=True); sys.exit(5)\n"
              "signal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\n"
              "for _ in range(300): time.sleep(0.1)")
    fired = threading.Event()

    def tick(elapsed: float) -> None:
        if elapsed > 0.5 and not fired.is_set():
            fired.set()
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(Interrupted) as info:
        run_child([sys.executable, "-c", script], b"", tick=tick)
    assert info.value.result == 5
    assert time.monotonic() - start < 20, "the payload's 30 s loop ran on"


def test_interrupt_kills_after_the_grace():
    script = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "time.sleep(30)")

    fired_at: list[float] = []

    def tick(elapsed: float) -> None:
        # One interrupt only, whenever the first tick after 0.3 s comes (a second interrupt
        # would skip the grace: that is another path).
        if elapsed > 0.3 and not fired_at:
            fired_at.append(time.monotonic())
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        run_child([sys.executable, "-c", script], b"", tick=tick)
    killed_after = time.monotonic() - fired_at[0]
    assert info.value.result == -signal.SIGKILL
    # run_child's grace is 2 s: the kill waited for it (a lower bound, safe on a busy machine);
    # the upper bound only catches a hang.
    assert 2.0 <= killed_after < 20, f"killed {killed_after:.2f} s after the interrupt"


# -- meter --------------------------------------------------------------------------------------


class ScriptedSampler:
    """Returns a list of samples in turn, then keeps returning the last one."""

    def __init__(self, samples: list[CgroupStats]) -> None:
        self.samples = samples
        self.i = 0
        self.closed = False

    def read(self) -> CgroupStats:
        s = self.samples[min(self.i, len(self.samples) - 1)]
        self.i += 1
        return s

    def memory_current(self) -> int | None:
        """The fast path sees the memory of the sample the last full read returned."""
        return self.samples[min(max(0, self.i - 1), len(self.samples) - 1)].memory_current

    def close(self) -> None:
        self.closed = True


class ScriptedCgroup:
    def __init__(self, samples: list[CgroupStats]) -> None:
        self.sampler = ScriptedSampler(samples)
        self.only: tuple[str, ...] | None = None

    def open_sampler(self, only: tuple[str, ...] | None = None) -> ScriptedSampler:
        self.only = only
        return self.sampler


def stats(current: int, peak: int, kills: int, cpu_ns: int = 0) -> CgroupStats:
    return CgroupStats(current, peak, 100 * MIB, kills, cpu_ns, 1, 1, None)


def test_meter_takes_peak_and_oom_kills_from_the_counters():
    cg = ScriptedCgroup([stats(10 * MIB, 10 * MIB, 0), stats(20 * MIB, 99 * MIB, 1),
                         stats(5 * MIB, 99 * MIB, 1), stats(5 * MIB, 99 * MIB, 2)])
    meter = Meter(cg, rate=10).start()  # at 10 Hz every sample is a full read
    time.sleep(0.4)
    series = meter.stop()
    assert cg.sampler.closed
    assert series.peak == 99 * MIB  # the spike the samples never saw
    assert series.oom_kills == 2 and len(series.oom_times) == 2
    assert series.limit == 100 * MIB
    assert list(series.memory[:3]) == [10.0, 20.0, 5.0]


def test_meter_reads_the_counters_10_times_a_second_and_memory_at_every_sample():
    cg = ScriptedCgroup([stats(10 * MIB, 10 * MIB, 0, cpu_ns=0)]
                        + [stats(20 * MIB, 30 * MIB, 1, cpu_ns=10**8 * i) for i in range(1, 99)])
    meter = Meter(cg, rate=200).start()
    time.sleep(0.3)
    series = meter.stop()
    assert cg.only is not None and "pids_current" not in cg.only
    full = cg.sampler.i  # the first sample, one in twenty after it (200 Hz), the last one
    assert series.samples >= 20 and 2 <= full <= series.samples // 20 + 3, (full, series)
    # The fast samples in between record the memory of the last full read, and its CPU use.
    assert series.memory[0] == 10.0 and series.memory[-1] == 20.0
    assert len(series.times) == len(series.memory) == len(series.cpu) == series.samples
    assert series.cpu[-1] > 0 and series.cpu[-2] > 0
    assert series.peak == 30 * MIB and series.oom_kills == 1


class ClockedSampler(ScriptedSampler):
    """Memory as a function of the time since it was made (full and fast reads alike)."""

    def __init__(self, memory_at: Any) -> None:
        super().__init__([stats(0, 0, 0)])
        self.memory_at = memory_at
        self.t0 = time.monotonic()
        self.fast = 0

    def read(self) -> CgroupStats:
        self.i += 1
        current = self.memory_at(time.monotonic() - self.t0)
        return stats(current, current, 0)

    def memory_current(self) -> int | None:
        self.fast += 1
        return self.memory_at(time.monotonic() - self.t0)


def _metered(memory_at: Any, seconds: float, rate: float = 100) -> tuple[Any, ClockedSampler]:
    cg = ScriptedCgroup([])
    cg.sampler = ClockedSampler(memory_at)
    meter = Meter(cg, rate=rate).start()
    time.sleep(seconds)
    return meter.stop(), cg.sampler


def test_meter_pauses_the_fast_samples_while_memory_holds_still():
    series, sampler = _metered(lambda t: 50 * MIB, 1.0)
    # the first CALM_AFTER seconds at the full rate, then the 10 full reads a second only
    assert sampler.i >= 7, sampler.i  # full reads go on (10 a second): CPU, peak, OOM kills
    assert sampler.fast <= 100 * CALM_AFTER + 5, sampler.fast
    assert series.samples == sampler.i + sampler.fast
    assert len(series.times) == len(series.memory) == series.samples


def test_meter_samples_at_the_full_rate_while_memory_moves():
    series, sampler = _metered(lambda t: int(t * 1000) * MIB, 1.0)  # +1 MiB a millisecond
    assert sampler.fast >= 50, sampler.fast  # 80 asked (100 Hz less the full reads)
    assert series.samples >= 60


def test_meter_comes_back_to_the_full_rate_when_memory_moves_again():
    # still for 0.6 s (calm after 0.25 s), then moving
    series, sampler = _metered(lambda t: 10 * MIB if t < 0.6 else int(t * 1000) * MIB, 1.2)
    late = [t for t in series.times if t > 0.75]
    assert len(late) >= 25, late  # ~45 samples asked in 0.45 s at 100 Hz; calm would give 9
    early = [t for t in series.times if 0.4 < t < 0.6]
    assert len(early) <= 5, early  # calm: ~2 full reads in 0.2 s (20 asked)


def test_meter_counts_kills_from_the_first_sample_for_an_exec():
    cg = ScriptedCgroup([stats(1, 1, 4), stats(1, 1, 5)])
    meter = Meter(cg, rate=20, base_oom_kills=None).start()
    time.sleep(0.1)
    assert meter.stop().oom_kills == 1


def test_meter_stops_when_the_cgroup_goes():
    class Gone(ScriptedSampler):
        """Two reads (full or fast) work, then the cgroup is gone."""

        calls = 0

        def _call(self) -> None:
            self.calls += 1
            if self.calls > 2:
                raise OSError("cgroup removed")

        def read(self) -> CgroupStats:
            self._call()
            return super().read()

        def memory_current(self) -> int | None:
            self._call()
            return super().memory_current()

    cg = ScriptedCgroup([stats(1, 1, 0)])
    cg.sampler = Gone([stats(1, 1, 0)])
    meter = Meter(cg, rate=500).start()
    time.sleep(0.05)
    assert meter.stop().samples == 2
    assert not meter._thread.is_alive()


# -- plot ---------------------------------------------------------------------------------------


def series(label: str, n: int, kills: tuple[float, ...] = ()) -> Series:
    s = Series(label=label, limit=64 * MIB, peak=60 * MIB, oom_times=list(kills))
    for i in range(n):
        s.times.append(i / 50)
        s.memory.append(min(60.0, i / 5))
        s.cpu.append(50.0)
    return s


def test_frame_is_a_small_png():
    pytest.importorskip("matplotlib")
    from nbcontainer.notebook.plot import MemoryFigure, bundle

    png = MemoryFigure().render([series("", 500, (5.0,))])
    assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 100_000
    many = MemoryFigure().render([series("--memory 32m", 300), series("--memory 64m", 400)])
    assert many.startswith(b"\x89PNG")
    data = bundle(png, "summary")
    assert set(data) == {"image/png", "text/plain"} and isinstance(data["image/png"], str)


def _pixels(png: bytes) -> object:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_live_time_axis_spans_two_seconds_and_only_grows():
    pytest.importorskip("matplotlib")
    from nbcontainer.notebook.plot import LIVE_SPAN, MemoryFigure

    figure = MemoryFigure()
    figure.render([series("", 15)], live=True)  # 0.3 s of samples
    assert figure.ax.get_xlim() == (0, LIVE_SPAN)
    figure.render([series("", 125)], live=True)  # 2.5 s: the next step is 5, not 2.5
    assert figure.ax.get_xlim() == (0, 5)
    figure.render([series("", 50)])  # the final frame keeps the live axis
    assert figure.ax.get_xlim() == (0, 5)
    # A plot that only ever draws its final frame (a short failed cell) fits its data.
    only_final = MemoryFigure()
    only_final.render([series("", 15)])
    assert only_final.ax.get_xlim() == (0, 0.5)


def test_blitted_and_reused_frames_show_what_a_full_draw_shows():
    """Frames drawn by blitting (kept background, legend pasted back) on a figure reused from
    another cell are the picture a new figure draws in full for the same data."""
    pytest.importorskip("matplotlib")
    import numpy as np

    from nbcontainer.notebook.plot import MemoryFigure, give_back, take_figure

    old = take_figure("container memory")
    old.render([series("a", 400, (3.0,)), series("b", 200, (1.0, 2.0))], live=True)
    give_back(old)
    figure = take_figure("container memory")
    assert figure is old
    blits = 0
    for n, kills in ((20, ()), (40, ()), (60, (0.9,)), (80, (0.9,)), (90, (0.9, 1.7)),
                     (95, (0.9, 1.7))):
        key = figure._key
        got = _pixels(figure.render([series("", n, kills)], live=True))
        blits += key == figure._key
        want = _pixels(MemoryFigure().render([series("", n, kills)], live=True))
        # Identical but for antialiasing of the legend's edge (a few levels of one channel).
        assert np.abs(got - want).max() <= 8, f"frame of {n} samples differs"
        marks = figure.kills[0]
        assert [m.get_xdata()[0] for m in marks] == list(kills)
    assert blits >= 3  # most frames were blitted: the test compared the blitting path


def test_live_plot_waits_then_limits_the_frame_rate():
    pytest.importorskip("matplotlib")
    from nbcontainer.notebook.plot import LivePlot

    class Recorder:
        handle = None
        frames: list[str] = []

        def show(self, png: bytes, text: str) -> None:
            self.handle = object()
            self.frames.append(text)

    plot = LivePlot("auto", after=0.5, fps=2)
    plot.display = Recorder()  # type: ignore[assignment]
    s = series("", 10)
    for t in (0.0, 0.2, 0.4):
        plot.tick(100 + t, s)
    assert not plot.shown
    for t in (0.6, 0.7, 0.9, 1.1, 1.2):
        plot.tick(100 + t, s)
    assert len(plot.display.frames) == 2  # 0.6 and 1.1: at most 2 frames a second
    plot.finished.append(s)
    plot.finish("final")
    assert plot.display.frames[-1] == "final"
    quiet = LivePlot("auto")
    quiet.display = Recorder()  # type: ignore[assignment]
    quiet.display.frames = []
    quiet.finish("never shown")  # a quick cell in auto mode draws nothing
    assert quiet.display.frames == []


def test_pump_stops_reading_the_output_fd_past_its_limit(monkeypatch):
    """A container that floods the -o pipe cannot fill the kernel's memory: reading stops at
    MAX_OUTPUT and the run is marked as overflowed (the cell then says so in words)."""
    from nbcontainer.notebook import streams

    monkeypatch.setattr(streams, "MAX_OUTPUT", 1 << 20)
    pipes = Pipes(with_output_fd=True)
    kw = pipes.child_kwargs()
    flood = (f"import os\nfd = {pipes.out_w}\n"
             "try:\n    [os.write(fd, b'x' * 65536) for _ in range(64)]\n"
             "except BrokenPipeError:\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", flood], stdin=kw["stdin"],
                            stdout=kw["stdout"], stderr=kw["stderr"], pass_fds=kw["pass_fds"])
    pipes.close_child_ends()
    try:
        code = Pump(pipes, b"", io.StringIO(), io.StringIO()).run(proc, grace=2)
    finally:
        proc.kill()
        proc.wait()
        pipes.close()
    assert code == 0
    assert pipes.overflowed and len(pipes.output) <= 1 << 20


def test_a_failed_or_oom_killed_cell_keeps_its_last_frame_however_fast():
    """auto mode waits half a second before showing a plot, but not for a cell that failed
    or saw an OOM kill: the curve is the explanation (the README's fast OOM cell)."""
    pytest.importorskip("matplotlib")
    from nbcontainer.notebook.cell import CellPlot

    class Recorder:
        def __init__(self) -> None:
            self.handle = None
            self.frames: list[str] = []

        def show(self, png: bytes, text: str) -> None:
            self.handle = object()
            self.frames.append(text)

    def finished(mode: str, oom_kills: int = 0, force: bool = False) -> list[str]:
        plot = CellPlot(mode, display=Recorder())
        s = series("", 3)
        s.oom_kills = oom_kills
        plot.live.finished.append(s)
        plot.finish("final", force=force)
        return plot.live.display.frames

    assert finished("auto") == []                      # a quick cell that succeeded
    assert finished("auto", oom_kills=1) == ["final"]  # OOM-killed after 0.08 s
    assert finished("auto", force=True) == ["final"]   # failed (exit code, signal)
    assert finished("off", oom_kills=1, force=True) == []
    assert finished("never", oom_kills=1) == []        # the older spelling of off


def test_an_oom_mark_shows_above_the_curve_that_drops_at_the_kill() -> None:
    """At a kill the memory curve falls straight down at the kill's time: the red mark must be
    drawn over it, not hidden under it (the curves are blitted after the background)."""
    pytest.importorskip("matplotlib")
    from array import array

    from PIL import Image

    from nbcontainer.notebook.plot import MemoryFigure

    n = 120
    times = [i / 50 for i in range(n)]
    kills = [times[44], times[95]]
    memory = [0.5 if t in kills else 48.0 for t in times]
    series = Series("", array("d", times), array("d", memory), array("d", [10.0] * n),
                    50 * MIB, 50 * MIB, kills, 2, 0, n)
    figure = MemoryFigure()
    image = Image.open(io.BytesIO(figure.render([series]))).convert("RGB")
    height = image.size[1]
    (_, bottom), (_, top) = figure.ax.transAxes.transform([(0, 0), (0, 1)])

    def red(rgb: tuple[int, int, int]) -> bool:
        r, g, b = rgb
        return r >= 150 and g <= 0.6 * r and b <= 0.6 * r

    for t_kill in kills:
        x = round(figure.ax.transData.transform((t_kill, 0))[0])
        column = [image.getpixel((xx, height - 1 - y)) for xx in (x - 1, x, x + 1)
                  for y in range(int(bottom) + 2, int(top) - 2)]
        assert sum(map(red, column)) >= 10, f"the OOM mark at {t_kill:.2f} s is hidden"


def test_prefill_puts_what_fits_in_the_pipe_and_returns_the_rest() -> None:
    pipes = Pipes()
    try:
        data = bytes(range(256)) * 1024  # 256 KiB: more than a pipe holds
        rest = pipes.prefill(data)
        assert 0 < len(rest) < len(data) and data.endswith(rest)
        got = os.read(pipes.stdin_r, len(data))
        assert data.startswith(got) and len(got) + len(rest) == len(data)
        assert pipes.prefill(b"") == b""
    finally:
        pipes.close()
