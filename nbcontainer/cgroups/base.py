"""One cgroup manager interface with v1 and v2 behind it, and one stats record for both.

youki's shape: the runtime talks to :class:`Cgroup` and never cares which version it got; the
version modules differ mostly in which file they write (crun's observation: ``memory.max`` vs
``memory.limit_in_bytes``). Raw ``OSError`` is translated into :class:`CgroupError` here, in
one place, with the path and the errno text (psutil's habit).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from nbcontainer._records import record
from nbcontainer.errors import CgroupError

#: How long remove() and kill_all() keep trying by default: zombies drain within
#: milliseconds, so 5 s only matters for tasks stuck in uninterruptible sleep.
DEFAULT_TIMEOUT = 5.0


@record(frozen=True)
class CgroupStats:
    """One normalised sample of a container's cgroup; the same fields on v1 and v2.

    ``None`` means the kernel has no such file (controller missing, old kernel) or, for
    limits, that no limit is set.
    """

    memory_current: int | None
    memory_peak: int | None
    memory_limit: int | None
    oom_kills: int
    cpu_usage_ns: int | None
    pids_current: int | None
    pids_peak: int | None
    pids_limit: int | None
    #: How often the cgroup's own memory limit was hit and reclaim failed (v2
    #: ``memory.events`` ``oom``; None on v1, which has no such counter: ``memory.failcnt``
    #: stays 0 through an OOM kill). An OOM kill with no new hit came from a parent cgroup's
    #: or the machine's OOM killer.
    limit_hits: int | None = None
    #: False where the kernel does not count OOM kills (v1 before Linux 4.13).
    oom_counted: bool = True


#: The sampler's file keys (v1 and v2 together) that each :class:`CgroupStats` field is parsed
#: from, where they differ from the field's name.
STAT_FIELD_FILES: dict[str, tuple[str, ...]] = {
    "oom_kills": ("oom_control", "memory_events"),
    "limit_hits": ("memory_events",),
    "oom_counted": ("oom_control",),
    "cpu_usage_ns": ("cpu_usage", "cpu_stat"),
}


# -- small I/O helpers: the only place OSError becomes CgroupError ---------------------------


def strerror(err: OSError) -> str:
    """The errno text of an OSError (``Device or resource busy``)."""
    return os.strerror(err.errno) if err.errno else str(err)


def write_file(path: str, value: str) -> None:
    """Write one value to a control file (one open, one write; cgroupfs wants single writes)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise CgroupError(f"cannot write {value} to {path}: {strerror(err)}") from err


def read_file(path: str) -> str:
    """Read a small control file as text."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, 65536)]
            while len(chunks[-1]) == 65536:  # cgroup.procs of a big container can be longer
                chunks.append(os.read(fd, 65536))
            return b"".join(chunks).decode()
        finally:
            os.close(fd)
    except OSError as err:
        raise CgroupError(f"cannot read {path}: {strerror(err)}") from err


def read_optional(path: str) -> str | None:
    """Read a control file, or None when it does not exist."""
    try:
        return read_file(path)
    except CgroupError as err:
        if isinstance(err.__cause__, FileNotFoundError):
            return None
        raise


def parse_keyed(text: str | None) -> dict[str, int]:
    """Parse ``key value`` lines (memory.events, cpu.stat, memory.oom_control)."""
    out: dict[str, int] = {}
    if not text:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def parse_int(text: str | None) -> int | None:
    """An integer control file, or None when absent or ``max``."""
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def mkdir(path: str) -> bool:
    """Create a cgroup directory; return False if it already existed."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    except OSError as err:
        raise CgroupError(f"cannot create cgroup {path}: {strerror(err)}") from err
    return True


#: errnos meaning "that cgroup directory is gone (or going)": retry by re-creating it.
_GONE = (errno.ENOENT, errno.ENODEV)


