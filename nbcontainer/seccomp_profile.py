"""seccomp profiles in Docker's JSON format: validation, and the rules one container gets.

Pure (the only I/O is reading a profile file the user named). A profile is validated when the
spec is made (:func:`load_profile_file`: a bad path or bad JSON is a ``UsageError`` naming the
file and what is wrong), and :func:`select_rules` applies Docker's selection
(``moby/profiles/seccomp/seccomp_linux.go``, ``setupSeccomp``): the architectures of the
``archMap`` entry for this machine (x86_64 brings x86 and x32, as in Docker), and of each
``syscalls`` entry only those whose ``includes``/``excludes`` match this machine's architecture,
the container's capabilities (all of ``includes.caps`` present, none of ``excludes.caps``) and
the running kernel (``minKernel``). Turning the result into a BPF program is the supervisor's
job (:mod:`nbcontainer.runtime.seccomp`).

``seccomp_default.json`` next to this file is Docker's default profile, unchanged: moby/moby
commit b985e2313a8676e18072b442911fc8f64f17d440,
``vendor/github.com/moby/profiles/seccomp/default.json`` (github.com/moby/profiles/seccomp
v0.2.3; Apache-2.0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nbcontainer._records import record
from nbcontainer.errors import UsageError

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PROFILE_PATH = Path(__file__).with_name("seccomp_default.json")

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
#: uname's machine -> (Docker's name in ``includes.arches``, the SCMP_ARCH of ``archMap``)
MACHINES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
            "i686": ("x86", "SCMP_ARCH_X86"), "armv7l": ("arm", "SCMP_ARCH_ARM"),
            "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "s390x": ("s390x", "SCMP_ARCH_S390X"),
            "riscv64": ("riscv64", "SCMP_ARCH_RISCV64")}


@record(frozen=True)
class Rule:
    """One libseccomp rule: ``action`` for ``name`` when every ``args`` condition holds."""

    name: str
    action: str
    errno: int | None = None  # for SCMP_ACT_ERRNO / SCMP_ACT_TRACE; None: EPERM
    args: tuple[tuple[int, str, int, int], ...] = ()  # (index, op, value, valueTwo)


@record(frozen=True)
class Selection:
    """What one container's filter is made of."""

    default_action: str
    default_errno: int | None
    arches: tuple[str, ...]  # SCMP_ARCH_* beyond the native one (sub-architectures)
    rules: tuple[Rule, ...]


def _fail(source: str, where: str, what: str) -> UsageError:
    place = f"{where}: " if where else ""
    return UsageError(f"--security-opt seccomp={source}: {place}{what} (the file must be a "
                      "seccomp profile in Docker's JSON format, see docs/security.md)")


