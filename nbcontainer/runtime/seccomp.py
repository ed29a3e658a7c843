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
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from nbcontainer.spec import ContainerSpec


def filter_for(spec: ContainerSpec) -> str | None:
    """The base64 BPF program for ``spec``'s container; None when it runs unconfined."""
    profile = spec.seccomp_profile()
    if profile is None:
        return None
    return compile_filter(profile, spec.capabilities())


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