def make_child(parent: str, name: str,
               init_parent: Callable[[str], None] | None = None, attempts: int = 20) -> str:
    """mkdir parent/name, creating the shared parent when it is missing.

    The shared ``nbcontainer`` parent is removed by whichever container leaves it empty last,
    so it can vanish between our mkdir of it and of the child (or of its initialisation):
    ENOENT is retried (20 times: heavy start/stop churn needs more than a couple). An
    existing child is an error: ids are unique.
    """
    child = f"{parent}/{name}"
    for attempt in range(attempts):
        try:
            os.mkdir(child)
            return child
        except OSError as err:
            if err.errno not in _GONE or attempt == attempts - 1:
                raise CgroupError(f"cannot create cgroup {child}: {strerror(err)}") from err
        try:
            if mkdir(parent) and init_parent is not None:
                init_parent(parent)
        except CgroupError as err:
            # ENODEV: kernfs's answer for a file of a directory being removed right now.
            if not isinstance(err.__cause__, OSError) or err.__cause__.errno not in _GONE:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def check_name(name: str) -> None:
    """A container cgroup name must be one path component (it is the container id)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise CgroupError(f"invalid cgroup name {name!r}: use one path component, e.g. the "
                          "container id")


# -- the sampler ---------------------------------------------------------------------------


class Sampler:
    """Reads a cgroup's statistics repeatedly through file descriptors kept open.

    The meter samples many times a second; an open/read/close per file per sample costs a
    path walk through kernfs each time, while ``pread`` on a kept fd does not.
    """

    def __init__(self, files: dict[str, str],
                 parse: Callable[[dict[str, str | None]], CgroupStats]) -> None:
        self._parse = parse
        self._fds: dict[str, int] = {}
        self._missing = [key for key in files]
        self.paths = dict(files)
        try:
            for key, path in files.items():
                try:
                    self._fds[key] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise CgroupError(f"cannot open {path}: {strerror(err)}") from err
        except BaseException:
            self.close()
            raise
        self._missing = [key for key in files if key not in self._fds]

    def read(self) -> CgroupStats:
        """Take one sample of every kept file.

        Returns
        -------
        CgroupStats

        Raises
        ------
        CgroupError
            When the cgroup was removed meanwhile (the kernel answers ENODEV).
        """
        raw: dict[str, str | None] = dict.fromkeys(self._missing)
        for key in self._fds:
            try:
                # Every sampled file is a few lines; 4 KiB is one page and plenty.
                raw[key] = os.pread(self._fds[key], 4096, 0).decode()
            except OSError as err:
                raise CgroupError(f"cannot read {self.paths[key]}: {strerror(err)}") from err
        return self._parse(raw)

    def memory_current(self) -> int | None:
        """Memory in use now, in bytes: one ``pread`` of one kept fd and nothing else.

        The meter's fast path, taken for most samples: measured in the meter thread, a
        sample's cost is the wakeup plus the Python it runs afterwards with cold caches
        (about 90 us for :meth:`read` against 6 us in a tight loop), so this path does no
        dict, no record and no parsing beyond ``int``. None when there is no memory controller.
        """
        fd = self._fds.get("memory_current")
        if fd is None:
            return None
        try:
            return int(os.pread(fd, 32, 0))
        except OSError as err:
            raise CgroupError(f"cannot read {self.paths['memory_current']}: "
                              f"{strerror(err)}") from err

    def close(self) -> None:
        """Close the kept file descriptors (idempotent)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# -- the interface -------------------------------------------------------------------------


