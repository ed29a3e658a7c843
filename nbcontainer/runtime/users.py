"""Who a container's process runs as: ``-u`` or the image's ``USER``, resolved in the image.

Docker's rules: ``NAME`` or ``UID``, optionally ``:GROUP`` or ``:GID``; names are looked up in
the image's own ``/etc/passwd`` and ``/etc/group`` (never the host's, unless the image is the
host); a numeric uid that the image does not list is used as is, with gid 0 unless given; the
home directory comes from the passwd entry (else ``/root`` for uid 0, ``/``).

The files are read from the image's layer directories on the host, as root, so they are
opened without following symlinks: an image whose ``/etc/passwd`` links to the host's
``/etc/shadow`` is read as having no passwd file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from nbcontainer._records import record
from nbcontainer.errors import UsageError

MAX_FILE = 1 << 20


@record(frozen=True)
class User:
    """A resolved user: ids for setuid/setgid and the home directory for ``HOME``."""

    uid: int
    gid: int
    home: str


def _image_file(layers: Sequence[str], relpath: str) -> str | None:
    """The text of ``relpath`` as the image's overlay would show it (topmost layer wins,
    a whiteout hides it), read without following symlinks; None if absent or not a file."""
    directory, name = os.path.split(relpath)
    for layer in reversed(layers):
        parent = os.path.join(layer, directory)
        try:
            if not stat.S_ISDIR(os.lstat(parent).st_mode):
                return None  # /etc is a link or a file in this layer: treat as absent
        except FileNotFoundError:
            continue
        if os.path.lexists(os.path.join(parent, ".wh." + name)):
            return None
        try:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.lexists(os.path.join(parent, ".wh..wh..opq")):
                return None
            continue
        except OSError as err:
            if err.errno == errno.ELOOP:
                return None
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read(MAX_FILE).decode("utf-8", errors="replace")
    return None


def _entries(text: str | None) -> list[list[str]]:
    return [line.split(":") for line in (text or "").splitlines()
            if line and not line.startswith("#") and line.count(":") >= 2]


def resolve(text: str, layers: Sequence[str], image: str = "the image") -> User:
    """Resolve ``-u``/``USER`` text against the image's passwd and group files.

    Raises
    ------
    UsageError
        A name the image does not know, in Docker's words.
    """
    user_text, _, group_text = str(text).partition(":")
    passwd = _entries(_image_file(layers, "etc/passwd"))
    entry = next((e for e in passwd if len(e) >= 7 and
                  (e[0] == user_text or (user_text.isdigit() and e[2] == user_text))), None)
    if entry is not None:
        if not (entry[2].isdigit() and entry[3].isdigit()):
            raise UsageError(f"-u: the passwd file of {image} has a malformed entry for "
                             f"{user_text}; use a numeric UID:GID")
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5] or "/"
    elif user_text.isdigit():
        uid, gid = int(user_text), 0
        home = "/root" if uid == 0 else "/"
    else:
        raise UsageError(f"-u: unable to find user {user_text}: no matching entries in the "
                         f"passwd file of {image}; use a numeric UID or a user of the image")
    if group_text:
        if group_text.isdigit():
            gid = int(group_text)
        else:
            groups = _entries(_image_file(layers, "etc/group"))
            match = next((g for g in groups if g[0] == group_text and g[2].isdigit()), None)
            if match is None:
                raise UsageError(f"-u: unable to find group {group_text}: no matching entries "
                                 f"in the group file of {image}; use a numeric GID")
            gid = int(match[2])
    return User(uid, gid, home)
