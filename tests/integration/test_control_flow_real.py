"""Control flow read from real cubins: the native decoder (bit fields, in
``kernelcode``) against the real disassembler (``cuobjdump -sass``, read by mnemonic in
``cuobjdump.control_op_of``), instruction by instruction, and the two engines'
hollow verdicts kernel by kernel, with zero disagreements.

Cubins: kernels written for it (``data/control_flow_kernels.cu``: printf + trap stubs,
guarded traps, assert, switch tables, direct and indirect calls) built with nvcc 13.0
for sm_75 .. sm_121 (plain, a and f targets); and a real vLLM wheel: the cubins of ``_C_stable_libtorch`` that
hold CUTLASS arch-guard stubs (machete's SM90 kernels in sm_75 .. sm_90 cubins, an SM120
grouped GEMM in sm_100f), and ``_qutlass_C``. The truth for the built kernels was
established by reading their source; for vLLM by reading the disassembly.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_wheel_cache import vllm_wheel

from orchestrator.archs import CudaVersion, Target
from orchestrator.cuobjdump import control_op_of, probe_file
from orchestrator.inventory import Library
from orchestrator.kernelcode import SASS_INSTRUCTION_BYTES, _decode_control
from orchestrator.probe import probe
from orchestrator.toolchain import cuobjdump, nvdisasm, provision

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).parent / "data" / "control_flow_kernels.cu"
TARGETS = ["75", "80", "86", "89", "90", "90a", "100", "103f", "110", "120", "120a", "121a"]
HOLLOW = {"k_trap", "k_loop_trap"}
WORKING = {"k_cond_trap", "k_brkpt", "k_assert", "k_switch", "k_indirect", "k_call"}

_LINE = re.compile(
    r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P(?:T|\d))?\s*([A-Z][A-Z0-9_.]*)\s*([^;]*);"
    r"\s*/\* 0x([0-9a-f]{16}) \*/"
)
_SECOND = re.compile(r"^\s*/\* 0x([0-9a-f]{16}) \*/")


def disassembly(path: Path) -> Iterator[tuple[int, str, list[tuple[int, str, str, str, int, int]]]]:
    """(sm, function, instructions) from ``cuobjdump -sass``, each instruction with
    both of its 64-bit words."""
    env = dict(os.environ, NVDISASM_PATH=str(nvdisasm().parent))
    text = subprocess.run(
        [str(cuobjdump()), "-sass", str(path)], capture_output=True, text=True, env=env, check=True
    ).stdout
    sm, name, rows, pending = 0, "", [], None
    function_sm = 0  # the cubin of the function being read (sm changes before it ends)
    for line in text.splitlines():
        if "code for sm_" in line:
            sm = Target.parse(line.split()[-1]).cc.sm
        elif "Function : " in line:
            if name:
                yield function_sm, name, rows
            name, rows, function_sm = line.split("Function : ")[1].strip(), [], sm
        elif match := _LINE.match(line):
            pending = match
        elif (second := _SECOND.match(line)) and pending is not None:
            address, guard, mnemonic, operands, word0 = pending.groups()
            rows.append(
                (
                    int(address, 16),
                    guard or "",
                    mnemonic,
                    operands.strip(),
                    int(word0, 16),
                    int(second.group(1), 16),
                )
            )
            pending = None
    if name:
        yield function_sm, name, rows


def decoder_disagreements(path: Path) -> tuple[int, list[str]]:
    """Instructions compared, and those whose control meaning differs between the
    bit fields and the disassembler's text."""
    compared, wrong = 0, []
    for sm, name, rows in disassembly(path):
        for address, guard, mnemonic, operands, word0, word1 in rows:
            index = address // SASS_INSTRUCTION_BYTES
            native = _decode_control(word0, word1, index, sm)
            text = control_op_of(guard, mnemonic, operands)
            compared += 1
            if native != text:
                wrong.append(
                    f"sm_{sm} {name[:60]} {address:#x} {guard} {mnemonic} {operands}: {native} vs {text}"
                )
    return compared, wrong


def trap_verdicts(library: Library) -> dict[tuple[str, str], str]:
    return {(c.arch.name, k.mangled): k.traps for c in library.cubins for k in c.kernels}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    toolchain = provision(CudaVersion(13, 0))
    out = tmp_path_factory.mktemp("control-flow") / "lib.so"
    gencode = [f"-gencode=arch=compute_{t},code=sm_{t}" for t in TARGETS]
    command = [
        str(toolchain.nvcc),
        "-shared",
        "-Xcompiler",
        "-fPIC",
        *gencode,
        "-o",
        str(out),
        str(SOURCE),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=1800)
    return out


