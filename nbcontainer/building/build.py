"""``build``: make an image from a Containerfile (FROM, RUN, COPY, ENV, WORKDIR, CMD, LABEL).

The recipe, step by step, as ``docker build`` (the classic builder) prints it:

- FROM picks the base record (a stored image, ``busybox``, ``scratch`` or an image id).
- Every later step turns the current image into a new one: RUN runs its command in a container
  of the runtime on the current image and keeps the container's upper directory as a new layer;
  COPY lays out the context's files in a staging tree that becomes a layer; ENV, WORKDIR, CMD and
  LABEL change only the config (an ``empty_layer`` history entry, as Docker records them).
- Each intermediate image is kept untagged under its id (``states/`` of the store), because
  the next RUN's container is started from ``sha256:<id>`` like any image: the runtime needs no
  special build mode. The build cache maps (parent image id, instruction text, and for COPY the
  sha256 of the sources) to the image that step made, so an unchanged step is not re-run and
  keeps its id, which keeps the following steps' keys, and their cache hits, stable.

The store's shared lock is held for the whole build: ``rmi``/``gc`` cannot delete a layer a
step made before the final image names it. A failing step raises :class:`BuildError`; its
container, cgroup and staging directory are gone by then and no image is tagged.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import hashlib
import os
import posixpath
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from nbcontainer._records import replace
from nbcontainer.building.containerfile import (
    ContainerfileError,
    Instruction,
    command_argv,
    copy_args,
    exec_form,
    expand,
    key_values,
    parse,
)
from nbcontainer.errors import (
    ContainerError,
    ImageError,
    ImageNotFoundError,
    RegistryError,
    UsageError,
)
from nbcontainer.images.builtin import base_record
from nbcontainer.images.extract import inherit_implied_dirs
from nbcontainer.images.snapshot import image_id, layer_dirs, publish_tree
from nbcontainer.images.store import (
    BUILTIN_NAMES,
    HistoryEntry,
    ImageRecord,
    ImageStore,
    LayerMeta,
    now_iso,
    parse_reference,
)
from nbcontainer.progress import Progress, or_silent
from nbcontainer.registry.policy import ensure_image

Output = Callable[[str], object]
DEFAULT_FILES = ("Containerfile", "Dockerfile")


class BuildError(ImageError):
    """A build step failed; the message names the step and why."""


def _print(text: str) -> None:
    print(text, flush=True)


def build(context_dir: str | os.PathLike[str], tag: str,
          containerfile: str | os.PathLike[str] | None = None,
          root: str | os.PathLike[str] | None = None, out: Output = _print,
          progress: Progress | None = None) -> ImageRecord:
    """Build image ``tag`` from a Containerfile with ``context_dir`` as the build context.

    Parameters
    ----------
    context_dir
        The directory COPY sources are relative to; nothing outside it can be copied.
    tag
        ``name[:tag]`` for the result.
    containerfile
        Path of the Containerfile; default ``Containerfile`` (else ``Dockerfile``) in the context.
    root
        Store root; default ``$NBCONTAINER_ROOT`` or ``/var/lib/nbcontainer``.
    out
        Called with each line of progress and of RUN output, as it happens (default: print).
    progress
        Where the build's progress is shown: one task, its steps done of all of them.

    Returns
    -------
    ImageRecord
        The tagged image now in the store.
    """
    context = Path(context_dir)
    if not context.is_dir():
        raise UsageError(f"build: no such directory: {context}; give the build context, a "
                         "directory holding the Containerfile and the files it copies"
                         if not context.exists() else
                         f"build: {context} is not a directory; give the build context, a "
                         "directory (a Containerfile elsewhere goes with -f FILE)")
    if containerfile is None:
        found = [context / n for n in DEFAULT_FILES if (context / n).is_file()]
        if not found:
            raise UsageError(f"no Containerfile or Dockerfile in {context}; give one with -f")
        containerfile = found[0]
    try:
        text = Path(containerfile).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the Containerfile {containerfile}: {err}") from err
    return build_from_text(text, tag, context, root=root, out=out, source=str(containerfile),
                           progress=progress)


def build_from_text(text: str, tag: str, context_dir: str | os.PathLike[str],
                    root: str | os.PathLike[str] | None = None, out: Output = _print,
                    source: str = "", progress: Progress | None = None) -> ImageRecord:
    """Build image ``tag`` from Containerfile ``text`` (what ``%%containerfile`` calls).

    Same as :func:`build`, with the file's content given directly. Every syntax error is reported
    (``line N: ...``) before anything is created.
    """
    from nbcontainer.runtime.container import require_root

    repo, version = parse_reference(tag)
    if repo in BUILTIN_NAMES:
        raise UsageError(f"{repo} is a built-in image name; build under another name")
    context = Path(context_dir)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    instructions = parse(text)
    require_root()
    store = ImageStore(root)
    task = or_silent(progress).task(f"build {repo}:{version}", total=len(instructions),
                                    unit="steps")
    with store.lock():
        builder = _Builder(store, context.resolve(), out)
        for number, ins in enumerate(instructions, 1):
            out(f"Step {number}/{len(instructions)} : {ins.text}")
            task.update(number - 1, note=ins.text if len(ins.text) <= 60
                        else ins.text[:57] + "...")
            try:
                builder.step(ins, f"step {number}/{len(instructions)} "
                                  f"(line {ins.line}: {ins.text})")
            except BaseException:
                task.fail(f"step {number} failed")
                raise
        final = replace(builder.current, name=repo, tag=version,
                                    source=f"built from {source or 'text'} in {context}")
        store.put_image(final)
    task.finish(f"built {final.id.removeprefix('sha256:')[:12]}")
    out(f"Successfully built {final.id.removeprefix('sha256:')[:12]}")
    out(f"Successfully tagged {final.ref}")
    return final


class _Builder:
    """The state of one build: the store, the context and the image so far."""

    def __init__(self, store: ImageStore, context: Path, out: Output) -> None:
        self.store = store
        self.context = context
        self.out = out
        self.current = ImageRecord(name="<none>", tag="<none>", id="", layers=[])

    # -- driving -----------------------------------------------------------------------------
    def step(self, ins: Instruction, where: str) -> None:
        """Run one instruction: from the cache if it has the result, else for real."""
        if ins.keyword == "FROM":
            self._from(ins)
        else:
            extra = self._copy_digest(ins) if ins.keyword == "COPY" else ""
            key = hashlib.sha256(
                f"{self.current.id}\n{ins.text}\n{extra}".encode()).hexdigest()
            cached = self.store.cache_get(key)
            if cached is not None:
                self.out(" ---> Using cache")
                self.current = cached
            else:
                self.current = self._execute(ins, where)
                self.store.put_state(self.current)
                self.store.cache_put(key, self.current.id)
        self.out(f" ---> {self.current.id.removeprefix('sha256:')[:12]}")

    def _execute(self, ins: Instruction, where: str) -> ImageRecord:
        env = self._env()
        if ins.keyword == "RUN":
            argv = command_argv(ins)
            shown = " ".join(argv) if exec_form(ins.args) is None else ins.args
            return self._layer_step(f"RUN {shown}", self._run(argv, where))
        if ins.keyword == "COPY":
            return self._layer_step(ins.text, self._copy(ins, env))
        if ins.keyword == "ENV":
            pairs = dict(key_values(ins, env))
            kept = [e for e in self.current.env if e.split("=", 1)[0] not in pairs]
            return self._config_step(ins, env=kept + [f"{k}={v}" for k, v in pairs.items()])
        if ins.keyword == "WORKDIR":
            path = posixpath.normpath(posixpath.join(self.current.workdir or "/",
                                                     expand(ins.args, env)))
            return self._config_step(ins, workdir=path)
        if ins.keyword == "CMD":
            return self._config_step(ins, cmd=command_argv(ins))
        if ins.keyword == "LABEL":
            labels = {**self.current.labels, **dict(key_values(ins, env))}
            return self._config_step(ins, labels=labels)
        raise ins.fail("not supported")  # parse() lets no other keyword through

    def _env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.current.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    # -- new images --------------------------------------------------------------------------
    def _derive(self, entry: HistoryEntry, layer: LayerMeta | None,
                config: dict[str, Any]) -> ImageRecord:
        """The current image plus one history entry (and layer), with a fresh id."""
        parent = self.current
        record = replace(
            parent, name="<none>", tag="<none>", id="", created=entry.created,
            layers=parent.layers + ([layer.diff_id] if layer else []),
            history=[*parent.history, entry], **config)
        record.id = image_id(record)
        return record

    def _config_step(self, ins: Instruction, **config: Any) -> ImageRecord:
        entry = HistoryEntry(created=now_iso(), created_by=ins.text, empty_layer=True)
        return self._derive(entry, None, config)

    def _layer_step(self, created_by: str, layer: LayerMeta | None) -> ImageRecord:
        entry = HistoryEntry(created=now_iso(), created_by=created_by, empty_layer=layer is None,
                             size=layer.size if layer else 0)
        if layer is None:
            self.out(" ---> no file changes (empty layer)")
        else:
            self.out(f" ---> new layer {layer.diff_id.removeprefix('sha256:')[:12]} "
                     f"({layer.size} bytes of file content)")
        return self._derive(entry, layer, {})

    # -- FROM ----------------------------------------------------------------------------------
    def _from(self, ins: Instruction) -> None:
        words = ins.args.split()
        if len(words) != 1 or words[0].startswith("--"):
            raise ins.fail("use FROM IMAGE (no --platform, no AS: multi-stage builds are not "
                           "supported)")
        try:
            # A registry reference missing from the store is pulled, as Docker's builder does.
            ensure_image(words[0], "missing", root=self.store.root)
            base = base_record(words[0], self.store, f"line {ins.line}: FROM")
        except (ImageError, ImageNotFoundError, RegistryError) as err:
            raise ContainerfileError(str(err) if str(err).startswith("line ")
                                     else f"line {ins.line}: FROM: {err}") from err
        record = replace(base, name="<none>", tag="<none>")
        if not record.id:
            record.id = image_id(record)
        self.store.put_state(record)
        self.current = record

    # -- RUN -----------------------------------------------------------------------------------
    def _run(self, argv: list[str], where: str) -> LayerMeta | None:
        """Run ``argv`` in a container of the current image; its upper dir becomes a layer.

        The container is not kept (``keep=False``): its upper directory is read after ``wait``
        (every process of it is dead by then, so the tree is still) and before ``cleanup``
        removes it. A crash of this process then leaves a container that ``gc`` removes.
        """
        from nbcontainer import Container, make_spec

        spec = make_spec(argv, image=self.current.id)
        rfd, wfd = os.pipe()
        announced = threading.Event()  # its output comes after the "Running in" line
        reader = threading.Thread(target=_forward, args=(rfd, self.out, announced),
                                  name="build-output", daemon=True)
        reader.start()
        container = Container(spec, root=self.store.root, stdin=subprocess.DEVNULL,
                              stdout=wfd, stderr=wfd, keep=False)
        try:
            try:
                container.start()
            except ContainerError as err:
                raise BuildError(f"{where} failed: the container did not start: {err}") from err
            finally:
                os.close(wfd)  # the container holds its own copies; EOF comes when it ends
            self.out(f" ---> Running in {container.id}")
            announced.set()
            result = container.wait()
            reader.join(10)
            if not result.ok:
                raise BuildError(f"{where} failed: the command {result.describe()}; no image "
                                 "was tagged")
            return publish_tree(self.store, container.upper_dir, f"RUN {' '.join(argv)}")
        finally:
            announced.set()
            container.cleanup()
            reader.join(10)

    # -- COPY ----------------------------------------------------------------------------------
    def _sources(self, ins: Instruction) -> tuple[list[Path], str]:
        """COPY sources as real paths inside the context (globs expanded), and the dest."""
        sources, dest = copy_args(ins, self._env())
        out: list[Path] = []
        for src in sources:
            if os.path.isabs(src) or ".." in PurePosixPath(src).parts:
                raise ins.fail(f"source {src!r} is outside the build context; sources are "
                               f"paths relative to {self.context} without '..'")
            names = (sorted(glob.glob(src, root_dir=self.context))
                     if glob.has_magic(src) else [src])
            if not names:
                raise ins.fail(f"no file matches {src!r} in the build context {self.context}")
            for name in names:
                real = Path(os.path.realpath(self.context / name))
                if real != self.context and self.context not in real.parents:
                    raise ins.fail(f"source {name!r} is a symlink pointing outside the build "
                                   f"context ({real}); copy the file into {self.context}")
                if not real.exists():
                    raise ins.fail(f"{name!r} not found in the build context {self.context}")
                out.append(real)
        return out, dest

    def _copy_digest(self, ins: Instruction) -> str:
        """sha256 of the sources' names, types, modes and contents: the COPY cache key part."""
        sources, _ = self._sources(ins)
        h = hashlib.sha256()
        for src in sources:
            for rel, st, path in _walk(src, ins):
                h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                         .encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(path).encode())
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023
                            h.update(chunk)
                h.update(b"\n")
        return h.hexdigest()

    def _copy(self, ins: Instruction, env: dict[str, str]) -> LayerMeta | None:
        """Lay the sources out at their destinations in a staging tree and store it."""
        sources, dest = self._sources(ins)
        dest_abs = posixpath.normpath(posixpath.join(self.current.workdir or "/", dest))
        into_dir = dest.endswith("/") or len(sources) > 1
        if len(sources) > 1 and not dest.endswith("/"):
            raise ins.fail(f"with several sources the destination must end in '/' ({dest!r})")
        with self.store.staging("copy") as stage:
            tree = stage / "tree"
            tree.mkdir(mode=0o755)
            implied: set[str] = set()
            for src in sources:
                if src.is_dir():
                    target = dest_abs
                    implied.add(target.strip("/"))
                else:
                    target = posixpath.join(dest_abs, src.name) if into_dir else dest_abs
                rel = target.strip("/")
                if not rel and not src.is_dir():
                    raise ins.fail("cannot copy a file onto /; give a file name or a dir/")
                parent = PurePosixPath(rel).parent
                while str(parent) not in (".", ""):
                    implied.add(str(parent))
                    parent = parent.parent
                dst = tree / rel if rel else tree
                (dst if src.is_dir() else dst.parent).mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst, follow_symlinks=True)
            _chown_tree(tree)
            implied.discard("")
            inherit_implied_dirs(tree, sorted(implied), layer_dirs(self.store, self.current))
            return publish_tree(self.store, tree, ins.text)


