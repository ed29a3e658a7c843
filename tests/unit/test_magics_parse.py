"""The magics in an in-process IPython shell: option parsing, defaults, usage errors.

No root needed: every case here fails (or is inspected) before a container would be created,
and the autouse ``no_leaks`` fixture checks that indeed nothing was.
"""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.testing.globalipapp import start_ipython  # noqa: E402

from nbcontainer.notebook import magics as magics_mod  # noqa: E402
from nbcontainer.notebook.transfer import BOOTSTRAP  # noqa: E402


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    shell.run_line_magic("load_ext", "nbcontainer")
    yield shell
    shell.run_line_magic("unload_ext", "nbcontainer")


@pytest.fixture
def cm(ip):
    """The loaded ContainerMagics, with its traitlets reset after the test."""
    magics = magics_mod._loaded
    assert magics is not None
    saved = {name: getattr(magics, name) for name in magics.trait_names() if
             magics.trait_metadata(name, "config")}
    yield magics
    for name, value in saved.items():
        setattr(magics, name, value)


def store_containers() -> list[str]:
    base = os.path.join(os.environ["NBCONTAINER_ROOT"], "containers")
    return [n for n in os.listdir(base) if not n.startswith(".")] if os.path.isdir(base) else []


def test_extension_registers_the_magics(ip):
    assert "container" in ip.magics_manager.magics["cell"]
    assert "container" in ip.magics_manager.magics["line"]


def test_help_documents_every_option(ip):
    doc = ip.magics_manager.magics["cell"]["container"].__doc__
    for flag in ("--mem", "--memory", "--image", "--cpus", "--ns", "--plot", "--no-plot",
                 "-i", "-o", "--name", "--timeout", "COMMAND"):
        assert flag in doc, flag


def test_parse_python_body_uses_the_kernels_interpreter(cm):
    args = cm.parse("--mem 100m --cpus 0.5")
    [(label, spec)] = cm.specs(args)
    assert label == ""
    assert spec.limits.memory == 100 << 20 and spec.limits.cpus == 0.5
    assert spec.command[0] == sys.executable and spec.command[-1] == BOOTSTRAP
    assert spec.image == "host"


def test_python_body_on_an_image_runs_the_images_python3(cm):
    for image in ("busybox", "localhost:5000/team/py:3.11"):
        [(_, spec)] = cm.specs(cm.parse(f"--image {image}"))
        assert spec.command[0] == "python3" and spec.command[-1] == BOOTSTRAP
    [(_, spec)] = cm.specs(cm.parse("--image none"))
    assert spec.command[0] == sys.executable


def test_parse_command_takes_the_rest_of_the_line(cm):
    args = cm.parse('--image busybox --memory 64m sh -c "echo a b" --not-an-option')
    [(_, spec)] = cm.specs(args)
    assert spec.command == ("sh", "-c", "echo a b", "--not-an-option")
    assert spec.image == "busybox"
    args = cm.parse("-- python3 -u")
    assert args.command == ["python3", "-u"]


def test_plot_flags(cm):
    assert cm.parse("--plot").plot == "on"
    assert cm.parse("--no-plot").plot == "off"
    assert cm.parse("").plot is None
    with pytest.raises(UsageError, match="not allowed with argument"):
        cm.parse("--plot --no-plot")


def test_comparison_values_make_one_labelled_spec_each(cm):
    runs = cm.specs(cm.parse("--memory 50m,100m,200m"))
    assert [label for label, _ in runs] == ["--memory 50m", "--memory 100m", "--memory 200m"]
    assert [s.limits.memory for _, s in runs] == [50 << 20, 100 << 20, 200 << 20]
    runs = cm.specs(cm.parse("--cpus 0.25,1"))
    assert [s.limits.cpus for _, s in runs] == [0.25, 1.0]


def test_a_memory_comparison_pairs_its_swap_value_for_value(cm):
    runs = cm.specs(cm.parse("--memory 50m,100m --memory-swap 50m,100m"))
    assert [(s.limits.memory, s.limits.memory_swap) for _, s in runs] == [
        (50 << 20, 50 << 20), (100 << 20, 100 << 20)]
    runs = cm.specs(cm.parse("--memory 50m,100m --memory-swap 300m"))
    assert [s.limits.memory_swap for _, s in runs] == [300 << 20, 300 << 20]


