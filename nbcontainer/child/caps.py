"""Capabilities of the payload: Docker's default set, plus --cap-add, minus --cap-drop.

Runs in the container's process before exec. Dropping a capability from the bounding set is
what limits root after execve(2): for uid 0 the kernel grants every capability that is left in
the bounding set (capabilities(7), "Capabilities and execution of programs by root").
"""

from __future__ import annotations

import contextlib
import os

from nbcontainer import _libc
from nbcontainer.capnames import ALL_CAPS


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(ALL_CAPS) - 1


def mask_of(names: frozenset[str] | set[str] | list[str]) -> int:
    """The 64-bit mask of capability names."""
    mask = 0
    for name in names:
        mask |= 1 << ALL_CAPS.index(name)
    return mask


def apply(names: frozenset[str] | set[str] | list[str], no_new_privs: bool,
          user: tuple[int, int] | list[int] | None = None) -> None:
    """Become ``user`` with only ``names``: bounding set, user, then effective/permitted.

    runc's order: the bounding set is dropped first (that needs CAP_SETPCAP), then the user is
    set (that needs CAP_SETUID/CAP_SETGID, which ``--cap-drop`` may remove: still effective
    here), and only then are the effective and permitted sets cut. The supplementary groups
    are cleared, so no host group (gid 0) stays. The inheritable set is left empty, as Docker
    does since CVE-2022-24769.
    """
    keep = mask_of(names)
    for bit in range(_last_cap() + 1):
        if not keep & (1 << bit):
            # A capability the running kernel does not know: nothing to drop.
            with contextlib.suppress(OSError):
                _libc.prctl(_libc.PR_CAPBSET_DROP, bit)
    with contextlib.suppress(OSError):
        _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_CLEAR_ALL)
    if user is not None:
        uid, gid = user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # a non-zero uid also clears the effective and permitted sets
    eff, perm, _ = _libc.capget()
    _libc.capset(eff & keep, perm & keep, 0)
    if no_new_privs:
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)

