"""Quote bench/RESULTS.md in README.md and docs/*.md, so every figure there has one source.

A doc marks a generated passage with ``<!-- bench:NAME -->`` ... ``<!-- /bench -->`` (on one
line for an inline figure, or around a block). ``python bench/quote.py`` rewrites every marked
passage from RESULTS.md; ``python bench/quote.py --check`` rewrites nothing and exits 1 naming
each passage that disagrees with RESULTS.md (a figure typed by hand, or RESULTS.md regenerated
without running this script), each unknown NAME, and each NAME whose figures RESULTS.md lacks.
``--render-only --results FILE`` only checks that every quote can be made from FILE (the CI
smoke run's output), so a benchmark whose output format changed fails CI too.
tests/unit/test_bench_quotes.py runs the check, so a stale figure fails CI.

Each NAME below is a function of the parsed RESULTS.md and of the link from the doc to it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
MARKER = re.compile(r"<!-- bench:([\w-]+) -->((?:(?!<!-- bench:).)*?)<!-- /bench -->", re.S)


class QuoteError(Exception):
    """RESULTS.md lacks what a quote needs."""


@dataclass
class Results:
    """RESULTS.md, split into its benchmark sections (the text of each one's code block)."""

    text: str
    date: str
    sections: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Results:
        date = re.search(r"on (\d{4}-\d\d-\d\d [\d:]+ UTC)", text)
        sections = {}
        for m in re.finditer(r"<!-- section:([\w-]+) -->.*?```\n(.*?)```", text, re.S):
            sections[m.group(1)] = m.group(2)
        return cls(text, date.group(1) if date else "an unknown date", sections)

    def section(self, sid: str) -> str:
        if sid not in self.sections:
            raise QuoteError(f"RESULTS.md has no section {sid!r}")
        return self.sections[sid]

    def find(self, sid: str, pattern: str) -> re.Match[str]:
        m = re.search(pattern, self.section(sid), re.M)
        if m is None:
            raise QuoteError(f"RESULTS.md section {sid!r} has no line matching {pattern!r}")
        return m

    def machine(self) -> str:
        """A short description of the machine, from RESULTS.md's facts."""
        cpu = re.search(r"^- CPU: (.*)$", self.text, re.M)
        layout = re.search(r"^- cgroup layout: (\w+)", self.text, re.M)
        return (f"{cpu.group(1) if cpu else 'unknown CPU'}, cgroup "
                f"{layout.group(1) if layout else 'unknown'}")


def source(r: Results, link: str) -> str:
    return f"([{link.split('/')[-1]}]({link}), generated {r.date} on {r.machine()})"


def fixed_table(block: str, header: str) -> list[list[str]]:
    """Rows of a fixed-width table in ``block`` starting at the line that starts with
    ``header``, up to the first blank line or prose line; cells split on 2+ spaces; an indented
    line continues the previous row's last cell."""
    lines = block.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    if start is None:
        raise QuoteError(f"no table headed {header!r}")
    rows = [re.split(r"\s{2,}", lines[start].strip())]
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith(("Same work", "Differences", "[")):
            break
        if line.startswith(" "):
            rows[-1][-1] += " " + line.strip()
            continue
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def markdown(rows: list[list[str]]) -> str:
    width = max(len(r) for r in rows)
    out = []
    for i, row in enumerate(rows):
        cells = [c.replace("|", "\\|") for c in row] + [""] * (width - len(row))
        out.append("| " + " | ".join(cells) + " |")
        if i == 0:
            out.append("|" + " --- |" * width)
    return "\n".join(out)


def q_start(r: Results, link: str) -> str:
    block = r.section("start")
    layout = r.find("start", r"^cgroup layout: (.*)$").group(1)
    notes = [line for line in block.splitlines()
             if line.startswith(("Same work", "Differences", "["))]
    return (f"\nContainer start of `/bin/true` {source(r, link)}, {layout}:\n\n"
            + markdown(fixed_table(block, "what")) + "\n\n"
            + "\n".join(f"- {note}" for note in notes) + "\n")


def q_start_crun(r: Results, link: str) -> str:
    block = r.section("start-no-unified")
    if "skipped" in block:
        return f"\n(no hybrid layout here: crun ran in the table above) {source(r, link)}\n"
    return (f"\nWith the cgroup2 mount hidden in a private mount namespace, so that crun runs "
            f"(not the layout users have) {source(r, link)}:\n\n"
            + markdown(fixed_table(block, "what")) + "\n")


def _cell(r: Results, name: str) -> tuple[str, str, str]:
    m = r.find("magics", rf"^\s+{re.escape(name)}\s+median\s+([\d.]+) ms\s+min\s+([\d.]+) ms"
                         r"\s+x\s*([\d.]+)")
    return m.group(1), m.group(2), m.group(3)


def q_magics(r: Results, link: str) -> str:
    ctr, ctr_min, ctr_x = _cell(r, "%%container --mem 100m")
    script, _, _ = _cell(r, "%%script python")
    plain, _, _ = _cell(r, "plain pass (kernel)")
    rates = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"^\s+(\d+) Hz: ([\d.]+) % of a core, (\d+) us per sample", r.section("magics"), re.M)}
    moving = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"^\s+moving (\d+) Hz: ([\d.]+) % of a core, (\d+) us per sample", r.section("magics"),
        re.M)}
    floor = re.search(r"^\s+moving floor at 100 Hz \(.*\): ([\d.]+) % of a core",
                      r.section("magics"), re.M)
    if not {"20", "100"} <= set(rates) or "100" not in moving or floor is None:
        raise QuoteError("RESULTS.md section 'magics' lacks the 20 and 100 Hz sampler lines")
    _, _, plot_x = _cell(r, "--plot")
    frame = r.find("magics", r"kernel CPU per plot frame: ([\d.]+) ms").group(1)
    return (f"\nMeasured by `bench/bench_magics.py` {source(r, link)}: a `pass` cell under "
            f"`%%container --mem 100m` takes {ctr} ms (median; min {ctr_min} ms), {ctr_x}x a "
            f"`%%script python` cell ({script} ms); a plain `pass` in the kernel takes {plain} ms. "
            f"The sampler thread costs {float(rates['20'][0]):.2f} % of a core at 20 Hz and "
            f"{float(rates['100'][0]):.2f} % at 100 Hz while the memory holds still (its fast "
            f"samples pause), {float(moving['100'][0]):.2f} % at 100 Hz while it moves all the "
            f"time ({moving['100'][1]} µs of CPU per sample, wake-up included; a bare loop that "
            f"only waits and reads the one file costs {float(floor.group(1)):.2f} %); each plot "
            f"frame costs the kernel about {frame} ms of CPU, and a CPU-bound cell takes "
            f"{plot_x}x its time without the plot.{_allocation(r)}\n")


