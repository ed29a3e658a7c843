"""A container's on-disk record: ``<store>/containers/<id>/state.json``, written atomically.

The record is what ``ps``, ``exec``, ``stop``, ``logs`` and ``gc`` read when the process that
created the container is another one, or is gone. Liveness is a (pid, start time) pair, so a
recycled pid is never mistaken for the supervisor or the container.

Users: on a JupyterHub every single-user server (and its kernels) has ``$JUPYTERHUB_USER``; a
record carries the user that made it (:func:`current_user`), and ``ps``, ``rm``, ``stop``,
``exec``, ``logs`` and names see only the records of the process's own user, so two students'
containers called ``web`` coexist and neither lists nor removes the other's. Images stay shared,
and ``gc`` (which only ever touches what a dead supervisor left) looks at every record.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from nbcontainer._records import field, fields, record
from nbcontainer.errors import ContainerNotFoundError, UsageError
from nbcontainer.paths import (
    containers_dir,
    directory_lock,
    replace_runtime_record,
    store_root,
)

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


def is_alive(pid: int | None, start: int | None) -> bool:
    """True if ``pid`` runs and is the same process that had ``start`` (not a recycled pid)."""
    if not pid:
        return False
    now = process_start_time(pid)
    if now is None:
        return False
    if start is not None and now != start:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[0] != b"Z"
    except OSError:
        return False


@record
class ContainerState:
    """The persistent facts of one container."""

    id: str
    name: str | None
    image: str
    command: list[str]
    created: float
    status: str = "created"  # created | running | paused | exited
    auto_remove: bool = True
    pid: int | None = None
    pid_start: int | None = None
    supervisor_pid: int | None = None
    supervisor_start: int | None = None
    cgroup: str | None = None
    cgroup_parent: str | None = None
    cgroup_paths: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    exec_config: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    exit_reason: str | None = None
    started: float | None = None
    finished: float | None = None
    owner: str | None = None  # e.g. "kernel:<pid>" for containers a notebook kernel owns
    #: On a network: its lease and veth (nbcontainer.net.networks.attach), released on exit.
    network: dict[str, Any] | None = None
    #: With a user namespace: its id range (nbcontainer.runtime.userns.IdMap.record), whose
    #: lease, if ``leased``, is released on exit.
    userns: dict[str, Any] | None = None
    #: The user whose container it is (:func:`current_user` of its creator); None: nobody's.
    user: str | None = None

    @property
    def short(self) -> str:
        """The name, or the id when unnamed."""
        return self.name or self.id

    def is_running(self) -> bool:
        """True if its first process is alive."""
        return self.status in ("running", "paused") and is_alive(self.pid, self.pid_start)

    def open_cgroup(self) -> Any:
        """Its cgroup, from the directories saved at creation (CgroupError if it is gone).

        On cgroup v1 the memory parent is the creating supervisor's own memory cgroup, so
        another process (``exec``, ``gc``) must not look it up by name from its own position.
        """
        from nbcontainer import cgroups
        from nbcontainer.errors import CgroupError

        if not self.cgroup:
            raise CgroupError(f"container {self.short} has no cgroup")
        if self.cgroup_paths:
            return cgroups.cgroup_from_paths(self.cgroup, self.cgroup_paths)
        return cgroups.open_cgroup(self.cgroup, parent=self.cgroup_parent)

    def supervisor_alive(self) -> bool:
        """True if the process responsible for it is alive."""
        return is_alive(self.supervisor_pid, self.supervisor_start)


def current_user() -> str | None:
    """The user whose containers this process sees and makes.

    ``$NBCONTAINER_USER`` when set (empty: none, the view of a process outside any hub), else
    ``$JUPYTERHUB_USER``, which JupyterHub gives every single-user server and so every kernel
    and ``!nbcontainer`` command started from it. None outside a hub: the containers nobody's
    user made, as before there were users.
    """
    if "NBCONTAINER_USER" in os.environ:
        return os.environ["NBCONTAINER_USER"] or None
    return os.environ.get("JUPYTERHUB_USER") or None


def new_id() -> str:
    """A fresh 12-hex-digit container id (Docker's short form)."""
    return os.urandom(6).hex()  # secrets.token_hex(6), without importing random


def container_path(root: Path, cid: str) -> Path:
    """Directory of container ``cid``."""
    return containers_dir(root) / cid


def save(root: Path, state: ContainerState) -> None:
    """Write the record atomically (write a temporary file, then rename): a container that
    removes itself when it ends swaps the names instead (:func:`replace_runtime_record`)."""
    path = container_path(root, state.id) / "state.json"
    # The fields are plain JSON values: vars() is a shallow view, an asdict would
    # deep-copy the record on every save (on the container start path).
    text = json.dumps(vars(state))
    if state.auto_remove:
        replace_runtime_record(path, text)
        return
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(root: Path, cid: str) -> ContainerState:
    """Read the record of container ``cid``."""
    path = container_path(root, cid) / "state.json"
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ContainerNotFoundError(f"no such container: {cid}") from err
    known = {f.name for f in fields(ContainerState)}
    return ContainerState(**{k: v for k, v in data.items() if k in known})


def all_states(root: Path | None = None, every_user: bool = False) -> list[ContainerState]:
    """The container records of this process's user (:func:`current_user`), oldest first;
    ``every_user``: every record in the store."""
    root = store_root(root)
    user = current_user()
    base = containers_dir(root)
    if not base.is_dir():
        return []
    states = []
    for entry in os.listdir(base):
        if entry.startswith("."):
            continue
        try:
            st = load(root, entry)
        except ContainerNotFoundError:
            continue
        if every_user or st.user == user:
            states.append(st)
    return sorted(states, key=lambda s: s.created)


def find(root: Path | None, ref: str) -> ContainerState:
    """The container of this process's user whose name, id or unique id prefix is ``ref``
    (another user's container is no container here: "no such container")."""
    states = all_states(root)
    for st in states:
        if st.name == ref or st.id == ref:
            return st
    matches = [st for st in states if st.id.startswith(ref)] if len(ref) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"container reference {ref!r} is ambiguous; give more of the id")
    raise ContainerNotFoundError(
        f"no such container: {ref} (see `nbcontainer ps -a` for the containers there are)"
    )


