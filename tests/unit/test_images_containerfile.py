"""The Containerfile parser: the subset, line numbers in errors, continuations, both forms."""

from __future__ import annotations

import pytest

from nbcontainer.building.containerfile import (
    ContainerfileError,
    Instruction,
    command_argv,
    copy_args,
    expand,
    key_values,
    parse,
)


def test_comments_blank_lines_and_continuations():
    text = ("# syntax comment\n\nfrom busybox\nRUN echo one \\\n  # a comment inside\n"
            "    && echo two\n\nenv A=1\n")
    got = parse(text)
    assert [(i.line, i.keyword, i.args) for i in got] == [
        (3, "FROM", "busybox"), (4, "RUN", "echo one && echo two"), (8, "ENV", "A=1")]


@pytest.mark.parametrize("text, message", [
    ("FROM busybox\n\nADD x /x\n",
     "line 3: unsupported instruction ADD; supported: FROM, RUN, COPY, ENV, WORKDIR, CMD, LABEL"),
    ("RUN true\n", "line 1: the first instruction must be FROM (found RUN)"),
    ("FROM a\nFROM b\n", "line 2: only one FROM is supported"),
    ("FROM busybox\nRUN\n", "line 2: RUN needs an argument"),
    ("# nothing\n", "the Containerfile is empty"),
    ("FROM busybox\nENTRYPOINT [\"sh\"]\n", "line 2: unsupported instruction ENTRYPOINT"),
])
def test_errors_name_the_line(text, message):
    with pytest.raises(ContainerfileError) as info:
        parse(text)
    assert message in str(info.value)


def test_shell_and_exec_forms():
    assert command_argv(Instruction(1, "RUN", "echo hi > /f")) == ["/bin/sh", "-c", "echo hi > /f"]
    assert command_argv(Instruction(1, "CMD", '["echo", "hi"]')) == ["echo", "hi"]
    # a malformed array is a shell command, as in Docker
    assert command_argv(Instruction(1, "RUN", "[not json")) == ["/bin/sh", "-c", "[not json"]


def test_env_forms_and_expansion():
    env = {"HOME": "/root"}
    assert key_values(Instruction(1, "ENV", 'A=1 B="two words" C=$HOME/x'), env) == [
        ("A", "1"), ("B", "two words"), ("C", "/root/x")]
    assert key_values(Instruction(1, "ENV", "LEGACY value with spaces"), env) == [
        ("LEGACY", "value with spaces")]
    with pytest.raises(ContainerfileError, match="line 1: ENV"):
        key_values(Instruction(1, "ENV", "A=1 junk"), env)
    assert expand(r"${HOME}/a \$HOME $NOPE.", env) == "/root/a $HOME ."


def test_copy_arguments():
    assert copy_args(Instruction(1, "COPY", "a b /dest/"), {}) == (["a", "b"], "/dest/")
    assert copy_args(Instruction(1, "COPY", '["a b", "/d"]'), {}) == (["a b"], "/d")
    with pytest.raises(ContainerfileError, match="--chown"):
        copy_args(Instruction(1, "COPY", "--chown=1:1 a /d"), {})
    with pytest.raises(ContainerfileError, match="at least one source"):
        copy_args(Instruction(1, "COPY", "a"), {})