class Cgroup(abc.ABC):
    """A container's cgroup: one directory per hierarchy (v1) or a single one (v2).

    Attributes
    ----------
    name
        The directory name (the container id).
    paths
        Controller -> absolute directory; v2 has the single key ``"unified"``.
    """

    def __init__(self, name: str, paths: dict[str, str]) -> None:
        self.name = name
        self.paths = dict(paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.paths!r})"

    @property
    def dirs(self) -> list[str]:
        """The distinct directories (co-mounted v1 controllers share one)."""
        return sorted(set(self.paths.values()))

    def thread_files(self) -> list[str]:
        """The files a single-threaded process writes ``0`` to, to move itself in (cgroup v1's
        per-thread ``tasks``, one per directory); empty where the process is cloned into its
        cgroup instead (v2). See :func:`nbcontainer.child.helper.enter_cgroup`."""
        return []

    # lifecycle -----------------------------------------------------------------------------

    def attach(self, pid: int) -> None:
        """Move a process (all its threads) into this cgroup, in every hierarchy.

        Parameters
        ----------
        pid
            The process id, as seen from the cgroup filesystem's pid namespace.

        Raises
        ------
        CgroupError
            With the path and the errno text (ESRCH: the process is gone; ENOSPC on v1
            cpuset: empty cpus/mems).
        """
        value = str(pid)
        for path in self.dirs:
            write_file(path + "/cgroup.procs", value)

    def rename(self, name: str) -> Cgroup:
        """The same cgroup under a new name, renamed in every hierarchy (an adopted spare).

        All or nothing: a rename that fails part-way is undone before the error is raised.

        Raises
        ------
        CgroupError
            With the path and the errno text.
        """
        check_name(name)
        renamed: dict[str, str] = {}
        try:
            for directory in self.dirs:
                target = os.path.join(os.path.dirname(directory), name)
                os.rename(directory, target)
                renamed[directory] = target
        except OSError as err:
            for old, new in renamed.items():
                with contextlib.suppress(OSError):
                    os.rename(new, old)
            raise CgroupError(f"cannot rename cgroup {self.name} to {name}: "
                              f"{strerror(err)}") from err
        return type(self)(name, {c: renamed[p] for c, p in self.paths.items()})

    def procs(self) -> list[int]:
        """The pids in this cgroup (its own directory, not descendants), union over hierarchies.

        Returns
        -------
        list of int
            Sorted; empty if the cgroup is gone.
        """
        pids: set[int] = set()
        for path in self.dirs:
            text = read_optional(path + "/cgroup.procs")
            if text:
                pids.update(int(p) for p in text.split())
        return sorted(pids)

    def stats(self) -> CgroupStats:
        """One sample of memory, CPU and task statistics.

        Returns
        -------
        CgroupStats
        """
        with self.open_sampler() as sampler:
            return sampler.read()

    def open_sampler(self, only: Iterable[str] | None = None) -> Sampler:
        """A :class:`Sampler` with this cgroup's statistics files kept open.

        Parameters
        ----------
        only
            The :class:`CgroupStats` fields wanted (default: all); files feeding none of them
            are not opened or read, and those fields read as missing (the meter needs no pids
            files: two reads fewer per full sample).

        Returns
        -------
        Sampler
            Close it (or use it as a context manager) when done.
        """
        files = self._stat_files()
        if only is not None:
            wanted = {key for field in only for key in STAT_FIELD_FILES.get(field, (field,))}
            files = {key: path for key, path in files.items() if key in wanted}
        return Sampler(files, self._parse_stats)

    @abc.abstractmethod
    def _stat_files(self) -> dict[str, str]:
        """Key -> absolute path of every file the stats record is built from."""

    @staticmethod
    @abc.abstractmethod
    def _parse_stats(raw: dict[str, str | None]) -> CgroupStats:
        """Build the record from the files' texts (None = file missing)."""

    @abc.abstractmethod
    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop every process in the cgroup; return once the kernel says it is frozen."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Let the processes run again."""

    @abc.abstractmethod
    def is_frozen(self) -> bool:
        """Whether the kernel reports the cgroup frozen."""

    @abc.abstractmethod
    def populated(self) -> bool:
        """Whether any process is in the cgroup or below it."""

    @abc.abstractmethod
    def _can_freeze(self) -> bool:
        """Whether a freezer is available for this cgroup."""

    def kill_all(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """SIGKILL every process in the cgroup, including ones forked meanwhile.

        Killing pids read from ``cgroup.procs`` races with fork: a child born after the read
        survives. Freezing first closes that window (a frozen task cannot fork), and the
        SIGKILL stays pending until the thaw, when the task dies before running user code.
        Loops until the cgroup is empty.

        Parameters
        ----------
        timeout
            Seconds before giving up.

        Raises
        ------
        CgroupError
            If processes remain after ``timeout`` (e.g. stuck in uninterruptible sleep).
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.populated():
            if self._can_freeze():
                # A task in D state can delay freezing past the timeout; kill anyway.
                with contextlib.suppress(CgroupError):
                    self.freeze(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            for pid in self._all_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self._can_freeze():
                # Thaw even when freezing timed out: a half-frozen (FREEZING) cgroup must not
                # stay that way, and the pending SIGKILLs only act on running tasks.
                try:
                    self.thaw()
                except CgroupError:
                    if all(os.path.isdir(p) for p in self.dirs):
                        raise
            if not self.populated():
                return
            if time.monotonic() > deadline:
                raise CgroupError(
                    f"cannot kill every process in cgroup {self.dirs[0]}: "
                    f"{len(self._all_pids())} still there after {timeout:g} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _all_pids(self) -> list[int]:
        """Pids in this cgroup and every descendant cgroup (a container may nest cgroups)."""
        pids: set[int] = set()
        for top in self.dirs:
            for dirpath, _dirs, _files in os.walk(top):
                text = read_optional(dirpath + "/cgroup.procs")
                if text:
                    pids.update(int(p) for p in text.split())
        return sorted(pids)

    def remove(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Kill what is left and remove the cgroup in every hierarchy (idempotent).

        Also tries to remove the shared ``nbcontainer`` parent directory; another container
        still using it makes that fail with EBUSY, which is fine.

        Parameters
        ----------
        timeout
            Seconds to keep retrying rmdir while exiting tasks drain (EBUSY).

        Raises
        ------
        CgroupError
            If a directory cannot be removed in time.
        """
        deadline = time.monotonic() + timeout
        if any(os.path.isdir(p) for p in self.dirs) and self.populated():
            self.kill_all(timeout=timeout)
        for path in self.dirs:
            _rmdir_tree(path, deadline)
        for path in self.dirs:
            parent = os.path.dirname(path)
            if os.path.basename(parent) == "nbcontainer":
                try:
                    os.rmdir(parent)
                except OSError as err:
                    if err.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT, errno.ENODEV):
                        raise CgroupError(
                            f"cannot remove cgroup {parent}: {strerror(err)}") from err


