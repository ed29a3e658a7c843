"""Which device nodes a container may open: runc's default allowlist, on v1 and v2.

Without a device policy, root in a container with CAP_MKNOD (Docker's default set has it) can
``mknod`` the host's disk and read or write it raw. runc's answer, which Docker uses: every
device is denied, then the few harmless character devices (``null``, ``zero``, ``full``,
``random``, ``urandom``, ``tty``, ``console``, ``ptmx``, the pty slaves) may be opened.
``--device`` adds one more; ``--privileged`` allows all.

One step stricter than runc: runc also allows ``mknod`` of *any* node (``c *:* m``,
``b *:* m``). Here that is denied: a node made in a ``-v`` volume lands on the host's
filesystem, where any host user who can reach that directory could open it (a world-writable
node of the host's disk). Only the allowed devices may be created.

cgroup v1 has a ``devices`` controller (``devices.deny`` / ``devices.allow``); cgroup v2 has
none: the policy is a small eBPF program of type ``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to
the container's cgroup, which the kernel runs at every open/mknod of a device node and which
answers 1 (allow) or 0 (deny). :func:`device_program` generates it (runc's devicefilter does
the same), :func:`nbcontainer._libc.bpf_prog_load` loads it.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Sequence

from nbcontainer._records import record
from nbcontainer.errors import UsageError

WILDCARD = -1


@record(frozen=True)
class DeviceRule:
    """Allow ``access`` (from ``rwm``) on devices of ``kind`` (``c``, ``b`` or ``a`` = both)
    with these numbers (``WILDCARD`` = any)."""

    kind: str
    major: int
    minor: int
    access: str

    def v1_line(self) -> str:
        """The line for ``devices.allow`` (``c 1:3 rwm``, ``a *:* rwm``)."""
        def number(n: int) -> str:
            return "*" if n == WILDCARD else str(n)

        return f"{self.kind} {number(self.major)}:{number(self.minor)} {self.access}"


#: runc's default list (libcontainer/specconv AllowedDevices), without tun/tap and without
#: the mknod-anything rules (see above).
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule("c", 1, 3, "rwm"),    # /dev/null
    DeviceRule("c", 1, 5, "rwm"),    # /dev/zero
    DeviceRule("c", 1, 7, "rwm"),    # /dev/full
    DeviceRule("c", 1, 8, "rwm"),    # /dev/random
    DeviceRule("c", 1, 9, "rwm"),    # /dev/urandom
    DeviceRule("c", 5, 0, "rwm"),    # /dev/tty
    DeviceRule("c", 5, 1, "rwm"),    # /dev/console
    DeviceRule("c", 5, 2, "rwm"),    # /dev/ptmx
    DeviceRule("c", 136, WILDCARD, "rwm"),  # /dev/pts/*
)
ALLOW_ALL: tuple[DeviceRule, ...] = (DeviceRule("a", WILDCARD, WILDCARD, "rwm"),)


def rule_for(host_path: str, access: str) -> DeviceRule:
    """The rule for one ``--device``: the host node's type and numbers (stat(2))."""
    try:
        st = os.stat(host_path)
    except OSError as err:
        raise UsageError(f"--device: cannot use {host_path}: {err.strerror}; give an existing "
                         "device node, e.g. /dev/fuse") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise UsageError(f"--device: {host_path} is not a device node; give one under /dev")
    return DeviceRule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), access)


# -- cgroup v2: the eBPF program -------------------------------------------------------------

# <linux/bpf.h>: struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where
# access_type is (access << 16) | type.
_DEVCG_TYPE = {"b": 1, "c": 2}
_DEVCG_ACC = {"m": 1, "r": 2, "w": 4}

# Opcodes (<linux/bpf_common.h>, <linux/bpf.h>).
_LDX_MEM_W = 0x61    # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_ALU32_RSH_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_ALU32_MOV_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_ALU64_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JMP_JNE_K = 0x55    # BPF_JMP | BPF_JNE | BPF_K
_EXIT = 0x95         # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: u8 code, u8 dst:4|src:4, s16 off, s32 imm."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_mask(access: str) -> int:
    mask = 0
    for letter in access:
        mask |= _DEVCG_ACC[letter]
    return mask


def device_program(rules: Sequence[DeviceRule]) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program allowing exactly ``rules`` (default: deny).

    R2 = type, R3 = requested access, R4 = major, R5 = minor; per rule, each mismatch jumps to
    the next rule; a request whose access bits are all allowed returns 1.
    """
    head = [
        _insn(_LDX_MEM_W, 2, 1, 0),          # r2 = ctx->access_type
        _insn(_ALU32_AND_K, 2, imm=0xFFFF),  # r2 &= 0xffff (the type)
        _insn(_LDX_MEM_W, 3, 1, 0),          # r3 = ctx->access_type
        _insn(_ALU32_RSH_K, 3, imm=16),      # r3 >>= 16 (the access)
        _insn(_LDX_MEM_W, 4, 1, 4),          # r4 = ctx->major
        _insn(_LDX_MEM_W, 5, 1, 8),          # r5 = ctx->minor
    ]
    body: list[bytes] = []
    for rule in rules:
        checks: list[tuple[int, int, int]] = []  # (code, dst, imm) of a "jump to next" test
        if rule.kind != "a":
            checks.append((_JMP_JNE_K, 2, _DEVCG_TYPE[rule.kind]))
        if rule.major != WILDCARD:
            checks.append((_JMP_JNE_K, 4, rule.major))
        if rule.minor != WILDCARD:
            checks.append((_JMP_JNE_K, 5, rule.minor))
        # r1 = access & ~allowed; allowed when nothing is left
        block_len = len(checks) + 2 + 1 + 2  # checks, mov+and, jne, mov r0 + exit
        insns: list[bytes] = []
        for i, (code, dst, imm) in enumerate(checks):
            insns.append(_insn(code, dst, off=block_len - i - 1, imm=imm))
        insns.append(_insn(_ALU32_MOV_X, 1, 3))
        insns.append(_insn(_ALU32_AND_K, 1, imm=~_access_mask(rule.access) & 0xFFFF))
        insns.append(_insn(_JMP_JNE_K, 1, off=2, imm=0))
        insns.append(_insn(_ALU64_MOV_K, 0, imm=1))
        insns.append(_insn(_EXIT))
        assert len(insns) == block_len
        body += insns
    tail = [_insn(_ALU64_MOV_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(head + body + tail)


def run_program(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """Interpret the generated program for one request (the tests check the generator
    against the rules with this; the kernel runs the real thing)."""
    ctx = ((_access_mask(access) << 16) | _DEVCG_TYPE[kind], major, minor)
    regs = [0] * 11
    insns = [struct.unpack("<BBhi", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc = 0
    while True:
        code, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        if code == _LDX_MEM_W:
            regs[dst] = ctx[off // 4]
        elif code == _ALU32_AND_K:
            regs[dst] = regs[dst] & (imm & 0xFFFFFFFF)
        elif code == _ALU32_RSH_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == _ALU32_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == _ALU64_MOV_K:
            regs[dst] = imm
        elif code == _JMP_JNE_K:
            if regs[dst] != (imm & 0xFFFFFFFF):
                pc += off
        elif code == _EXIT:
            return regs[0]
        else:  # pragma: no cover - the generator emits nothing else
            raise ValueError(f"opcode {code:#x}")
        pc += 1
