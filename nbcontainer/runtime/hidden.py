"""What the ``host`` image hides: the host's credentials, covered inside the container.

The ``host`` image is the host's own ``/`` as a read-only lower layer, so without this a cell
could read ``/etc/shadow``, root's SSH keys, or Jupyter's connection files and server tokens
(and from those run code in the notebook server). Each existing path below is covered inside
the container by an empty read-only tmpfs (a directory) or ``/dev/null`` (a file), as runc
masks paths. A ``-v`` volume at or below a hidden path exposes it on purpose.
docs/security.md lists them.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from pathlib import Path

from nbcontainer.paths import KERNEL_RUNDIR_PREFIX, configured_store

#: System files with password hashes.
SYSTEM_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                  "/etc/sudoers.d", "/run/user", "/run/secrets")
#: Per home directory (root's and /home/*): keys, tokens, credentials, Jupyter's own files.
HOME_SECRETS = (".ssh", ".gnupg", ".docker", ".aws", ".azure", ".kube", ".config/gcloud",
                ".config/gh", ".netrc", ".git-credentials", ".pypirc", ".npmrc",
                ".cargo/credentials", ".cargo/credentials.toml", ".m2/settings.xml",
                ".vault-token", ".local/share/jupyter/runtime", ".jupyter")


#: The system and home paths change rarely: looked up again after this many seconds (a cell
#: per second would otherwise pay ~40 stat calls each time). Kernel run directories and the
#: store are looked up at every start.
CACHE_SECONDS = 10.0
_cache: tuple[float, list[str]] | None = None


def _existing(candidates: list[str]) -> set[str]:
    return {os.path.realpath(p) for p in candidates if os.path.lexists(p)}


def _system_and_homes() -> list[str]:
    global _cache
    now = time.monotonic()
    if _cache is None or now - _cache[0] > CACHE_SECONDS:
        candidates = list(SYSTEM_SECRETS)
        for home in ["/root", *glob.glob("/home/*")]:
            candidates += [os.path.join(home, name) for name in HOME_SECRETS]
        _cache = (now, sorted(_existing(candidates)))
    return _cache[1]


def _temp_dirs() -> list[str]:
    """Every directory :func:`tempfile.gettempdir` could pick (the kernel relay makes its
    directory there): ``$TMPDIR``, ``$TEMP``, ``$TMP``, /tmp, /var/tmp, /usr/tmp, those that
    exist. All of them, not the first: hiding more is safe, and ``tempfile`` (with the
    ``random`` and ``shutil`` it imports) stays off a container start's path."""
    names = [os.environ.get(var) for var in ("TMPDIR", "TEMP", "TMP")]
    return [d for d in dict.fromkeys([*filter(None, names), "/tmp", "/var/tmp", "/usr/tmp"])
            if os.path.isdir(d)]


def host_secrets(store: Path) -> list[str]:
    """The existing paths the ``host`` image hides, resolved on the host, sorted."""
    fresh = [str(store), str(configured_store(store))]  # a store on overlayfs: both
    runtime_dir = os.environ.get("JUPYTER_RUNTIME_DIR")
    if runtime_dir:
        fresh.append(runtime_dir)
    # Other container kernels' relay directories (their connection keys and sockets).
    for tmp in _temp_dirs():
        fresh += glob.glob(os.path.join(tmp, f"{KERNEL_RUNDIR_PREFIX}*"))
    return sorted(set(_system_and_homes()) | _existing(fresh))


def exposed(hidden: Iterable[str], volume_targets: Iterable[str]) -> list[str]:
    """``hidden`` less the paths a volume is mounted at or below (exposed on purpose)."""
    targets = [t.rstrip("/") or "/" for t in volume_targets]
    return [h for h in hidden
            if not any(t == h or t.startswith(h.rstrip("/") + "/") for t in targets)]