def _uint(value: object, source: str, where: str, bits: int = 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise _fail(source, where, f"{value!r} is not a number from 0 to {(1 << bits) - 1}")
    return value


def _strings(value: object, source: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, where, f"expected a list of strings, got {value!r}")
    return value


def _object(value: object, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, where, f"expected an object, got {value!r}")
    return value


def _action(value: object, source: str, where: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        raise _fail(source, where, "SCMP_ACT_NOTIFY (a user-space listener) is not supported")
    if value not in ACTIONS:
        raise _fail(source, where, f"unknown action {value!r}; use one of {', '.join(ACTIONS)}")
    return str(value)


def _filter(value: object, source: str, where: str) -> None:
    data = _object(value, source, where)
    for key in ("caps", "arches"):
        if key in data and data[key] is not None:
            _strings(data[key], source, f"{where}.{key}")
    if data.get("minKernel") is not None:
        _kernel_version(data["minKernel"], source, f"{where}.minKernel")


def _kernel_version(value: object, source: str, where: str) -> tuple[int, int]:
    parts = str(value).split(".")
    if not isinstance(value, str) or len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise _fail(source, where, f"kernel version {value!r} is not MAJOR.MINOR, e.g. 4.8")
    return int(parts[0]), int(parts[1])


def parse_profile(text: str, source: str) -> dict[str, Any]:
    """Check a profile's JSON text against Docker's format; return it decoded.

    Unknown keys are ignored (as Docker's decoder does); what we cannot honour is refused.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise _fail(source, "", f"not valid JSON ({err})") from None
    profile = _object(data, source, "")
    _action(profile.get("defaultAction"), source, "defaultAction")
    if profile.get("defaultErrnoRet") is not None:
        _uint(profile["defaultErrnoRet"], source, "defaultErrnoRet", 16)
    if profile.get("architectures") and profile.get("archMap"):
        raise _fail(source, "", "both 'architectures' and 'archMap' are given; use one")
    if profile.get("architectures") is not None:
        _strings(profile["architectures"], source, "architectures")
    for i, entry in enumerate(profile.get("archMap") or []):
        entry = _object(entry, source, f"archMap[{i}]")
        if not isinstance(entry.get("architecture"), str):
            raise _fail(source, f"archMap[{i}].architecture", "expected a string")
        _strings(entry.get("subArchitectures") or [], source, f"archMap[{i}].subArchitectures")
    if profile.get("flags"):
        raise _fail(source, "flags", "filter flags are not supported; remove them")
    if profile.get("listenerPath"):
        raise _fail(source, "listenerPath", "a seccomp notify listener is not supported")
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _fail(source, "syscalls", "expected a list")
    for i, call in enumerate(syscalls):
        where = f"syscalls[{i}]"
        call = _object(call, source, where)
        if call.get("name") and call.get("names"):
            raise _fail(source, where, "both 'name' and 'names' are given; use one")
        if call.get("name") is not None and not isinstance(call["name"], str):
            raise _fail(source, f"{where}.name", "expected a string")
        _strings(call.get("names") or [], source, f"{where}.names")
        _action(call.get("action"), source, f"{where}.action")
        if call.get("errnoRet") is not None:
            _uint(call["errnoRet"], source, f"{where}.errnoRet", 16)
        args = call.get("args") or []
        if not isinstance(args, list):
            raise _fail(source, f"{where}.args", "expected a list")
        for j, arg in enumerate(args):
            arg = _object(arg, source, f"{where}.args[{j}]")
            _uint(arg.get("index"), source, f"{where}.args[{j}].index", 3)
            if arg["index"] > 5:
                raise _fail(source, f"{where}.args[{j}].index", "a syscall has 6 arguments (0-5)")
            _uint(arg.get("value", 0), source, f"{where}.args[{j}].value")
            _uint(arg.get("valueTwo", 0), source, f"{where}.args[{j}].valueTwo")
            if arg.get("op") not in OPERATORS:
                raise _fail(source, f"{where}.args[{j}].op",
                            f"unknown operator {arg.get('op')!r}; use one of "
                            f"{', '.join(OPERATORS)}")
        for key in ("includes", "excludes"):
            if call.get(key) is not None:
                _filter(call[key], source, f"{where}.{key}")
    return profile


def load_profile_file(path: str) -> str:
    """Read and check a profile file; return its JSON text, compact (what the spec keeps)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UsageError(f"--security-opt seccomp={path}: cannot read the profile: {reason}; "
                         "give the path of a JSON file, or seccomp=unconfined") from None
    profile = parse_profile(text, path)
    return json.dumps(profile, separators=(",", ":"), sort_keys=True)


def default_profile_text() -> str:
    """Docker's default profile (shipped with the package)."""
    return DEFAULT_PROFILE_PATH.read_text(encoding="utf-8")


def machine() -> str:
    """This machine's name for profiles: Docker's ``amd64``, ``arm64``..."""
    name = os.uname().machine  # what platform.machine() reads, without importing it
    return MACHINES.get(name, (name, ""))[0]


def kernel_version() -> tuple[int, int]:
    """MAJOR.MINOR of the running kernel."""
    major, _, rest = os.uname().release.partition(".")
    minor = "".join(c for c in rest.split(".")[0] if c.isdigit()) or "0"
    return int(major), int(minor)


def select_rules(profile: dict[str, Any], caps: frozenset[str] | set[str], arch: str,
                 kernel: tuple[int, int]) -> Selection:
    """The rules a container with ``caps`` (``SYS_ADMIN`` or ``CAP_SYS_ADMIN``) gets here.

    Docker's ``setupSeccomp``: ``arch`` is Docker's machine name (``amd64``); ``kernel`` the
    running kernel's (major, minor).
    """
    have = {c if c.startswith("CAP_") else f"CAP_{c}" for c in caps}
    scmp_arch = next((s for d, s in MACHINES.values() if d == arch), "")
    arches: list[str] = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == scmp_arch:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    rules: list[Rule] = []
    for call in profile.get("syscalls") or []:
        excludes = call.get("excludes") or {}
        includes = call.get("includes") or {}
        if arch in (excludes.get("arches") or []) or have & set(excludes.get("caps") or []):
            continue
        if excludes.get("minKernel") and kernel >= _kernel_version(excludes["minKernel"], "", ""):
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if not set(includes.get("caps") or []) <= have:
            continue
        if includes.get("minKernel") and kernel < _kernel_version(includes["minKernel"], "", ""):
            continue
        args = tuple((a["index"], a["op"], a.get("value", 0), a.get("valueTwo", 0))
                     for a in call.get("args") or [])
        names = [call["name"]] if call.get("name") else call.get("names") or []
        rules += [Rule(name, call["action"], call.get("errnoRet"), args) for name in names]
    return Selection(profile["defaultAction"], profile.get("defaultErrnoRet"), tuple(arches),
                     tuple(rules))
