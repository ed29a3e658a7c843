"""Registry credentials in Docker's own config format, so ``docker login`` and ours agree.

The file is ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``)::

    {"auths": {"localhost:5000": {"auth": "<base64 user:password>"},
               "https://index.docker.io/v1/": {...}},
     "credHelpers": {"registry.example.org": "pass"},
     "credsStore": "secretservice"}

A registry listed in ``credHelpers`` (else any registry, when ``credsStore`` is set) keeps its
secret in ``docker-credential-<helper>``, spoken to over its stdin/stdout protocol (``get``,
``store``, ``erase``; docker-credential-helpers' ``client.go``); the config file then holds no
secret for it. Docker Hub is keyed ``https://index.docker.io/v1/``, as Docker writes it.
Everything else in the file (other tools' keys) is kept as it was when we write it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbcontainer.errors import RegistryError, UsageError
from nbcontainer.reference import DEFAULT_DOMAIN, parse_registry

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    """A user name and secret for one registry."""

    username: str
    password: str


def config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def _key(registry: str) -> str:
    return DOCKER_HUB_KEY if registry == DEFAULT_DOMAIN else registry


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the Docker config {path}: {err}; fix or remove it") from err
    if not isinstance(data, dict):
        raise UsageError(f"the Docker config {path} is not a JSON object; fix or remove it")
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write the config atomically, readable by its owner only (it may hold secrets)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent="\t") + "\n")
    os.replace(tmp, path)


def _matches(key: str, registry: str) -> bool:
    """Does a config key (``https://host/v1/``, ``host``) name this registry?"""
    try:
        return parse_registry(key) == registry
    except UsageError:
        return False


def _helper_for(data: dict[str, Any], registry: str) -> str | None:
    helpers = data.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if _matches(str(key), registry):
            return str(helper)
    store = data.get("credsStore")
    return str(store) if store else None


def _run_helper(helper: str, action: str, payload: str) -> str:
    """One call of ``docker-credential-<helper> <action>`` with ``payload`` on its stdin."""
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, action], input=payload.encode(), capture_output=True,
                              timeout=30, check=False)
    except FileNotFoundError as err:
        raise RegistryError(f"the Docker config names the credential helper {helper!r}, but "
                            f"{program} is not on PATH; install it or remove it from "
                            f"{config_path()}") from err
    except subprocess.TimeoutExpired as err:
        raise RegistryError(f"{program} {action} did not answer within 30 s") from err
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in out.lower():
            return ""
        raise RegistryError(f"{program} {action} failed: "
                            f"{out or proc.stderr.decode(errors='replace').strip()}")
    return out


def get_credentials(registry: str) -> Credentials | None:
    """The stored credentials for ``registry`` (a helper's, else the file's), or None."""
    path = config_path()
    data = _load(path)
    helper = _helper_for(data, registry)
    if helper:
        out = _run_helper(helper, "get", _key(registry))
        if not out:
            return None
        try:
            doc = json.loads(out)
            return Credentials(str(doc["Username"]), str(doc["Secret"]))
        except (ValueError, KeyError, TypeError) as err:
            raise RegistryError(f"docker-credential-{helper} get answered something that is not "
                                f"its JSON credentials: {out[:80]!r}") from err
    auths = data.get("auths") or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if not _matches(str(key), registry) or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as err:
                raise RegistryError(f"the credentials for {registry} in {path} are not base64 "
                                    "user:password; log in again") from err
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password", "")))
    return None


def store_credentials(registry: str, creds: Credentials) -> str:
    """Keep ``creds`` for ``registry`` (in its helper if one is configured); say where."""
    path = config_path()
    data = _load(path)
    helper = _helper_for(data, registry)
    auths = data.setdefault("auths", {})
    if helper:
        _run_helper(helper, "store", json.dumps({"ServerURL": _key(registry),
                                                 "Username": creds.username,
                                                 "Secret": creds.password}))
        auths[_key(registry)] = {}
        _save(path, data)
        return f"docker-credential-{helper}"
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    for key in [k for k in auths if _matches(str(k), registry)]:
        del auths[key]
    auths[_key(registry)] = {"auth": token}
    _save(path, data)
    return str(path)


def erase_credentials(registry: str) -> bool:
    """Forget ``registry``'s credentials; True if there were any."""
    path = config_path()
    data = _load(path)
    auths = data.get("auths") or {}
    keys = [k for k in auths if _matches(str(k), registry)]
    helper = _helper_for(data, registry)
    found = bool(keys)
    if helper:
        _run_helper(helper, "erase", _key(registry))
    for key in keys:
        del auths[key]
    if keys:
        _save(path, data)
    return found or bool(helper)
