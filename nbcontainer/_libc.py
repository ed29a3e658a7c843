"""The only ctypes user: thin wrappers over the Linux syscalls Python's os module lacks.

Each wrapper raises ``OSError`` whose message names the syscall and its arguments, so an error
that reaches a user says what failed where (crun's habit). Nothing here decides policy.
"""

from __future__ import annotations

import ctypes
import errno
import os


def _load_libc(kind: type[ctypes.CDLL] = ctypes.CDLL) -> ctypes.CDLL:
    # ctypes.util.find_library is slow (it may run ldconfig): try the usual soname first.
    try:
        return kind("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return kind(find_library("c"), use_errno=True)


_libc = _load_libc()
#: The same library, called with the GIL held (a PyDLL): for clone3, which forks the way
#: os.fork does, GIL held, so the child resumes in the state PyOS_AfterFork_Child expects.
_libc_gil = _load_libc(ctypes.PyDLL)
_libc_gil.syscall.restype = ctypes.c_long

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# <linux/seccomp.h>
SECCOMP_MODE_FILTER = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_KEYCTL = 250
_SYS_MOUNT_SETATTR = 442
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_BPF = 321
_KEYCTL_JOIN_SESSION_KEYRING = 1

# <linux/mount.h>, <fcntl.h>: mount_setattr(2)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000
AT_EMPTY_PATH = 0x1000
# open_tree(2), move_mount(2)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_SYS_CAPSET = 126
_SYS_CAPGET = 125
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that ``fd`` refers to."""
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2)."""
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount {fstype or ''} {source or ''} on {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


RENAME_EXCHANGE = 2


def rename_exchange(old: str, new: str) -> None:
    """renameat2(2) with RENAME_EXCHANGE: swap two existing paths atomically.

    OSError ENOSYS where libc or the kernel lacks it, EINVAL where the filesystem does."""
    func = getattr(_libc, "renameat2", None)
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2: not in this libc")
    _check(func(AT_FDCWD, _b(old), AT_FDCWD, _b(new), RENAME_EXCHANGE),
           f"renameat2({old}, {new}, RENAME_EXCHANGE)")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make ``new_root`` the root of this mount namespace."""
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)),
           f"pivot_root({new_root}, {put_old})")


def join_session_keyring(name: str | None = None) -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring for this process (keyrings(7)).

    Without it a container shares the session keyring it was started from (root's, on a
    host), and ``keyctl`` inside reaches root's keys.
    """
    return _check(_libc.syscall(_SYS_KEYCTL, _KEYCTL_JOIN_SESSION_KEYRING, _b(name)),
                  "keyctl(JOIN_SESSION_KEYRING)")


def statfs_type(path: str) -> int:
    """statfs(2)'s ``f_type``: the magic number of the filesystem ``path`` is on.

    ``f_type`` is the first member of struct statfs, a ``long`` (``__fsword_t``) on every
    64-bit Linux ABI; the rest of the structure is not read (the buffer is larger than it).
    """
    buf = ctypes.create_string_buffer(256)
    _check(_libc.statfs(_b(path), buf), f"statfs {path}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, recursive: bool = True, *, dirfd: int = AT_FDCWD,
                  userns_fd: int = 0) -> None:
    """mount_setattr(2) (Linux 5.12): set mount attributes, on every submount with
    ``recursive`` (``AT_RECURSIVE``), which a remount cannot do.

    With ``dirfd`` (and ``path`` empty: ``AT_EMPTY_PATH``) it acts on a detached mount from
    :func:`open_tree`; ``userns_fd`` goes with ``MOUNT_ATTR_IDMAP``.
    """
    attr = _MountAttr(attr_set, 0, 0, userns_fd)
    flags = (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if not path else 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, dirfd, _b(path), flags, ctypes.byref(attr),
                         ctypes.sizeof(attr)), f"mount_setattr({path or f'fd {dirfd}'})")


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) -> int:
    """open_tree(2) (Linux 5.2): with ``OPEN_TREE_CLONE``, a detached copy of the mount at
    ``path`` (not its submounts unless ``AT_RECURSIVE``), as an fd; attach it with
    :func:`move_mount`."""
    return _check(_libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, _b(path), flags),
                  f"open_tree({path})")