def leave(procs_files: Iterable[str]) -> None:
    """Move the calling process into the cgroups whose ``cgroup.procs`` files are given.

    Writing ``0`` to a ``cgroup.procs`` file moves the writer (cgroups(7)); a spare's helper
    goes back where it came from this way, so it is outside the limits of the container it
    prepared. A file that cannot be written is skipped: the caller checks the cgroup's procs.
    """
    for path in procs_files:
        with contextlib.suppress(OSError), open(path, "w") as f:
            f.write("0")


def _rmdir_tree(path: str, deadline: float) -> None:
    """rmdir a cgroup and any child cgroups, deepest first, retrying EBUSY until deadline."""
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise CgroupError(f"cannot remove cgroup {path}: {strerror(err)}") from err
            children = _subdirs(path)
            for child in children:
                _rmdir_tree(child, deadline)
            if not children:
                # Leftover tasks in a nested cgroup the container made itself: kill_all only
                # froze the top, so kill these directly.
                for pid in (read_optional(path + "/cgroup.procs") or "").split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            if not children and time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {path}: {strerror(err)}") from err
            if not children:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


def _subdirs(path: str) -> list[str]:
    """Child directories of a cgroup directory."""
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def distinct(paths: Iterable[str]) -> list[str]:
    """Unique paths, in first-seen order."""
    return list(dict.fromkeys(paths))