def _allocation(r: Results) -> str:
    """The sentence on part 5 (tracemalloc per cell), when RESULTS.md has it."""
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"^\s+(%%container pass|%%script python)\s+peak\s+([\d.]+) MiB\s+net\s+([\d.]+) KiB",
        r.section("magics"), re.M)}
    if len(rows) < 2:
        return ""
    (peak, net), (script, _) = rows["%%container pass"], rows["%%script python"]
    return (f" A `%%container` `pass` cell allocates at most {peak} MiB in the kernel process "
            f"({net} KiB left allocated after it; tracemalloc), a `%%script python` one "
            f"{script} MiB.")


def q_frame_cpu(r: Results, link: str) -> str:
    frame = r.find("magics", r"kernel CPU per plot frame: ([\d.]+) ms").group(1)
    return f"~{frame} ms"


def q_kernel_rss(r: Results, link: str) -> str:
    peak = r.find("magics", r"kernel process memory .*: RSS \d+ MiB, peak (\d+) MiB").group(1)
    return f"~{peak} MiB"


def q_kernel(r: Results, link: str) -> str:
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(python3|nbcontainer)\s+([\d.]+)\s+([\d.]+)\s+(\S+)$", r.section("kernel"), re.M)}
    if set(rows) != {"python3", "nbcontainer"}:
        raise QuoteError("RESULTS.md section 'kernel' lacks the python3 and nbcontainer rows")
    ratio = r.find("kernel", r"ratio container/stock: median ([\d.]+)x").group(1)
    text = (f"\nMeasured by `bench/bench_kernel.py` {source(r, link)}: a `pass` cell's round trip "
            f"takes {rows['python3'][0]} ms on a stock ipykernel and {rows['nbcontainer'][0]} ms "
            f"on the container kernel (medians, {ratio}x)")
    if rows["python3"][2] != "-":
        text += (f"; start-up {int(rows['python3'][2]) / 1000:.2f} s vs "
                 f"{int(rows['nbcontainer'][2]) / 1000:.2f} s")
    return text + ".\n"


