"""Control flow read from real cubins: the native decoder (bit fields, in
``read.sass``) against the real disassembler (``cuobjdump -sass``, read by mnemonic in
``cuobjdump.control_op_of``), instruction by instruction, and the two engines'
hollow verdicts kernel by kernel, with zero disagreements.

Cubins: kernels written for it (``data/control_flow_kernels.cu``: printf + trap stubs,
guarded traps, assert, switch tables, direct and indirect calls) built with nvcc 13.0
for sm_75 .. sm_121 (plain, a and f targets); and a real vLLM wheel: the cubins of ``_C_stable_libtorch`` that
hold CUTLASS arch-guard stubs (machete's SM90 kernels in sm_75 .. sm_90 cubins, an SM120
grouped GEMM in sm_100f), and ``_qutlass_C``; and vLLM 0.25.0's arch-guard stubs that
a path can leave without trapping (FlashMLA's SM90 kernels in sm_100f, the SM100
grouped NVFP4 GEMMs in sm_120f), judged by the message they load, against
``matrices/truth/stubs_by_hand.py`` (cuobjdump text only). The truth for the built
kernels was established by reading their source; for vLLM by reading the disassembly.
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
from orchestrator.probe import probe
from orchestrator.read.cuobjdump import control_op_of, probe_file
from orchestrator.read.inventory import Library
from orchestrator.read.sass import SASS_INSTRUCTION_BYTES, _decode_control
from orchestrator.toolchains.cuda import cuobjdump, nvdisasm, provision

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


def wheel_members(
    factory: pytest.TempPathFactory, release: str, members: tuple[str, ...]
) -> dict[str, Path]:
    """Members of a cached vLLM wheel, extracted, by file name."""
    cached, why = vllm_wheel(release)
    if cached is None:
        pytest.skip(why)
    out = factory.mktemp(f"vllm-{release}")
    with zipfile.ZipFile(cached) as wheel:
        return {Path(member).name: Path(wheel.extract(member, out)) for member in members}


@pytest.fixture(scope="module")
def vllm_libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    members = ("vllm/_C_stable_libtorch.abi3.so", "vllm/_qutlass_C.abi3.so")
    return wheel_members(tmp_path_factory, "0.33.0", members)


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
    """Each function's evidence, judged from cuobjdump's text alone: its control
    flow, tensor-core mnemonics and c[0x4] operands from the disassembly, the strings
    those point at from ``cuobjdump -elf`` (matrices/truth/stubs_by_hand.py)."""
    from orchestrator.read.kernelcode import kernel_trap_evidence
    from orchestrator.read.sass import ControlOp

    by_hand = _by_hand()
    guards = {
        offset: text.strip()
        for offset, text in by_hand.elf_strings(str(cubin)).items()  # type: ignore[attr-defined]
        if by_hand.GUARD.search(text)  # type: ignore[attr-defined]
    }
    verdicts = {}
    for _, name, rows in disassembly(cubin):
        ops: dict[int, ControlOp] = {}
        loads: set[int] = set()
        tensor_core = 0
        for address, guard, mnemonic, operands, _, _ in rows:
            op = control_op_of(guard, mnemonic, operands)
            if op is not None:
                ops[address // SASS_INSTRUCTION_BYTES] = op
            tensor_core += mnemonic.split(".")[0].endswith("MMA")
            loads |= {int(o, 16) for o in re.findall(r"c\[0x4\]\[(0x[0-9a-f]+)\]", operands)}
        count = rows[-1][0] // SASS_INSTRUCTION_BYTES + 1
        evidence = kernel_trap_evidence(
            ops, count, tensor_core, lambda loads=loads: frozenset(loads), lambda: guards
        )
        verdicts[name] = str(evidence) if evidence else ""
    return verdicts


def test_vllm_qutlass_engines_agree(vllm_libraries: dict[str, Path]) -> None:
    library = vllm_libraries["_qutlass_C.abi3.so"]
    native = probe([library]).libraries[0]
    assert trap_verdicts(native) == trap_verdicts(probe_file(library, native.path))
    assert native.to_json() == probe_file(library, native.path).to_json()


# --- CUTLASS arch-guard stubs that a path can leave without trapping ------------------

STUB = "CUTLASS arch-guard stub: "


def _by_hand() -> object:
    """matrices/truth/stubs_by_hand.py: the stub judgement from cuobjdump's text alone."""
    import importlib.util

    path = Path(__file__).parents[2] / "matrices" / "truth" / "stubs_by_hand.py"
    spec = importlib.util.spec_from_file_location("stubs_by_hand", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vllm_0_25_libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    members = ("vllm/_C_stable_libtorch.abi3.so", "vllm/_flashmla_extension_C.abi3.so")
    return wheel_members(tmp_path_factory, "0.25.0", members)


def test_a_stub_is_judged_by_the_arch_guard_message_it_loads(
    vllm_0_25_libraries: dict[str, Path],
) -> None:
    """FlashMLA in vLLM 0.25.0: its SM90 split-KV kernels, compiled into the sm_100f
    cubin, print "Attempting to use MMA_64x256x32_F32E4M3E4M3_RS_TN without
    CUTE_ARCH_MMA_SM90A_ENABLED" and have no wgmma (by hand: stubs_by_hand.py); the
    combine kernels beside them also printf + trap, an assertion's, and are real.
    Both engines judge every kernel alike."""
    library = vllm_0_25_libraries["_flashmla_extension_C.abi3.so"]
    native = probe([library]).libraries[0]
    assert native.to_json() == probe_file(library, native.path).to_json()
    judged = {
        (code.arch.name, kernel.name): kernel.traps
        for code in native.cubins
        for kernel in code.kernels
    }
    stubs = {key for key, traps in judged.items() if traps.startswith(STUB)}
    assert len(stubs) == 2
    assert all(arch == "sm_100f" and "flash_fwd_splitkv_mla_kernel" in name for arch, name in stubs)
    assert all(
        "without CUTE_ARCH_MMA_SM90A_ENABLED" in judged[key] and "0 tensor-core" in judged[key]
        for key in stubs
    )
    combine = [k for k in judged if "combine_kernel" in k[1] and k[0] == "sm_100f"]
    assert len(combine) == 5 and all(judged[k] == "" for k in combine)


def test_the_sm100_grouped_gemms_in_an_sm120f_cubin_are_stubs(
    vllm_0_25_libraries: dict[str, Path], tmp_path: Path
) -> None:
    """vLLM 0.25.0's nvfp4 MoE in the sm_120f cubin: the two SM100 grouped GEMMs keep
    TMA loads and stores (a path exits without trapping) but no tensor-core
    instruction, and load "Attempting to use SM100_MMA_MXF4_SS ... without
    CUTE_ARCH_TCGEN05_MXF4NVF4_MMA_ENABLED"; the SM120 one has 64 OMMA. The native
    verdict of every kernel of that cubin equals the one read off cuobjdump's text."""
    library = vllm_0_25_libraries["_C_stable_libtorch.abi3.so"]
    native = probe([library]).libraries[0]
    (index,) = [
        i
        for i, code in enumerate(native.cubins)
        if code.arch.name == "sm_120f" and "nvfp4_blockwise_moe_kernel.cu" in code.sources
    ]
    listed = subprocess.run(
        [str(cuobjdump()), "--list-elf", str(library)], capture_output=True, text=True, check=True
    ).stdout.split()
    names = [word for word in listed if word.endswith(".cubin")]
    subprocess.run(
        [str(cuobjdump()), "-xelf", names[index], str(library)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    by_hand = _by_hand().judge(str(tmp_path / names[index]))  # type: ignore[attr-defined]
    kernels = native.cubins[index].kernels
    assert {k.mangled: k.traps.startswith(STUB) for k in kernels} == {
        name: stub for name, (stub, _, _) in by_hand.items()
    }
    stubs = [k for k in kernels if k.hollow]
    assert len(stubs) == 2 and all("Sm100ArrayTmaUmma" in k.mangled for k in stubs)
    assert all("without CUTE_ARCH_TCGEN05" in k.traps for k in stubs)
    (sm120,) = [k for k in kernels if "Sm120ArrayTma" in k.mangled]
    assert not sm120.hollow and by_hand[sm120.mangled][1]["mma"] == 64
