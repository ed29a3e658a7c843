"""seccomp profiles without root: Docker's JSON format checked, Docker's selection by
capability, architecture and kernel, ``--security-opt`` parsing, and the compiled program run
on sample syscalls by a small classic-BPF interpreter (what the kernel would answer)."""

from __future__ import annotations

import base64
import ctypes.util
import json
import struct
from pathlib import Path

import pytest

from nbcontainer.errors import UsageError
from nbcontainer.seccomp_profile import (
    DEFAULT_PROFILE_PATH,
    Rule,
    load_profile_file,
    parse_profile,
    select_rules,
)
from nbcontainer.spec import (
    ContainerSpec,
    Security,
    make_spec,
    parse_security_opts,
    spec_from_dict,
    spec_to_dict,
)

DEFAULT = json.loads(DEFAULT_PROFILE_PATH.read_text())
DEFAULT_CAPS = make_spec([]).capabilities()


def _write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "p.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize("data, match", [
    ("{not json", r"p\.json: not valid JSON"),
    ([], r"p\.json: expected an object, got \[\]"),
    ({"syscalls": []}, r"defaultAction: unknown action None"),
    ({"defaultAction": "SCMP_ACT_NOPE"},
     r"defaultAction: unknown action 'SCMP_ACT_NOPE'; use one of"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, r"defaultAction: SCMP_ACT_NOTIFY .* is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1},
     r"defaultErrnoRet: -1 is not a number from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, r"both 'architectures' and 'archMap'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOG"]},
     r"flags: filter flags are not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read",
                                                       "action": "SCMP_ACT_ALLOW"}]},
     r"syscalls\[0\]\.names: expected a list of strings, got 'read'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"],
                                                       "action": "SCMP_ACT_ALLOW"}]},
     r"syscalls\[0\]: both 'name' and 'names' are given; use one"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]},
     r"syscalls\[0\]\.action: unknown action None"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
      "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     r"syscalls\[0\]\.args\[0\]\.index: a syscall has 6 arguments \(0-5\)"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
      "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]},
     r"syscalls\[0\]\.args\[0\]\.op: unknown operator 'EQ'; use one of SCMP_CMP_NE"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
      "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2**64, "op": "SCMP_CMP_EQ"}]}]},
     r"syscalls\[0\]\.args\[0\]\.value: 18446744073709551616 is not a number from 0 to "
     r"18446744073709551615"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
      "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}]},
     r"syscalls\[0\]\.includes\.minKernel: kernel version '4' is not MAJOR\.MINOR"),
])
def test_a_bad_profile_is_a_usage_error_naming_the_file_and_the_place(
        tmp_path: Path, data: object, match: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(UsageError, match=match) as e:
        load_profile_file(path)
    assert str(e.value).startswith(f"--security-opt seccomp={path}: ")


def test_an_unreadable_profile_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"seccomp=/nonexistent/p\.json: cannot read the "
                                         r"profile: No such file or directory"):
        make_spec([], security_opt=["seccomp=/nonexistent/p.json"])
    with pytest.raises(UsageError, match=r"cannot read the profile: Is a directory"):
        make_spec([], security_opt=[f"seccomp={tmp_path}"])


def test_the_default_profile_is_dockers_and_valid() -> None:
    assert parse_profile(DEFAULT_PROFILE_PATH.read_text(), "default") == DEFAULT
    assert DEFAULT["defaultAction"] == "SCMP_ACT_ERRNO" and DEFAULT["defaultErrnoRet"] == 1