def q_images(r: Results, link: str) -> str:
    block = r.section("images")
    out = [f"\nMeasured by `bench/bench_images.py` {source(r, link)}; seconds, GNU tar with "
           "`--xattrs`; the ratio is ours over GNU tar's, of medians."]
    row = re.compile(r"^(.+?)\s{2,}(.+?)\s+([\d.]+)\s+([\d.]+)\s{2,}(.+?)\s+([\d.]+)\s+"
                     r"([\d.]+)\s*([\d.]+x)$")
    for m in re.finditer(r"^on (\w+) \(([^)]*)\); seconds$", block, re.M):
        lines = block[m.end() + 1:].splitlines()
        table = [re.split(r"\s{2,}", lines[0].strip())]
        for line in lines[1:]:
            cells = row.match(line)
            if cells is None:
                break
            table.append(list(cells.groups()))
        out.append(f"\nOn {m.group(1)} ({m.group(2)}):\n\n" + markdown(table))
    if len(out) == 1:
        raise QuoteError("RESULTS.md section 'images' has no table")
    return "\n".join(out) + "\n"


def q_network(r: Results, link: str) -> str:
    block = r.section("network")
    start = r.find("network", r"^container start of /bin/true \(busybox\); (\d+ rounds)").group(1)
    cost = r.find("network", r"^network cost per start \(bridge minus none, cold medians\): "
                             r"(.*)$").group(1)
    tcp = r.find("network", r"^TCP throughput, (\d+ MiB) per transfer, (\d+) rounds")
    ratios = re.findall(r"^ratio (.*): ([\d.]+x)$", block, re.M)
    if not ratios:
        raise QuoteError("RESULTS.md section 'network' has no ratio lines")
    return (f"\nMeasured by `bench/bench_network.py` {source(r, link)}, in a network namespace "
            f"of the benchmark's own playing the host. Start of `/bin/true` ({start} per side, "
            "interleaved; cold: 0.3 s idle before each start, as between cells), runc on the "
            "real CNI bridge plugin as podman's CNI backend runs it:\n\n"
            + markdown(fixed_table(block, "what")) + "\n\n"
            f"The network's cost per start (bridge minus none, cold medians): {cost}. "
            "As a notebook cell starts a container (teardown in the background), with and "
            "without a spare:\n\n"
            + markdown(fixed_table(block, "cell start")) + "\n\n"
            f"TCP throughput ({tcp.group(1)} per transfer, median of {tcp.group(2)}):\n\n"
            + markdown(fixed_table(block, "path")) + "\n\n"
            + "\n".join(f"- {text}: {value}" for text, value in ratios) + "\n")


QUOTES: dict[str, Callable[[Results, str], str]] = {
    "start": q_start,
    "start_crun": q_start_crun,
    "magics": q_magics,
    "frame_cpu": q_frame_cpu,
    "kernel_rss": q_kernel_rss,
    "kernel": q_kernel,
    "images": q_images,
    "network": q_network,
}


def docs(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render(doc: Path, text: str, results: Results, results_path: Path) -> tuple[str, list[str]]:
    """``text`` with every marked passage regenerated; and the problems found."""
    problems: list[str] = []
    link = os.path.relpath(results_path, doc.parent)

    def sub(m: re.Match[str]) -> str:
        name, old = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if name not in QUOTES:
            problems.append(f"{doc.name}:{line}: unknown quote {name!r} (known: "
                            f"{', '.join(QUOTES)})")
            return m.group(0)
        try:
            new = QUOTES[name](results, link)
        except QuoteError as err:
            problems.append(f"{doc.name}:{line}: {name}: {err}")
            return m.group(0)
        if new != old:
            problems.append(f"{doc.name}:{line}: {name} disagrees with {results_path.name}")
        return f"<!-- bench:{name} -->{new}<!-- /bench -->"

    return MARKER.sub(sub, text), problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 if a doc disagrees with RESULTS.md")
    p.add_argument("--render-only", action="store_true",
                   help="change nothing; exit 1 only if a quote cannot be made from the results "
                        "(e.g. a benchmark's output format changed): for a --quick smoke run")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("files", nargs="*", type=Path, help="docs to process (default: README.md "
                   "and docs/*.md)")
    args = p.parse_args(argv)
    results = Results.parse(args.results.read_text())
    failed = False
    for doc in args.files or docs():
        text = doc.read_text()
        new, problems = render(doc.resolve(), text, results, args.results.resolve())
        if not args.check:  # a disagreement is what the other modes fix or ignore
            problems = [pr for pr in problems if "disagrees" not in pr]
        for problem in problems:
            print(problem, file=sys.stderr)
        failed = failed or bool(problems)
        if not (args.check or args.render_only) and new != text:
            doc.write_text(new)
            print(f"updated {doc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