def records_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock over container creation, so two names can never be taken twice."""
    return directory_lock(containers_dir(root))


#: A spare's directory (a root built ahead, runtime/spare.py) is ``.spare-ID`` until the
#: container that adopts it renames it to ``ID``: no listing of containers sees it before.
SPARE_DIR_PREFIX = ".spare-"
#: In a spare's directory: the supervisor that made it, so ``gc`` keeps the directory while
#: that process lives.
SPARE_MARKER = "spare.json"


def reserve_spare_directory(root: Path) -> Path:
    """A directory for a spare's root built ahead (with ``upper`` and ``work``), to become
    the directory of the container that adopts it (:func:`reserve`)."""
    containers = containers_dir(root)
    containers.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = containers / f"{SPARE_DIR_PREFIX}{new_id()}"
    path.mkdir(mode=0o711)
    for sub in ("upper", "work"):
        (path / sub).mkdir(mode=0o755)
    (path / SPARE_MARKER).write_text(json.dumps(
        {"supervisor_pid": os.getpid(), "supervisor_start": process_start_time(os.getpid())}))
    return path


def spare_directory_alive(path: Path) -> bool | None:
    """For a directory without a record: True/False if it is a spare's whose supervisor
    lives/is gone, None if it is no spare's."""
    try:
        data = json.loads((path / SPARE_MARKER).read_text())
        return is_alive(int(data["supervisor_pid"]), data.get("supervisor_start"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return False


def reserve(root: Path, name: str | None, image: str, command: list[str],
            auto_remove: bool, spare_dir: Path | None = None) -> ContainerState:
    """Create the container's directory and record, refusing a name this user already uses.

    ``spare_dir``: a spare's directory (a root built ahead) this container takes over: it is
    renamed to the container's (OSError if it cannot be: gc took it)."""
    with records_lock(root):
        if name is not None:
            for st in all_states(root):
                if st.name == name:
                    raise UsageError(
                        f"the container name {name!r} is already in use by container {st.id} "
                        f"({st.status}); remove it with `nbcontainer rm -f {name}` or choose "
                        "another name"
                    )
        if spare_dir is None:
            cid = new_id()
            path = container_path(root, cid)
            path.mkdir(mode=0o711)
        else:
            cid = spare_dir.name.removeprefix(SPARE_DIR_PREFIX)
            path = container_path(root, cid)
            # The spare's overlay, mounted in its own mount namespace, follows the rename.
            os.rename(spare_dir, path)
        state = ContainerState(id=cid, name=name, image=image, command=command,
                               created=time.time(), auto_remove=auto_remove,
                               user=current_user(), supervisor_pid=os.getpid(),
                               supervisor_start=process_start_time(os.getpid()))
        save(root, state)
        if spare_dir is not None:  # after the record: gc always finds one of the two
            (path / SPARE_MARKER).unlink(missing_ok=True)
    return state