def _walk(src: Path, ins: Instruction) -> list[tuple[str, os.stat_result, str]]:
    """Every entry under ``src`` (sorted, links not followed); special files are refused."""
    entries: list[tuple[str, os.stat_result, str]] = []
    top = os.stat(src)
    entries.append((src.name, top, str(src)))
    if not stat.S_ISDIR(top.st_mode):
        if not stat.S_ISREG(top.st_mode):
            raise ins.fail(f"{src} is not a regular file or directory")
        return entries
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                    or stat.S_ISLNK(st.st_mode)):
                raise ins.fail(f"{path} is a device, socket or FIFO; COPY takes regular files, "
                               "directories and symlinks")
            entries.append((os.path.relpath(path, src.parent), st, path))
    return entries


def _chown_tree(tree: Path) -> None:
    """COPY gives files to root (Docker's default without ``--chown``)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 0, 0)


def _forward(fd: int, out: Output, go: threading.Event) -> None:
    """Pass a RUN's output on line by line as it comes (UTF-8, undecodable bytes replaced)."""
    go.wait()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    with contextlib.suppress(OSError):
        while True:
            data = os.read(fd, 1 << 16)
            pending += decoder.decode(data, final=not data)
            *lines, pending = pending.split("\n")
            for line in lines:
                out(line)
            if not data:
                break
    if pending:
        out(pending)
    os.close(fd)