def test_decoder_agrees_with_the_disassembler_on_every_instruction(built: Path) -> None:
    compared, wrong = decoder_disagreements(built)
    assert compared > 1000
    assert wrong == []


def test_engines_agree_and_match_the_source_on_every_sass_generation(built: Path) -> None:
    native = probe([built]).libraries[0]
    real = probe_file(built, native.path)
    assert native.to_json() == real.to_json()
    seen: dict[str, set[str]] = {}
    for code in native.cubins:
        for kernel in code.kernels:
            seen.setdefault(kernel.name.split("(")[0], set()).add(code.arch.name)
            if kernel.name.split("(")[0] in HOLLOW:
                assert kernel.hollow and kernel.traps.startswith("every path traps"), code.arch
                assert kernel.instructions > 8  # the old count alone would call it present
            else:  # a way out exists (some are so short that the count calls them hollow)
                assert kernel.traps == "", (code.arch, kernel.name)
    assert set(seen) == HOLLOW | WORKING
    assert all(len(archs) == len(TARGETS) for archs in seen.values())


# --- a real vLLM wheel ------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cached, why = vllm_wheel("0.33.0")
    if cached is None:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("vllm")
    found = {}
    with zipfile.ZipFile(cached) as wheel:
        for member in ("vllm/_C_stable_libtorch.abi3.so", "vllm/_qutlass_C.abi3.so"):
            found[Path(member).name] = Path(wheel.extract(member, out))
    return found


def test_vllm_stub_cubins_decoded_and_judged_alike(
    vllm_libraries: dict[str, Path], tmp_path: Path
) -> None:
    """The cubins of _C_stable_libtorch that hold arch-guard stubs (the smallest of
    each arch, so that the disassembler runs in reasonable time), extracted by
    cuobjdump: every instruction decoded alike, every kernel judged alike."""
    library = vllm_libraries["_C_stable_libtorch.abi3.so"]
    native = probe([library]).libraries[0]
    listed = subprocess.run(
        [str(cuobjdump()), "--list-elf", str(library)], capture_output=True, text=True, check=True
    ).stdout.split()
    names = [word for word in listed if word.endswith(".cubin")]
    assert len(names) == len(native.cubins)
    chosen: dict[str, tuple[int, int]] = {}  # arch -> (size, index)
    for index, code in enumerate(native.cubins):
        if any(k.traps for k in code.kernels):
            size = sum(k.size for k in code.kernels)
            if code.arch.name not in chosen or size < chosen[code.arch.name][0]:
                chosen[code.arch.name] = (size, index)
    # by hand (cuobjdump -sass): machete's SM90 kernels are printf + trap stubs in
    # every cubin but sm_90a; an SM120 grouped NVFP4 GEMM is one in sm_100f
    assert {"sm_75", "sm_80", "sm_89", "sm_90", "sm_100f"} <= set(chosen)
    assert "sm_90a" not in chosen
    stubs = 0
    for arch, (_, index) in sorted(chosen.items()):
        subprocess.run(
            [str(cuobjdump()), "-xelf", names[index], str(library)],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
        cubin = tmp_path / names[index]
        compared, wrong = decoder_disagreements(cubin)
        assert compared > 0 and wrong == [], arch
        text_judged = text_verdicts(cubin)
        for kernel in native.cubins[index].kernels:
            assert kernel.traps == text_judged[kernel.mangled], (arch, kernel.name)
            stubs += bool(kernel.traps)
    assert stubs >= len(chosen)


def text_verdicts(cubin: Path) -> dict[str, str]:
    """Each function's evidence, judged from the disassembly alone."""
    from orchestrator.kernelcode import ControlOp, trap_evidence

    verdicts = {}
    for _, name, rows in disassembly(cubin):
        ops: dict[int, ControlOp] = {}
        for address, guard, mnemonic, operands, _, _ in rows:
            op = control_op_of(guard, mnemonic, operands)
            if op is not None:
                ops[address // SASS_INSTRUCTION_BYTES] = op
        evidence = trap_evidence(ops, rows[-1][0] // SASS_INSTRUCTION_BYTES + 1)
        verdicts[name] = str(evidence) if evidence else ""
    return verdicts


def test_vllm_qutlass_engines_agree(vllm_libraries: dict[str, Path]) -> None:
    library = vllm_libraries["_qutlass_C.abi3.so"]
    native = probe([library]).libraries[0]
    assert trap_verdicts(native) == trap_verdicts(probe_file(library, native.path))
    assert native.to_json() == probe_file(library, native.path).to_json()
