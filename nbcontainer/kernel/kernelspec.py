"""Install the container kernel's kernelspec, in the shape of ipykernel's ``kernelspec.py``.

The run options are stored in ``argv`` in their command-line form (``--memory=512m``), so
``kernel.json`` reads like the command that installed it and the kernel re-validates them with
the same parser when it starts. The spec they make is also stored in the metadata, for tools.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from nbcontainer.errors import ContainerNotFoundError, UsageError
from nbcontainer.spec import ContainerSpec, spec_to_dict

KERNEL_NAME = "nbcontainer"
DISPLAY_NAME = "Python 3 (container)"
RESOURCES = Path(__file__).resolve().parent


def display_name_for(kernel_name: str, run_options: list[str]) -> str:
    """A display name that tells profiles apart: the kernelspec's name (unless the default)
    and its options, e.g. ``Python 3 (container c512: memory 512m, cpus 1)``.

    Jupyter's launcher shows only display names: profiles installed without
    ``--display-name`` must not all read "Python 3 (container)".
    """
    parts = []
    for option in run_options:
        flag, _, value = option.lstrip("-").partition("=")
        parts.append(f"{flag} {value}" if value else flag)
    name = "" if kernel_name == KERNEL_NAME else f" {kernel_name}"
    detail = f": {', '.join(parts)}" if parts else ""
    return f"Python 3 (container{name}{detail})"


def make_cmd(run_options: list[str] | None = None, executable: str | None = None) -> list[str]:
    """The kernel's ``argv``: this interpreter running :mod:`nbcontainer.kernel`."""
    return [executable or sys.executable, "-m", "nbcontainer.kernel", "-f", "{connection_file}",
            *(run_options or [])]


def get_kernel_dict(run_options: list[str] | None = None, display_name: str = DISPLAY_NAME,
                    spec: ContainerSpec | None = None) -> dict[str, Any]:
    """The content of ``kernel.json``.

    ``interrupt_mode: message``: the client sends ``interrupt_request`` and the kernel turns it
    into SIGINT inside the container; a signal to this process would not reach it.
    """
    meta: dict[str, Any] = {"debugger": False}
    if spec is not None:
        meta["nbcontainer"] = {"run_options": list(run_options or []),
                               "spec": spec_to_dict(spec)}
    return {"argv": make_cmd(run_options), "display_name": display_name, "language": "python",
            "interrupt_mode": "message", "metadata": meta}


def _logo_dir() -> Path | None:
    try:
        import ipykernel
    except ImportError:
        return None
    path = Path(ipykernel.__file__).parent / "resources"
    return path if path.is_dir() else None


def write_kernel_spec(path: str | os.PathLike[str] | None = None,
                      run_options: list[str] | None = None, display_name: str = DISPLAY_NAME,
                      spec: ContainerSpec | None = None) -> str:
    """Write a kernelspec directory (kernel.json and the Python logos); return its path."""
    target = Path(path) if path is not None else Path(tempfile.mkdtemp(suffix="_kernels"))
    target.mkdir(parents=True, exist_ok=True)
    logos = _logo_dir()
    if logos is not None:
        for logo in logos.iterdir():
            if logo.name.startswith("logo-"):
                shutil.copy(logo, target / logo.name)
    with open(target / "kernel.json", "w") as f:
        json.dump(get_kernel_dict(run_options, display_name, spec), f, indent=1)
    return str(target)


def install(kernel_name: str = KERNEL_NAME, *, user: bool = False, prefix: str | None = None,
            display_name: str = DISPLAY_NAME, run_options: list[str] | None = None,
            spec: ContainerSpec | None = None) -> str:
    """Install the kernelspec (replacing one of the same name); return where it went.

    Permission errors become a UsageError that suggests ``--user``.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    path = write_kernel_spec(run_options=run_options, display_name=display_name, spec=spec)
    try:
        return str(KernelSpecManager().install_kernel_spec(
            path, kernel_name, user=user, prefix=prefix))
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(
                f"kernel install: no permission to write {err.filename or 'the kernel dir'}; "
                "try --user (or --prefix DIR)"
            ) from err
        raise UsageError(f"kernel install: {err.strerror}: {err.filename}") from err
    finally:
        shutil.rmtree(path, ignore_errors=True)


def is_ours(kernel_json: dict[str, Any]) -> bool:
    """True for a kernelspec that runs :mod:`nbcontainer.kernel`."""
    argv = kernel_json.get("argv") or []
    return "nbcontainer.kernel" in argv


def installed() -> dict[str, tuple[str, dict[str, Any]]]:
    """Installed container kernelspecs: name -> (directory, kernel.json)."""
    from jupyter_client.kernelspec import KernelSpecManager

    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, directory in sorted(KernelSpecManager().find_kernel_specs().items()):
        try:
            with open(os.path.join(directory, "kernel.json")) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if is_ours(data):
            found[name] = (directory, data)
    return found


def remove(kernel_name: str) -> str:
    """Remove an installed container kernelspec; return the directory removed."""
    specs = installed()
    if kernel_name not in specs:
        names = ", ".join(specs) or "none installed"
        raise ContainerNotFoundError(
            f"kernel remove: no container kernel named {kernel_name!r} ({names})")
    directory = specs[kernel_name][0]
    try:
        shutil.rmtree(directory)
    except OSError as err:
        raise UsageError(f"kernel remove: cannot remove {directory}: {err.strerror}; "
                         "try as the user who installed it") from err
    return directory