def test_security_opt_parsing(tmp_path: Path) -> None:
    assert parse_security_opts(None) == Security("default", None)
    assert parse_security_opts(["seccomp=unconfined"]).seccomp == "unconfined"
    assert parse_security_opts(["seccomp:unconfined"]).seccomp == "unconfined"
    assert parse_security_opts(["no-new-privileges"]).no_new_privileges is True
    assert parse_security_opts(["no-new-privileges=false"]).no_new_privileges is False
    assert parse_security_opts(["no-new-privileges=true", "no-new-privileges=false"]) \
        .no_new_privileges is False
    path = _write(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW"})
    assert json.loads(parse_security_opts([f"seccomp={path}"]).seccomp) == \
        {"defaultAction": "SCMP_ACT_ALLOW"}
    with pytest.raises(UsageError, match=r"unsupported option 'apparmor=x'; use seccomp="):
        parse_security_opts(["apparmor=x"])
    with pytest.raises(UsageError, match=r"no-new-privileges takes true or false"):
        parse_security_opts(["no-new-privileges=maybe"])


def test_spec_defaults_privileged_and_round_trip(tmp_path: Path) -> None:
    spec = make_spec([])
    assert spec.seccomp_profile() == "default" and spec.no_new_privs()
    privileged = make_spec([], privileged=True)
    assert privileged.seccomp_profile() is None and not privileged.no_new_privs()
    assert make_spec([], privileged=True, security_opt=["no-new-privileges"]).no_new_privs()
    assert make_spec([], security_opt=["seccomp=unconfined"]).seccomp_profile() is None
    path = _write(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW"})
    custom = make_spec([], security_opt=[f"seccomp={path}", "no-new-privileges=false"])
    assert spec_from_dict(spec_to_dict(custom)) == custom
    assert spec_from_dict({}) == ContainerSpec()


def _rules(selection_rules: tuple[Rule, ...], name: str) -> list[Rule]:
    return [r for r in selection_rules if r.name == name]


def test_selection_follows_capabilities_as_docker_does() -> None:
    plain = select_rules(DEFAULT, DEFAULT_CAPS, "amd64", (6, 1))
    assert plain.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert _rules(plain.rules, "mount") == [] and _rules(plain.rules, "unshare") == []
    assert _rules(plain.rules, "clone") == [Rule("clone", "SCMP_ACT_ALLOW", None,
                                                 ((0, "SCMP_CMP_MASKED_EQ", 2114060288, 0),))]
    assert _rules(plain.rules, "clone3") == [Rule("clone3", "SCMP_ACT_ERRNO", 38)]
    assert _rules(plain.rules, "arch_prctl") and not _rules(plain.rules, "arm_fadvise64_64")
    admin = select_rules(DEFAULT, DEFAULT_CAPS | {"SYS_ADMIN"}, "amd64", (6, 1))
    assert _rules(admin.rules, "mount") and _rules(admin.rules, "clone") == \
        [Rule("clone", "SCMP_ACT_ALLOW")]
    assert _rules(admin.rules, "clone3") == [Rule("clone3", "SCMP_ACT_ALLOW")]
    ptrace = select_rules(DEFAULT, {"CAP_SYS_PTRACE"}, "amd64", (4, 4))
    assert _rules(ptrace.rules, "kcmp") and len(_rules(ptrace.rules, "ptrace")) == 1
    old = select_rules(DEFAULT, DEFAULT_CAPS, "amd64", (4, 4))
    assert _rules(old.rules, "ptrace") == []  # Docker allows ptrace only from kernel 4.8
    arm = select_rules(DEFAULT, DEFAULT_CAPS, "arm64", (6, 1))
    assert arm.arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert _rules(arm.rules, "arm_fadvise64_64") and not _rules(arm.rules, "arch_prctl")


# -- the compiled program, run by a small classic-BPF interpreter ------------------------------

AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
ALLOW, KILL = 0x7FFF0000, 0


def ERRNO(n: int) -> int:  # noqa: N802
    return 0x00050000 | n


def run_bpf(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64,
            args: tuple[int, ...] = ()) -> int:
    """What a classic-BPF seccomp program returns for one syscall (struct seccomp_data)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = pc = 0
    mem = [0] * 16
    for _ in range(100000):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # LD
            mode = code & 0xE0
            a = struct.unpack_from("<I", data, k)[0] if mode == 0x20 else \
                mem[k] if mode == 0x60 else k
        elif cls == 0x01:  # LDX
            x = mem[k] if code & 0xE0 == 0x60 else k
        elif cls == 0x02:  # ST
            mem[k] = a
        elif cls == 0x03:  # STX
            mem[k] = x
        elif cls == 0x04:  # ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            a = {0x00: a + operand, 0x10: a - operand, 0x40: a | operand, 0x50: a & operand,
                 0x60: a << operand, 0x70: a >> operand, 0xA0: a ^ operand}[op] & 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand,
                     0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # MISC: TAX / TXA
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise AssertionError("the program does not end")


needs_libseccomp = pytest.mark.skipif(ctypes.util.find_library("seccomp") is None,
                                      reason="needs libseccomp.so.2")


@needs_libseccomp
@pytest.mark.skipif(__import__("platform").machine() != "x86_64", reason="x86_64 numbers")
def test_the_compiled_default_program_answers_like_dockers_filter() -> None:
    from nbcontainer.runtime.seccomp import compile_filter

    program = base64.b64decode(compile_filter("default", frozenset(DEFAULT_CAPS)))
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # the kernel's BPF_MAXINSNS
    clone_newns, sigchld = 0x00020000, 17
    cases = [
        (0, (), ALLOW),                                        # read
        (272, (0x10000000,), ERRNO(1)),                        # unshare(CLONE_NEWUSER)
        (165, (), ERRNO(1)), (250, (), ERRNO(1)),              # mount, keyctl
        (56, (sigchld,), ALLOW),                               # clone: a fork
        (56, (clone_newns | sigchld,), ERRNO(1)),              # clone(CLONE_NEWNS)
        (56, ((1 << 40) | sigchld,), ALLOW),                   # high word outside the mask
        (435, (), ERRNO(38)),                                  # clone3: ENOSYS, glibc falls back
        (41, (40, 1), ERRNO(1)), (41, (2, 1), ALLOW),          # socket AF_VSOCK / AF_INET
        (41, (39, 1), ALLOW), (41, (41, 1), ALLOW),            # around AF_VSOCK
        (135, (0xFFFFFFFF,), ALLOW), (135, (0x0400000,), ERRNO(1)),  # personality
        (135, (1 << 32,), ERRNO(1)),                           # 64-bit EQ: both halves count
        (101, (), ALLOW),                                      # ptrace (kernel >= 4.8)
        (312, (), ERRNO(1)),                                   # kcmp needs CAP_SYS_PTRACE
        (0x40000000 | 0, (), ALLOW),                           # x32 read: Docker allows x32
        (0x40000000 | 272, (), ERRNO(1)),                      # x32 unshare
    ]
    for nr, args, expected in cases:
        assert run_bpf(program, nr, args=args) == expected, (nr, args)
    assert run_bpf(program, 3, AUDIT_ARCH_I386) == ALLOW          # i386 read
    assert run_bpf(program, 310, AUDIT_ARCH_I386) == ERRNO(1)     # i386 unshare
    assert run_bpf(program, 0, 0xC00000B7) == KILL                # aarch64: not ours


@needs_libseccomp
def test_compiled_once_per_profile_and_capability_set() -> None:
    from nbcontainer.runtime import seccomp

    spec = make_spec([])
    first = seccomp.filter_for(spec)
    hits = seccomp.compile_filter.cache_info().hits
    assert seccomp.filter_for(make_spec(["other"])) is first
    assert seccomp.compile_filter.cache_info().hits == hits + 1
    assert seccomp.filter_for(make_spec([], cap_add=["SYS_ADMIN"])) != first
    assert seccomp.filter_for(make_spec([], privileged=True)) is None


@needs_libseccomp
def test_the_store_keeps_compiled_programs_by_what_they_depend_on(tmp_path: Path) -> None:
    """A CLI start reads the program another process compiled; a changed input (the
    capabilities, the profile) is another file; a damaged file is compiled and written anew."""
    from nbcontainer.runtime import seccomp

    caps = frozenset(DEFAULT_CAPS)
    compiled = seccomp.compile_filter("default", caps)
    assert seccomp.cached_filter("default", caps, tmp_path) == compiled
    (entry,) = (tmp_path / "seccomp").iterdir()
    assert entry.read_text() == compiled
    assert (tmp_path / "seccomp").stat().st_mode & 0o777 == 0o700
    assert entry.stat().st_mode & 0o777 == 0o600

    hits = seccomp.compile_filter.cache_info()
    assert seccomp.cached_filter("default", caps, tmp_path) == compiled
    assert seccomp.compile_filter.cache_info() == hits  # read from the file, not compiled

    more = caps | {"SYS_ADMIN"}
    assert seccomp.cached_filter("default", more, tmp_path) == seccomp.compile_filter(
        "default", more)
    custom = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]})
    assert seccomp.cached_filter(custom, caps, tmp_path) == seccomp.compile_filter(custom, caps)
    assert len(list((tmp_path / "seccomp").iterdir())) == 3

    entry.write_text("not base64 at all")
    assert seccomp.cached_filter("default", caps, tmp_path) == compiled
    assert entry.read_text() == compiled
    entry.write_bytes(base64.b64encode(b"\0" * 7))  # not an array of 8-byte sock_filters
    assert seccomp.cached_filter("default", caps, tmp_path) == compiled
    assert entry.read_text() == compiled