def move_mount(fd: int, target: str) -> None:
    """move_mount(2) (Linux 5.2): attach the detached mount ``fd`` at ``target``."""
    _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, _b(target),
                         MOVE_MOUNT_F_EMPTY_PATH), f"move_mount(fd {fd}, {target})")


# <linux/bpf.h>
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


def bpf_prog_load(prog_type: int, insns: bytes, license: str = "Dual MIT/GPL") -> int:
    """bpf(BPF_PROG_LOAD): load a program (raw ``struct bpf_insn`` bytes); its fd (CLOEXEC).

    The verifier's log is asked for only when loading failed, to say why.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(128)  # union bpf_attr, zeroed
        fields = (prog_type.to_bytes(4, "little") + (len(insns) // 8).to_bytes(4, "little")
                  + ctypes.addressof(code).to_bytes(8, "little")
                  + ctypes.addressof(lic).to_bytes(8, "little"))
        if log is not None:
            fields += ((1).to_bytes(4, "little") + len(log).to_bytes(4, "little")
                       + ctypes.addressof(log).to_bytes(8, "little"))
        ctypes.memmove(attr, fields, len(fields))
        return int(_libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, attr, 128))

    fd = load(None)
    if fd < 0:
        err = ctypes.get_errno()
        log = ctypes.create_string_buffer(1 << 16)
        load(log)
        lines = log.value.decode(errors="replace").strip().splitlines()
        raise OSError(err, f"bpf(PROG_LOAD): {os.strerror(err)}"
                      + (f" ({lines[-1]})" if lines else ""))
    return fd


def bpf_prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> None:
    """bpf(BPF_PROG_ATTACH): attach a loaded program to a cgroup directory's fd."""
    attr = ctypes.create_string_buffer(
        target_fd.to_bytes(4, "little") + prog_fd.to_bytes(4, "little")
        + attach_type.to_bytes(4, "little") + flags.to_bytes(4, "little"), 128)
    _check(_libc.syscall(_SYS_BPF, _BPF_PROG_ATTACH, attr, 128), "bpf(PROG_ATTACH)")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


# <linux/sched.h>: clone3(2)
_SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    """struct clone_args up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, 88 bytes: Linux 5.7)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork(2) whose child is born in the cgroup v2 directory ``cgroup_fd`` refers to.

    clone3(2) with CLONE_INTO_CGROUP: the child never runs outside that cgroup, and nobody
    writes ``cgroup.procs`` (a migration takes the kernel's threadgroup rwsem for writing,
    which after a quiet spell waits for an RCU grace period). Like ``os.fork``, the call is
    wrapped in the interpreter's own fork bookkeeping (``PyOS_BeforeFork``,
    ``PyOS_AfterFork_Child``/``_Parent``: the import lock, the GIL, threading's state,
    ``os.register_at_fork`` hooks) and the syscall runs with the GIL held. The stack is the
    caller's (``stack`` 0, no CLONE_VM), as with fork.

    For a single-threaded caller only (the helper): glibc's fork handlers do not run, so
    locks another thread held would stay held in the child. glibc's cached thread id keeps
    the parent's value in the child; what reads it in a single-threaded process (pthread
    mutex owners) only compares it with itself, and raise(3) asks the kernel (gettid).

    Returns 0 in the child and the child's pid in the parent.

    Raises
    ------
    OSError
        ENOSYS (before Linux 5.3, or a seccomp filter that hides clone3), E2BIG (5.3-5.6:
        no ``cgroup`` field), or the cgroup's refusal (EBUSY: it has controllers enabled for
        children; EOPNOTSUPP: not a v2 directory): the caller falls back to ``os.fork`` and
        an attach.
    """
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _libc_gil.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                           ctypes.c_long(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
    return pid


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) with 64-bit masks (version 3 header, two data words)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")


def capget() -> tuple[int, int, int]:
    """capget(2): (effective, permitted, inheritable) of this thread as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_CAPGET, ctypes.byref(header), ctypes.byref(data)), "capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog): install a classic-BPF filter.

    ``program`` is an array of ``struct sock_filter`` (8 bytes each), as libseccomp exports it.
    Needs no_new_privs or CAP_SYS_ADMIN (seccomp(2)); it stays for this process and every
    child, across execve(2).
    """
    if not program or len(program) % 8:
        raise OSError(22, f"seccomp filter of {len(program)} bytes is not a sock_filter array")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# -- libseccomp (seccomp.h), for the supervisor: it turns a profile into a BPF program once ---
