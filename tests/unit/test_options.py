"""The run-option table and what is derived from it: every front end, every alias."""

from __future__ import annotations

import argparse
import re

import pytest

from nbcontainer import cli
from nbcontainer.kernel.cmdline import add_kernel_options, run_options_argv, spec_from_kernel_args
from nbcontainer.notebook.magics import ContainerMagics, build_cell_parser
from nbcontainer.options import (
    CLI,
    KERNEL,
    MAGIC,
    RUN_OPTIONS,
    limit_controllers,
    options_for,
    spec_from_args,
)
from nbcontainer.spec import ContainerSpec, spec_from_dict, spec_to_dict


def _cli_run_args(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser(extras=False).parse_args(["run", *argv, "busybox", "true"])


def _kernel_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(conflict_handler="resolve")
    add_kernel_options(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("flag", ["-m", "--memory", "--mem"])
def test_every_memory_alias_works_in_every_front_end(flag: str) -> None:
    cli_spec = spec_from_args(_cli_run_args([flag, "100m"]), ["true"], "busybox")
    magic_spec = spec_from_args(build_cell_parser().parse_args([flag, "100m"]), ["true"], None)
    kernel_spec = spec_from_kernel_args(_kernel_args([flag, "100m"]))
    assert {cli_spec.limits.memory, magic_spec.limits.memory, kernel_spec.limits.memory} == \
        {100 << 20}


@pytest.mark.parametrize("front_end", [CLI, MAGIC, KERNEL])
def test_each_front_end_parses_every_flag_of_its_options(front_end: str) -> None:
    parse = {CLI: _cli_run_args, MAGIC: lambda a: build_cell_parser().parse_args(a),
             KERNEL: _kernel_args}[front_end]
    for option in options_for(front_end):
        for flag in option.flags:
            argv = [flag] if option.kind == "flag" else [flag, "x"]
            value = getattr(parse(argv), option.dest)
            expected = True if option.kind == "flag" else ["x"] if option.kind == "list" else "x"
            assert value == expected, (front_end, flag)


def test_front_ends_take_what_the_table_says() -> None:
    assert "image" not in {o.dest for o in options_for(CLI)}  # the CLI's IMAGE is positional
    assert "name" not in {o.dest for o in options_for(KERNEL)}  # --name names the kernelspec
    assert {o.dest for o in options_for(MAGIC)} == {o.dest for o in RUN_OPTIONS}


def test_magics_have_one_configurable_default_per_option() -> None:
    traits = ContainerMagics.class_traits(config=True)
    for option in options_for(MAGIC):
        assert (option.dest in traits) == option.trait, option.dest
    magics = ContainerMagics(shell=None, memory="256m", volumes=["/tmp:/data:ro"])
    try:
        spec = spec_from_args(build_cell_parser().parse_args([]), ["true"], None,
                              defaults=magics.defaults())
    finally:
        magics.shutdown()
    assert spec.limits.memory == 256 << 20 and spec.volumes[0].container == "/data"


def test_kernel_argv_round_trips_through_the_parser() -> None:
    argv = ["--mem", "300m", "-e", "A=1", "-e", "B=2", "--privileged", "--image", "busybox",
            "--plot", "off"]
    stored = run_options_argv(_kernel_args(argv))
    assert stored == ["--memory=300m", "--image=busybox", "--env=A=1", "--env=B=2",
                      "--privileged", "--plot=off"]
    assert spec_from_kernel_args(_kernel_args(stored)) == spec_from_kernel_args(_kernel_args(argv))


def test_limit_controllers_cover_every_limit() -> None:
    from nbcontainer._records import fields
    from nbcontainer.spec import Limits

    assert set(limit_controllers()) == {f.name for f in fields(Limits)}
    assert limit_controllers()["memory"] == ("memory", "--memory")
    assert limit_controllers()["cpuset_cpus"] == ("cpuset", "--cpuset-cpus")


def test_every_spec_field_survives_the_dict_form() -> None:
    spec = spec_from_args(_cli_run_args(
        ["-m", "100m", "--memory-swap", "200m", "--cpus", "0.5", "--cpu-shares", "512",
         "--cpuset-cpus", "0", "--pids-limit", "9", "--ns", "uts,pid,user", "--hostname", "h",
         "-e", "K=V", "-v", "/tmp:/t:ro", "-w", "/w", "-u", "1:2", "--cap-add", "NET_ADMIN",
         "--cap-drop", "CHOWN", "--timeout", "3", "--name", "n", "--init"]),
        ["sh", "-c", "x"], "busybox", tty=True)
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert spec_from_dict({}) == ContainerSpec()


def test_docs_options_md_is_the_table() -> None:
    from pathlib import Path

    from nbcontainer.options import reference_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "options.md").read_text()
    start = doc.index("-->\n", doc.index("<!-- options:start")) + len("-->\n")
    assert doc[start:doc.index("<!-- options:end -->")] == reference_table(), \
        "docs/options.md is stale: regenerate its table (see the end of that file)"


def test_plot_mode_one_spelling_with_old_aliases() -> None:
    from nbcontainer.errors import UsageError
    from nbcontainer.options import plot_mode

    assert [plot_mode(t) for t in ("auto", "ON", "off", "always", "never")] == \
        ["auto", "on", "off", "on", "off"]
    with pytest.raises(UsageError, match="use auto, on or off"):
        plot_mode("sometimes")
    kernel = argparse.ArgumentParser(conflict_handler="resolve")
    add_kernel_options(kernel)
    assert kernel.parse_args(["--plot", "never"]).plot == "off"
    assert kernel.parse_args(["--no-plot"]).plot == "off"
    assert build_cell_parser().parse_args(["--plot"]).plot == "on"


@pytest.mark.parametrize("argv, suggestion", [
    (["run", "--memroy", "1m", "busybox"], "did you mean --memory?"),
    (["run", "--cpu", "1", "busybox"], "did you mean --cpus?"),
    (["ps", "--al"], "did you mean --all?"),
    (["imagse"], "did you mean images?"),
    (["kernel", "install", "--dispaly-name", "x"], "did you mean --display-name?"),
])
def test_misspellings_get_did_you_mean(argv: list[str], suggestion: str) -> None:
    with pytest.raises(cli.ArgumentError, match=re.escape(suggestion)):
        cli.build_parser().parse_args(argv)


def test_no_abbreviations() -> None:
    """`--mem` is an alias; a prefix like `--memo` is not silently taken for --memory."""
    with pytest.raises(cli.ArgumentError, match="unrecognized arguments: --memo"):
        cli.build_parser().parse_args(["run", "--memo", "1m", "busybox"])
