"""User namespace id ranges: one range of root's subordinate ids per container.

Root inside a container with ``--ns ...,user`` is an unprivileged host id. Which one comes from
root's entries in ``/etc/subuid`` and ``/etc/subgid`` (subuid(5)), cut into ranges of
:data:`SIZE` ids; each container leases one, so two containers' roots are different host
users and neither can touch the other's files (podman's ``--userns=auto`` does the same).
Host ids are the machine's, so the leases are too (every store on the machine shares them, as
the network leases): ``/var/lib/nbcontainer/userns/ranges.json`` (``$NBCONTAINER_USERNS``),
under the lock ``userns/.lock``::

    {"leases": {"200000": {"container": ID, "root": STORE, "uid": 200000, "gid": 200000,
                           "size": 65536}}}

A lease is released by the container's teardown (every way out) and by ``gc``
(:func:`collect`) for a crashed supervisor's containers, of any store. Without an entry for
root in either file, every container shares :data:`SHARED` (uid and gid 100000-165535), as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from nbcontainer._records import record
from nbcontainer.errors import SetupError
from nbcontainer.paths import directory_lock, machine_records

SIZE = 65536
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"


@record(frozen=True)
class IdMap:
    """Ids 0..size-1 inside are ``uid``.. and ``gid``.. on the host; ``leased`` when the
    range is this container's own (recorded in the store), not the shared one."""

    uid: int
    gid: int
    size: int = SIZE
    leased: bool = False

    def host_uid(self, inside: int) -> int:
        """The host uid of uid ``inside``."""
        return self.uid + inside

    def host_gid(self, inside: int) -> int:
        """The host gid of gid ``inside``."""
        return self.gid + inside

    def record(self) -> dict[str, int | bool]:
        """The form kept in a container's record (``state.userns``)."""
        return {"uid": self.uid, "gid": self.gid, "size": self.size, "leased": self.leased}

    @classmethod
    def from_record(cls, data: dict[str, int | bool]) -> IdMap:
        return cls(int(data["uid"]), int(data["gid"]), int(data["size"]),
                   bool(data.get("leased", False)))


#: What every user-namespace container maps to when root has no subordinate ids.
SHARED = IdMap(100000, 100000)


def subordinate(path: str, user: str = "root", uid: int = 0) -> list[tuple[int, int]]:
    """(start, count) of every entry for ``user`` (by name or uid) in a subuid(5) file."""
    entries = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue  # a malformed line: the shadow tools skip it too
        if start > 0 and count > 0:
            entries.append((start, count))
    return entries


def _ranges(entries: list[tuple[int, int]]) -> list[int]:
    """The starts of every whole range of SIZE ids within the entries."""
    return [start + k * SIZE for start, count in entries for k in range(count // SIZE)]


def slots(subuid: str = SUBUID, subgid: str = SUBGID) -> list[tuple[int, int]]:
    """(host uid, host gid) at which each container range may start, in order.

    Ranges are cut from root's subuid entries, and from its subgid entries, or from the subuid
    ones again when /etc/subgid has none for root (the single range used that for both).
    """
    uids = _ranges(subordinate(subuid))
    gid_entries = subordinate(subgid)
    gids = _ranges(gid_entries) if gid_entries else uids
    return list(zip(uids, gids, strict=False))


def _dir() -> Path:
    return machine_records("userns")


def _load() -> dict[str, dict[str, object]]:
    try:
        with open(_dir() / "ranges.json") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise SetupError(f"the user namespace range record {_dir() / 'ranges.json'} "
                         f"cannot be read ({err}); remove it once no container runs") from err
    leases = data.get("leases") if isinstance(data, dict) else None
    return leases if isinstance(leases, dict) else {}


def _save(leases: dict[str, dict[str, object]]) -> None:
    path = _dir() / "ranges.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"leases": leases}))  # compact: the C encoder
    os.replace(tmp, path)


def _overlaps(a: int, b: int) -> bool:
    return a < b + SIZE and b < a + SIZE


def allocate(root: Path, container: str, *, subuid: str = SUBUID,
             subgid: str = SUBGID) -> IdMap:
    """A free range of root's subordinate ids for ``container`` (of store ``root``), recorded
    machine-wide; the shared range when root has none. SetupError in words when every range is
    taken."""
    candidates = slots(subuid, subgid)
    if not candidates:
        return SHARED
    with directory_lock(_dir()):
        leases = _load()
        for uid, gid in candidates:
            if any(_overlaps(uid, int(str(lease["uid"]))) or _overlaps(gid, int(str(lease["gid"])))
                   for lease in leases.values()):
                continue
            leases[str(uid)] = {"container": container, "root": str(root), "uid": uid,
                                "gid": gid, "size": SIZE}
            _save(leases)
            return IdMap(uid, gid, SIZE, leased=True)
    raise SetupError(
        f"no free user namespace id range: root's subordinate ids in {subuid} hold "
        f"{len(candidates)} range(s) of {SIZE} and every one is in use by a running container; "
        f"stop one, or give root a larger range in {subuid} and {subgid}")


def release(root: Path, container: str) -> None:
    """Give back the range of ``container`` of store ``root``, if it holds one. Idempotent."""
    if not (_dir() / "ranges.json").exists():
        return
    with directory_lock(_dir()):
        leases = _load()
        kept = {k: v for k, v in leases.items()
                if (v.get("container"), v.get("root", str(root))) != (container, str(root))}
        if kept != leases:
            _save(kept)


def leases(root: Path | None = None) -> dict[str, str]:
    """Range start (host uid) -> container id, of every lease (of store ``root`` only, if
    given)."""
    with contextlib.suppress(SetupError):
        return {k: str(v.get("container")) for k, v in _load().items()
                if root is None or v.get("root", str(root)) == str(root)}
    return {}


def collect(alive: Callable[[Path, str], bool]) -> list[str]:
    """gc: release the ranges of containers that are gone, of every store: ``alive(store,
    id)`` says whether one still has a supervisor; a store that no longer exists has none."""
    try:
        found = _load()
    except SetupError:
        return []  # unreadable: the record's own error says so at the next allocation
    actions = []
    for start, lease in found.items():
        container, store = str(lease.get("container")), Path(str(lease.get("root", "/")))
        if store.is_dir() and alive(store, container):
            continue
        release(store, container)
        actions.append(f"released user namespace ids {start}-{int(start) + SIZE - 1} "
                       f"(container {container} is gone)")
    return actions


#: Said once per process (:func:`say_not_idmapped`).
NOT_IDMAPPED = (
    "nbcontainer: warning: this kernel or the store's filesystem cannot make idmapped mounts "
    "(mount_setattr MOUNT_ATTR_IDMAP), so in containers with a user namespace the image's "
    "files show as owned by nobody (65534) and root inside cannot change them, /etc included; "
    "see docs/security.md\n")
_said = False


def say_not_idmapped() -> None:
    """Tell the user, once per process, that image layers could not be idmapped."""
    global _said
    if not _said:
        _said = True
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(NOT_IDMAPPED)
