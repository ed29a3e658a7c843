"""The container kernel's pure parts, no root: kernelspec, options round trip, wire, messages."""

from __future__ import annotations

import argparse
import errno
import json
import os
from pathlib import Path

import pytest

from nbcontainer import cli
from nbcontainer.errors import UsageError
from nbcontainer.kernel import kernelspec
from nbcontainer.kernel.__main__ import main as kernel_main
from nbcontainer.kernel.cmdline import add_kernel_options, run_options_argv, spec_from_kernel_args
from nbcontainer.kernel.proxy import _MEMPLOT_RE, death_message
from nbcontainer.kernel.wire import DELIM, Frames
from nbcontainer.runtime.result import Result


@pytest.fixture
def jupyter_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    return tmp_path


def _kernel_json(prefix: Path, name: str = "nbcontainer") -> dict:
    return json.loads((prefix / "share/jupyter/kernels" / name / "kernel.json").read_text())


def test_kernel_dict_shape() -> None:
    d = kernelspec.get_kernel_dict(["--memory=512m"])
    assert d["argv"][1:5] == ["-m", "nbcontainer.kernel", "-f", "{connection_file}"]
    assert d["argv"][-1] == "--memory=512m"
    assert d["display_name"] == "Python 3 (container)"
    assert d["language"] == "python" and d["interrupt_mode"] == "message"


def test_install_profiles_with_the_cli(jupyter_prefix: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), "--name", "c512",
                     "--display-name", "Python 3 (container, 512 MiB)", "-m", "512m",
                     "--cpus", "1", "-e", "A=1", "-e", "B=2", "--memory-swap", "-1"]) == 0
    assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), "--name", "c2g",
                     "--memory", "2g", "--plot", "off"]) == 0
    data = _kernel_json(jupyter_prefix, "c512")
    assert data["display_name"] == "Python 3 (container, 512 MiB)"
    opts = data["argv"][5:]
    assert opts == ["--memory=512m", "--memory-swap=-1", "--cpus=1", "--env=A=1", "--env=B=2"]
    assert data["metadata"]["nbcontainer"]["spec"]["limits"]["memory"] == 512 << 20
    assert _kernel_json(jupyter_prefix, "c2g")["argv"][5:] == ["--memory=2g", "--plot=off"]
    capsys.readouterr()
    assert cli.main(["kernel", "list"]) == 0
    out = capsys.readouterr().out
    assert "c512" in out and "memory 512 MiB" in out and "c2g" in out
    assert cli.main(["kernel", "remove", "c2g"]) == 0
    assert not (jupyter_prefix / "share/jupyter/kernels/c2g").exists()
    assert cli.main(["kernel", "remove", "c2g"]) == 125


def test_stored_options_parse_back_to_the_same_spec(jupyter_prefix: Path) -> None:
    argv = ["--memory", "300m", "--pids-limit", "50", "--ns", "uts,pid,mount,net",
            "-v", "/tmp:/data:ro", "--hostname", "lab", "--image", "busybox"]
    assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), *argv]) == 0
    stored = _kernel_json(jupyter_prefix)["argv"][5:]
    parser = argparse.ArgumentParser(conflict_handler="resolve")
    add_kernel_options(parser)
    direct = spec_from_kernel_args(parser.parse_args(argv))
    again = spec_from_kernel_args(parser.parse_args(stored))
    assert direct == again
    assert again.init and again.limits.memory == 300 << 20 and again.image == "busybox"
    assert run_options_argv(parser.parse_args(stored)) == stored


def test_bad_option_writes_nothing(jupyter_prefix: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), "-m", "2k"]) == 125
    assert "minimum memory limit" in capsys.readouterr().err
    assert not (jupyter_prefix / "share").exists()