@pytest.mark.parametrize("line, message", [
    ("--mem 10zb", "--memory: invalid size '10zb'"),
    ("--bogus", "unrecognized arguments: --bogus"),
    ("--cpus -1", "--cpus"),
    ("--ns pid,nope", "nope"),
    ("--memory 50m,100m --cpus 1,2", "compare one option at a time"),
    ("--memory 50m,,100m", "empty value"),
    ("--memory 50m,100m --memory-swap 50m", "--memory-swap"),
    ("--memory 50m,100m --memory-swap 50m,100m,200m", "pairs one value with each"),
    ("--memory-swap 50m,100m", "pairs one value with each"),
    ("--memory 50m,100m --name web", "cannot use --name"),
    ("--image 'Bad Image'", "invalid image reference"),
    ("-i x sh", "Python bodies only"),
    ("-o 1x", "not a Python variable name"),
    ("--mem '100m", "No closing quotation"),
])
def test_bad_lines_raise_usage_error_and_create_nothing(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("container", line, "print('never')")
    assert store_containers() == []


def test_input_that_is_not_data_names_the_variable(ip):
    ip.user_ns["handle"] = lambda: None
    with pytest.raises(UsageError, match=r"-i handle: cannot send a value of type function; "
                                         r"-i moves data only"):
        ip.run_cell_magic("container", "-i handle", "pass")
    with pytest.raises(UsageError, match="no variable 'absent'"):
        ip.run_cell_magic("container", "-i absent", "pass")
    assert store_containers() == []


def test_traitlet_defaults_apply_and_the_line_wins(ip, cm):
    ip.run_line_magic("config", 'ContainerMagics.memory = "512m"')
    ip.run_line_magic("config", "ContainerMagics.env = ['A=1']")
    ip.run_line_magic("config", 'ContainerMagics.image = "busybox"')
    [(_, spec)] = cm.specs(cm.parse("sh"))
    assert spec.limits.memory == 512 << 20
    assert spec.env == (("A", "1"),)
    assert spec.image == "busybox"
    [(_, spec)] = cm.specs(cm.parse("--mem 64m --image host sh"))
    assert spec.limits.memory == 64 << 20 and spec.image == "host"


def test_bad_traitlet_default_is_a_usage_error(ip, cm):
    cm.memory = "lots"
    with pytest.raises(UsageError, match="--memory"):
        ip.run_cell_magic("container", "", "pass")


def test_config_file_style_defaults():
    from traitlets.config import Config

    config = Config()
    config.ContainerMagics.memory = "1g"
    config.ContainerMagics.plot = "never"
    magics = magics_mod.ContainerMagics(config=config)
    try:
        assert magics.memory == "1g" and magics.plot == "never"
        assert magics.defaults() == {"memory": "1g"}
    finally:
        magics.shutdown()


def test_container_line_usage_errors(ip):
    with pytest.raises(UsageError, match="use the cell magic"):
        ip.run_line_magic("container", "run busybox true")
    with pytest.raises(UsageError, match="give a container and a command"):
        ip.run_line_magic("container", "exec web")
    with pytest.raises(UsageError, match="NAME"):
        ip.run_line_magic("container", "stats")


def test_container_last_before_any_cell(ip, capsys):
    magics_mod._loaded.last = []
    ip.run_line_magic("container", "last")
    assert "no %%container cell has run yet" in capsys.readouterr().out


@pytest.mark.parametrize("line, argv", [
    ("exec lab ls /tmp  # streamed; an error if it fails", ["exec", "lab", "ls", "/tmp"]),
    ("stats lab --duration 10  # live plot (stop button ends it)",
     ["stats", "lab", "--duration", "10"]),
    ("-e COLOUR=#fff sh -c 'echo #not a comment' # a comment",
     ["-e", "COLOUR=#fff", "sh", "-c", "echo #not a comment"]),
    ("# only a comment", []),
    (r"""sh -c 'it'\''s # quoted' \# escaped""", ["sh", "-c", "it's # quoted", "#", "escaped"]),
])
def test_a_trailing_comment_never_reaches_the_command(line, argv):
    assert magics_mod.split_args(line, "%container") == argv


def test_container_line_with_a_comment_runs_the_subcommand(ip, capsys):
    magics_mod._loaded.last = []
    ip.run_line_magic("container", "last  # the record of the last cell")
    assert "no %%container cell has run yet" in capsys.readouterr().out


def test_subcommand_question_mark_shows_its_help(ip, capsys):
    """`%container stats?` is the subcommand's help, not IPython's "Object not found"."""
    assert magics_mod.subcommand_help(["%container stats?\n", "x = 1 ?\n"]) == \
        ["%container stats --help\n", "x = 1 ?\n"]
    result = ip.run_cell("%container stats?")
    out = capsys.readouterr().out
    assert result.success and "--duration SECONDS" in out and "not found" not in out
    result = ip.run_cell("%container ps?")
    out = capsys.readouterr().out
    assert result.success and "--all" in out
    result = ip.run_cell("%container exec --help")
    assert result.success and "%container exec NAME COMMAND" in capsys.readouterr().out


def test_misspelled_option_gets_did_you_mean(ip):
    with pytest.raises(UsageError, match=r"did you mean --memory\?"):
        ip.run_cell_magic("container", "--memroy 100m", "pass")
    with pytest.raises(UsageError, match=r"did you mean --duration\?"):
        ip.run_line_magic("container", "stats web --duraton 3")


def test_plot_traitlet_takes_the_one_spelling_and_the_old_one(cm):
    for value, mode in (("on", "on"), ("off", "off"), ("auto", "auto"), ("always", "on"),
                        ("never", "off")):
        cm.plot = value
        from nbcontainer.notebook.cell import CellPlot

        assert CellPlot(cm.plot).live.mode == mode


def test_an_interrupt_is_one_line_without_a_traceback(ip):
    interrupted = magics_mod.CellInterrupted()
    assert isinstance(interrupted, KeyboardInterrupt)
    assert type(interrupted).__name__ == "KeyboardInterrupt"  # Jupyter's ename
    assert interrupted._render_traceback_() == ["KeyboardInterrupt"]

    @magics_mod.short_interrupt
    def deep() -> None:
        raise KeyboardInterrupt

    with pytest.raises(magics_mod.CellInterrupted):
        deep()
