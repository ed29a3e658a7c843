"""Install the container's seccomp filter: the last step before the payload runs.

The supervisor compiled the profile (:mod:`nbcontainer.runtime.seccomp`); here the program
arrives as base64 bytes and only goes to prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)
(seccomp(2)). The first process is single-threaded, so no SECCOMP_FILTER_FLAG_TSYNC. The
filter needs no_new_privs or CAP_SYS_ADMIN: with no_new_privs it is installed after the
capabilities are dropped and the user is switched, right before execve(2) (or the Python
body); without no_new_privs it must come before the capabilities go (runc's order), see
helper.py. Cheap to import: binascii is built in.
"""

from __future__ import annotations

import binascii

from nbcontainer import _libc

_installed = False


def install(encoded: str | None) -> None:
    """Install the filter ``encoded`` (base64 of struct sock_filter[]); once per process."""
    global _installed
    if not encoded or _installed:
        return
    try:
        _libc.seccomp_set_filter(binascii.a2b_base64(encoded))
    except OSError as err:
        raise OSError(err.errno, f"installing the seccomp filter: {err.strerror}") from None
    _installed = True