def test_permission_error_suggests_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    def refuse(*_a: object, **_k: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", "/usr/local/share/jupyter")

    monkeypatch.setattr(KernelSpecManager, "install_kernel_spec", refuse)
    with pytest.raises(UsageError, match="try --user"):
        kernelspec.install()


def test_kernel_refuses_a_container_name(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    conn = tmp_path / "c.json"
    conn.write_text("{}")
    assert kernel_main(["-f", str(conn), "--name", "web"]) == 125
    assert "each kernel gets its own" in capsys.readouterr().err


def test_frames_parse_routing_and_headers() -> None:
    frames = [b"client", DELIM, b"sig", b'{"msg_id": "a", "msg_type": "execute_request"}',
              b'{"msg_id": "p"}', b"{}", b'{"code": "%memplot on"}']
    msg = Frames.parse(frames)
    assert msg.idents == [b"client"]
    assert msg.header()["msg_type"] == "execute_request"
    assert msg.parent()["msg_id"] == "p"
    assert msg.content()["code"] == "%memplot on"
    with pytest.raises(ValueError, match="<IDS\\|MSG>"):
        Frames.parse([b"no delimiter"])


def test_memplot_line_is_found_anywhere_in_the_cell() -> None:
    assert _MEMPLOT_RE.findall(b"x = 1\n%memplot off\ny = 2") == [b"off"]
    assert not _MEMPLOT_RE.findall(b"print('%memplot on')")


def test_death_messages_say_why() -> None:
    oom = Result(exit_code=137, signal=9, oom_killed=True, memory_limit=200 << 20,
                 memory_peak=200 << 20, oom_kills=1)
    ename, evalue = death_message(oom, True, "")
    assert ename == "OOMKilled"
    assert "OOM-killed" in evalue and "200 MiB" in evalue and "peak usage" in evalue
    ename, evalue = death_message(Result(exit_code=1), False, "No module named ipykernel")
    assert ename == "ContainerDied" and "before it answered" in evalue
    assert "No module named ipykernel" in evalue
    assert os.path.basename(kernelspec.make_cmd()[0]).startswith("python")


def test_profiles_without_display_name_get_distinct_names(jupyter_prefix: Path) -> None:
    for argv in (["--name", "c512", "-m", "512m"], ["--name", "c2g", "-m", "2g", "--cpus", "1"],
                 ["--name", "plain"], []):
        assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), *argv]) == 0
    names = {n: _kernel_json(jupyter_prefix, n)["display_name"]
             for n in ("c512", "c2g", "plain", "nbcontainer")}
    assert names == {"c512": "Python 3 (container c512: memory 512m)",
                     "c2g": "Python 3 (container c2g: memory 2g, cpus 1)",
                     "plain": "Python 3 (container plain)",
                     "nbcontainer": "Python 3 (container)"}


def test_user_alone_is_the_install_location_and_with_a_value_the_containers_user(
        jupyter_prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC section 5 keeps jupyter's `kernel install --user`; section 2 wants every alias of
    `-u/--user` in every front end: `--user` alone is the first, `--user UID` the second."""
    parser = cli.build_parser()
    alone = parser.parse_args(["kernel", "install", "--user", "--name", "x"])
    assert alone.user_install is True and alone.user is None
    valued = parser.parse_args(["kernel", "install", "--user", "1000:1000", "--prefix", "/p"])
    assert valued.user_install is False and valued.user == "1000:1000"
    explicit = parser.parse_args(["kernel", "install", "--user-install", "-u", "7"])
    assert explicit.user_install is True and explicit.user == "7"
    assert cli.main(["kernel", "install", "--user", "--prefix", str(jupyter_prefix)]) == 125
    assert cli.main(["kernel", "install", "--prefix", str(jupyter_prefix), "--name", "u",
                     "--user", "1000"]) == 0
    assert _kernel_json(jupyter_prefix, "u")["argv"][5:] == ["--user=1000"]


def test_notebook_directory_is_bound_and_is_the_workdir(tmp_path: Path) -> None:
    from nbcontainer.kernel.cmdline import with_notebook_dir
    from nbcontainer.spec import Volume, make_spec

    spec, note = with_notebook_dir(make_spec([]), str(tmp_path))
    assert note is None
    assert spec.volumes == (Volume(str(tmp_path), str(tmp_path)),)
    assert spec.workdir == str(tmp_path)
    mine = make_spec([], workdir="/work", volumes=[f"{tmp_path}:{tmp_path}:ro"])
    spec, _ = with_notebook_dir(mine, str(tmp_path))
    assert spec.volumes == mine.volumes and spec.workdir == "/work"  # the user's choice wins
    spec, note = with_notebook_dir(make_spec([]), "/")
    assert spec.volumes == () and note is not None and "not bound" in note
    parser = argparse.ArgumentParser(conflict_handler="resolve")
    add_kernel_options(parser)
    off = parser.parse_args(["--no-notebook-dir"])
    assert off.notebook_dir is False and run_options_argv(off) == ["--no-notebook-dir"]