# Loaded only when a filter is compiled, never in the container's processes.

# Actions (the kernel's SECCOMP_RET_* values, as libseccomp spells them).
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(errno: int) -> int:  # noqa: N802 - libseccomp's name
    return 0x00050000 | (errno & 0xFFFF)


def SCMP_ACT_TRACE(msg: int) -> int:  # noqa: N802 - libseccomp's name
    return 0x7FF00000 | (msg & 0xFFFF)


# enum scmp_compare
SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# enum scmp_filter_attr
SCMP_FLTATR_CTL_OPTIMIZE = 8


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_seccomp_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    """The system's libseccomp.so.2 (OSError saying so when it is missing)."""
    global _seccomp_lib
    if _seccomp_lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as err:
            raise OSError(2, f"libseccomp.so.2 not found ({err}); install libseccomp2") \
                from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ScmpArgCmp)]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        _seccomp_lib = lib
    return _seccomp_lib


def libseccomp_identity() -> str:
    """The loaded libseccomp's file as ``path:inode:size:mtime`` (from /proc/self/maps), so a
    cached program is recompiled after any update of the library, even one that keeps its
    version number (a distribution's patched syscall tables)."""
    _libseccomp()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split(maxsplit=5)[-1].strip()
            if "/libseccomp.so" in path:
                st = os.stat(path)
                return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    return "unknown"


def _scmp_check(result: int, what: str) -> int:
    # libseccomp returns -errno itself (errno is not set).
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")
    return result


class SeccompFilter:
    """A libseccomp filter context: seccomp_init(3) ... seccomp_export_bpf(3), released on exit.

    A thin wrapper: which rules to add is the caller's business.
    """

    def __init__(self, default_action: int) -> None:
        self._lib = _libseccomp()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise OSError(22, f"seccomp_init({default_action:#x}) failed")

    def __enter__(self) -> SeccompFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def native_arch(self) -> int:
        """seccomp_arch_native(3): this machine's AUDIT_ARCH_* token."""
        return int(self._lib.seccomp_arch_native())

    def arch_token(self, name: str) -> int:
        """seccomp_arch_resolve_name(3) of ``x86_64``, ``x86``, ``aarch64``...; 0 if unknown."""
        return int(self._lib.seccomp_arch_resolve_name(name.encode()))

    def add_arch(self, token: int) -> None:
        """seccomp_arch_add(3); adding one already there is not an error."""
        result = self._lib.seccomp_arch_add(self._ctx, token)
        if result != -17:  # EEXIST
            _scmp_check(result, f"seccomp_arch_add({token:#x})")

    def syscall_number(self, name: str) -> int | None:
        """seccomp_syscall_resolve_name(3); None for a name libseccomp does not know."""
        number = int(self._lib.seccomp_syscall_resolve_name(name.encode()))
        return None if number == -1 else number  # __NR_SCMP_ERROR

    def set_optimize(self, level: int) -> None:
        """SCMP_FLTATR_CTL_OPTIMIZE (libseccomp >= 2.5): 2 sorts the syscalls into a tree."""
        _scmp_check(self._lib.seccomp_attr_set(self._ctx, SCMP_FLTATR_CTL_OPTIMIZE, level),
                    "seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE)")

    def add_rule(self, action: int, syscall: int,
                 args: list[tuple[int, int, int, int]] | tuple[()] = ()) -> None:
        """seccomp_rule_add_array(3); ``args``: (index, op, datum_a, datum_b), all ANDed."""
        array = (_ScmpArgCmp * max(len(args), 1))(*(_ScmpArgCmp(*a) for a in args))
        _scmp_check(self._lib.seccomp_rule_add_array(self._ctx, action, syscall, len(args),
                                                     array),
                    f"seccomp_rule_add(syscall {syscall}, action {action:#x}, args {args})")

    def export_bpf(self) -> bytes:
        """seccomp_export_bpf(3): the program as an array of struct sock_filter."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _scmp_check(self._lib.seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
