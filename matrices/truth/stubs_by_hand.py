"""Hand check of CUTLASS arch-guard stubs in one cubin, from cuobjdump output only
(no orchestrator code).

usage: python matrices/truth/stubs_by_hand.py CUBIN [NAME_SUBSTRING]
(CUBIN: extracted with `cuobjdump -xelf all LIB.so`; CUO / NVDISASM_DIR as in
vllm_by_hand.py.)

For every function of the cubin (or those whose mangled name holds NAME_SUBSTRING)
it prints what `cuobjdump -sass` shows: BPT.TRAP and CALL.ABS instructions, tensor-core
instructions (any mnemonic ending in MMA: HMMA, QMMA, OMMA, HGMMA, UTCQMMA ...), and
the printf strings it loads: each immediate c[0x4][offset] operand, looked up in the
`.rel(a).nv.constant4` relocations that `cuobjdump -elf` prints (offset -> $str
symbol) and in `.nv.global.init` (the symbol's value -> the NUL-terminated string).
A function is marked STUB when it traps, calls out, has no tensor-core instruction
and loads a "without CUTE_ARCH_..." / "without targeting ... compute capability"
message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TOOLS = Path.home() / ".cache/kernel-matrix/tools"
CUO = os.environ.get("CUO", str(TOOLS / "cuobjdump/nvidia/cu13/bin/cuobjdump"))
NVDIS = os.environ.get("NVDISASM_DIR", str(TOOLS / "nvdisasm/nvidia/cu13/bin"))
GUARD = re.compile(r"without (CUTE_ARCH_\w+|targeting .{0,60}?compute capability)")


def elf_strings(cubin: str) -> dict[int, str]:
    """constant-bank-4 offset -> the string its pointer points at."""
    dump = subprocess.run([CUO, "-elf", cubin], capture_output=True, text=True).stdout
    lines = dump.splitlines()
    values: dict[str, int] = {}
    pointers: dict[int, tuple[str, int]] = {}
    init = bytearray()
    mode = ""
    for line in lines:
        fields = line.split()
        if line.startswith(".section .symtab"):
            mode = "symtab"
        elif re.match(r"\.section \.rela?\.nv\.constant4\t", line):
            mode = "rel"
        elif line.strip() == ".nv.global.init":
            mode = "init"
        elif mode == "symtab" and len(fields) >= 9 and fields[0] != "Num":
            values[fields[-1]] = int(fields[1], 16)
        elif mode == "rel" and len(fields) >= 3 and fields[0].startswith("0x"):
            pointers[int(fields[0], 16)] = (fields[1], int(fields[3], 16) if len(fields) > 3 else 0)
        elif mode == "init" and line.startswith("0x"):
            for word in fields:
                init += int(word, 16).to_bytes(4, "little")
        elif mode in ("rel", "init") or (mode == "symtab" and len(fields) < 9):
            mode = ""
    out = {}
    for offset, (symbol, addend) in pointers.items():
        if symbol.startswith("$str"):
            start = values[symbol] + addend
            out[offset] = bytes(init[start : init.index(0, start)]).decode("utf-8", "replace")
    return out


def judge(cubin: str) -> dict[str, tuple[bool, dict[str, object], list[str]]]:
    """Each function: (a stub?, its counts, the arch-guard messages it loads)."""
    strings = elf_strings(cubin)
    env = dict(os.environ, PATH=NVDIS + ":" + os.environ["PATH"])
    sass = subprocess.run([CUO, "-sass", cubin], capture_output=True, text=True, env=env).stdout
    facts: dict[str, dict[str, object]] = {}
    name = ""
    for line in sass.splitlines():
        match = re.match(r"\s+Function : (\S+)", line)
        if match:
            name = match[1]
            facts[name] = defaultdict(int, loads=set())
            continue
        match = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9_.]+)(.*?);", line)
        if not (match and name):
            continue
        mnemonic, operands = match[1], match[2]
        fact = facts[name]
        fact["instructions"] += 1  # type: ignore[operator]
        fact["traps"] += mnemonic.startswith("BPT.TRAP")  # type: ignore[operator]
        fact["calls_out"] += mnemonic.startswith("CALL.ABS")  # type: ignore[operator]
        fact["mma"] += mnemonic.split(".")[0].endswith("MMA")  # type: ignore[operator]
        for offset in re.findall(r"c\[0x4\]\[(0x[0-9a-f]+)\]", operands):
            fact["loads"].add(int(offset, 16))  # type: ignore[attr-defined]
    judged = {}
    for name, fact in facts.items():
        printed = sorted({strings[o] for o in fact["loads"] if o in strings})  # type: ignore[attr-defined]
        guards = [text for text in printed if GUARD.search(text)]
        stub = bool(fact["traps"] and fact["calls_out"] and not fact["mma"] and guards)
        judged[name] = (stub, fact, guards)
    return judged


def main() -> None:
    wanted = sys.argv[2] if len(sys.argv) > 2 else ""
    for name, (stub, fact, guards) in judge(sys.argv[1]).items():
        if wanted not in name:
            continue
        print(
            f"{'STUB ' if stub else 'real '} traps={fact['traps']} calls_out={fact['calls_out']} "
            f"mma={fact['mma']} instructions={fact['instructions']} guard_messages={len(guards)} "
            f"{name[:110]}"
        )
        for text in guards[:2]:
            print(f"       prints: {text.strip()[:120]}")


if __name__ == "__main__":
    main()
