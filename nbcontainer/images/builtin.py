"""The built-in images: ``host`` (the host's ``/``), ``busybox`` (host busybox-static), ``scratch``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nbcontainer.errors import FeatureMissingError, ImageNotFoundError
from nbcontainer.store import ensure_dir, layers_dir, store_root, tmp_dir

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


@dataclass(frozen=True)
class ImageConfig:
    """The runtime config of an image (OCI image config, the part a container uses)."""

    env: tuple[tuple[str, str], ...] = (("PATH", DEFAULT_PATH),)
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    workdir: str = "/"


@dataclass(frozen=True)
class ResolvedImage:
    """An image ready to mount: layer directories bottom first, and its config."""

    name: str
    layers: tuple[str, ...] = ()
    config: ImageConfig = field(default_factory=ImageConfig)


def split_name(name: str) -> tuple[str, str]:
    """Split ``name[:tag]`` into (name, tag), the tag defaulting to ``latest``."""
    base, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return base, tag


def resolve(name: str, root: str | os.PathLike[str] | None = None) -> ResolvedImage:
    """Resolve an image name to its layers and config; raise ImageNotFoundError if unknown."""
    base, tag = split_name(name)
    if base == "host" and tag == "latest":
        return ResolvedImage("host:latest", ("/",), ImageConfig(cmd=("/bin/sh",)))
    if base == "scratch" and tag == "latest":
        return ResolvedImage("scratch:latest", (), ImageConfig(env=(("PATH", DEFAULT_PATH),)))
    if base == "busybox" and tag == "latest":
        layer = busybox_layer(store_root(root))
        return ResolvedImage("busybox:latest", (str(layer),), ImageConfig(cmd=("sh",)))
    raise ImageNotFoundError(
        f"image {name!r} not found; built-in images are host, busybox and scratch "
        "(see `nbcontainer images`)"
    )


def find_busybox() -> str:
    """Path of the host's static busybox binary, or a FeatureMissingError saying how to get it."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FeatureMissingError(
        "the busybox image needs the host's static busybox binary, which is missing; "
        "install it with `apt-get install busybox-static`"
    )


def busybox_layer(root: Path) -> Path:
    """Return the busybox layer directory, building it once from the host binary.

    The directory name is derived from the binary's sha256, so an upgraded busybox gets a new
    layer and a half-built one is never used (it is built in tmp/ and renamed into place).
    """
    binary = find_busybox()
    with open(binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    target = layers_dir(root) / f"busybox-{digest[:16]}"
    if target.is_dir():
        return target
    ensure_dir(layers_dir(root))
    staging = Path(ensure_dir(tmp_dir(root))) / f"busybox-{digest[:16]}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _populate_busybox(staging, binary)
        os.rename(staging, target)
    except FileExistsError:
        pass
    except OSError as err:
        if not target.is_dir():
            raise
        del err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _populate_busybox(root: Path, binary: str) -> None:
    """Lay out a minimal busybox root: the binary, one symlink per applet, /etc basics."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "var", "home", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(binary, root / "bin" / "busybox")
    listing = subprocess.run([binary, "--list-full"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("busybox\n")
