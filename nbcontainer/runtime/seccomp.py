"""A container's seccomp filter: the profile's rules compiled to BPF once, reused per container.

**libseccomp, not a BPF generator of our own.** The filter is compiled by the system's
libseccomp (``libseccomp.so.2``, what runc and so Docker use), called through a few wrappers in
:mod:`nbcontainer._libc`; a hand-written generator would have to redo what it does better:
the syscall tables of every architecture and sub-architecture (x86_64 brings x86 and x32, as
in Docker; aarch64 brings arm), 64-bit argument comparisons on 32-bit BPF words, the ordering
of rules with different actions, and it is where the semantics of Docker's profile are defined.
We do not use a Python binding package (pyseccomp is itself a ctypes wrapper, unmaintained since
2021): the six calls live in ``_libc``, the only module that uses ctypes here.

The program is built in the supervisor, once per (profile, capability set) in a process
(:func:`compile_filter` is cached: a notebook starts a container per cell), and travels to the
container as bytes (base64 in ``Config.seccomp``); the container's first process only hands it
to prctl(PR_SET_SECCOMP) (:mod:`nbcontainer.child.seccomp`), so libseccomp is never loaded
inside a container.

A process that starts one container and exits (the CLI) would compile the same program every
time (about 15 ms: most of it libseccomp's own work), so the store also keeps compiled programs
in ``<root>/cache/seccomp/`` (:func:`cached_filter`), named by a digest of everything the
program depends on: the profile's text, the capabilities, the machine and kernel version, the
loaded libseccomp file and the source of the compiler (these modules). A changed input is a new
name, never a stale program; the files are root's, as is the store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import functools
import os
from pathlib import Path

from nbcontainer import _libc
from nbcontainer.errors import SetupError
from nbcontainer.seccomp_profile import (
    Rule,
    default_profile_text,
    kernel_version,
    machine,
    parse_profile,
    select_rules,
)

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from nbcontainer.spec import ContainerSpec


def filter_for(spec: ContainerSpec, cache: Path | None = None) -> str | None:
    """The base64 BPF program for ``spec``'s container; None when it runs unconfined.

    With ``cache`` (a directory of the store), a program compiled before, by any process, is
    read from there (see :func:`cached_filter`)."""
    profile = spec.seccomp_profile()
    if profile is None:
        return None
    if cache is None:
        return compile_filter(profile, spec.capabilities())
    return cached_filter(profile, spec.capabilities(), cache)


#: Bump when the cache's file format or naming changes.
_CACHE_FORMAT = "1"


def _cache_key(profile: str, caps: frozenset[str]) -> str:
    """A digest of everything the compiled program depends on (see the module docstring)."""
    from _blake2 import blake2b  # hashlib would load OpenSSL's libcrypto: 3 ms more

    here = Path(__file__).resolve()
    sources = (here, here.parents[1] / "seccomp_profile.py", here.parents[1] / "_libc.py")
    stamps = [f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources]
    text = default_profile_text() if profile == "default" else profile
    parts = [_CACHE_FORMAT, *stamps, _libc.libseccomp_identity(), machine(),
             ".".join(map(str, kernel_version())), ",".join(sorted(caps)), text]
    return blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


def cached_filter(profile: str, caps: frozenset[str], cache: Path) -> str:
    """:func:`compile_filter` through a directory of compiled programs shared by processes.

    A missing or unreadable entry is compiled and written (atomically: a temporary file
    renamed into place); one that cannot be written (a read-only store) is only compiled.
    """
    try:
        key = _cache_key(profile, caps)
    except OSError:
        return compile_filter(profile, caps)
    path = cache / "seccomp" / f"{key}.bpf"
    with contextlib.suppress(OSError, ValueError, binascii.Error):
        text = path.read_text(encoding="ascii")
        program = base64.b64decode(text, validate=True)
        if program and len(program) % 8 == 0:  # an array of struct sock_filter
            return text
    text = compile_filter(profile, caps)
    with contextlib.suppress(OSError):
        for directory in (cache, path.parent):
            directory.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return text


def _action(name: str, errno_ret: int | None) -> int:
    """A profile action as libseccomp's number (an errno of None is EPERM, as in runc)."""
    code = errno.EPERM if errno_ret is None else errno_ret
    return {
        "SCMP_ACT_ALLOW": _libc.SCMP_ACT_ALLOW,
        "SCMP_ACT_ERRNO": _libc.SCMP_ACT_ERRNO(code),
        "SCMP_ACT_KILL": _libc.SCMP_ACT_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": _libc.SCMP_ACT_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": _libc.SCMP_ACT_KILL_PROCESS,
        "SCMP_ACT_TRAP": _libc.SCMP_ACT_TRAP,
        "SCMP_ACT_TRACE": _libc.SCMP_ACT_TRACE(code),
        "SCMP_ACT_LOG": _libc.SCMP_ACT_LOG,
    }[name]


def _conditions(rule: Rule) -> list[list[tuple[int, int, int, int]]]:
    """The libseccomp rules for one profile rule: its conditions ANDed in one rule, unless two
    test the same argument; then each is a rule of its own (ORed), as runc does."""
    conds = [(index, _libc.SCMP_CMP[op], a, b) for index, op, a, b in rule.args]
    indexes = [c[0] for c in conds]
    if len(set(indexes)) < len(indexes):
        return [[c] for c in conds]
    return [conds]


@functools.lru_cache(maxsize=16)
def compile_filter(profile: str, caps: frozenset[str]) -> str:
    """Compile a profile (``"default"`` or a profile's JSON text) for ``caps``; base64 BPF.

    Raises :class:`SetupError` in words when libseccomp is missing or refuses a rule.
    """
    text = default_profile_text() if profile == "default" else profile
    source = "default" if profile == "default" else "PROFILE.json"
    selection = select_rules(parse_profile(text, source), caps, machine(), kernel_version())
    default = _action(selection.default_action, selection.default_errno)
    try:
        with _libc.SeccompFilter(default) as filt:
            native = filt.native_arch()
            for name in selection.arches:
                token = filt.arch_token(name.removeprefix("SCMP_ARCH_").lower())
                if token == 0:
                    raise SetupError(f"seccomp: libseccomp does not know the architecture "
                                     f"{name!r} of the profile")
                if token != native:
                    filt.add_arch(token)
            for rule in selection.rules:
                action = _action(rule.action, rule.errno)
                if action == default:
                    continue  # libseccomp refuses a rule that does what the default does
                number = filt.syscall_number(rule.name)
                if number is None:
                    continue  # a syscall this libseccomp does not know (runc skips it too)
                for conds in _conditions(rule):
                    filt.add_rule(action, number, conds)
            with contextlib.suppress(OSError):  # libseccomp >= 2.5: a binary tree of numbers
                filt.set_optimize(2)
            program = filt.export_bpf()
    except OSError as err:
        raise SetupError(f"seccomp: cannot build the filter: {err.strerror or err}; run with "
                         "--security-opt seccomp=unconfined to do without one") from None
    return base64.b64encode(program).decode()

