"""The probe on real binaries: libraries compiled here with CUDA 13.0 (and 13.5
once) from the sample extension's kernels, and a real vLLM wheel.

Both engines must give identical inventories; suffixes, sources and hollow
kernels must be exactly what the compiler was asked for.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion
from orchestrator.common.errors import ToolchainError
from orchestrator.probe import probe
from orchestrator.read.cuobjdump import probe_stream
from orchestrator.read.inventory import Inventory, Library
from orchestrator.read.sass import NON_WORKING_SASS_MNEMONICS
from orchestrator.toolchains.cuda import cache_root, cuobjdump, nvdisasm, provision

pytestmark = pytest.mark.integration

CSRC = Path(__file__).resolve().parents[2] / "examples" / "sample_ext" / "csrc"
SOURCES = ["fp8_guarded_kernels.cu", "scaled_mm_c3x_sm120.cu", "nvfp4_quant_kernels.cu"]
GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_100f,code=sm_100f",
    "-gencode=arch=compute_120a,code=sm_120a",
    "-gencode=arch=compute_121a,code=sm_121a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_80,code=compute_80",
    "-gencode=arch=compute_120,code=compute_120",
]
EXPECTED_CUBINS = ["sm_90a", "sm_100f", "sm_120a", "sm_121a", "sm_80"]


def build(cuda: CudaVersion, out: Path, *extra: str) -> Path:
    toolchain = provision(cuda)
    library = out / "lib.so"
    command = [
        str(toolchain.nvcc), "-shared", "-Xcompiler", "-fPIC", f"-I{CSRC}",
        "-DSAMPLE_EXT_SM120_EXACT_GUARD", *GENCODE, *extra, "-o", str(library),
        *(str(CSRC / s) for s in SOURCES),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=1800)
    return library


@pytest.fixture(scope="session")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once per session: default compression and everything compressed."""
    root = tmp_path_factory.mktemp("probe-libs")
    (root / "default").mkdir()
    (root / "compressed").mkdir()
    return {
        "default": build(CudaVersion(13, 0), root / "default"),
        "compressed": build(
            CudaVersion(13, 0),
            root / "compressed",
            "--compress-mode=size",
            "-Xfatbin=-compress-all",
        ),
    }


def by_arch(library: Library) -> dict[str, dict[str, tuple[int, bool]]]:
    """arch -> {kernel short name: (instructions, hollow)}."""
    out: dict[str, dict[str, tuple[int, bool]]] = {}
    for code in library.code_objects():
        for kernel in code.kernels:
            short = kernel.name.split("::")[-1].split("(")[0]
            out.setdefault(code.arch.name, {})[short] = (kernel.instructions, kernel.hollow)
    return out


@pytest.mark.parametrize("variant", ["default", "compressed"])
def test_engines_agree_and_see_exact_archs_sources_and_hollow_kernels(
    libraries: dict[str, Path], variant: str
) -> None:
    native = probe([libraries[variant]])
    real = probe([libraries[variant]], engine="cuobjdump")
    assert native.to_json() == real.to_json()
    (library,) = native.libraries
    assert sorted({c.arch.name for c in library.cubins}) == sorted(EXPECTED_CUBINS)
    assert sorted({p.arch.name for p in library.ptx}) == ["compute_120", "compute_80"]
    # nvcc -shared adds a device-link fatbin: the same targets again, without kernels
    linked = [c.arch.name for c in library.cubins if not c.kernels]
    assert sorted(linked) == sorted(EXPECTED_CUBINS)
    for code in library.code_objects():
        if not code.kernels:
            continue
        assert len(code.sources) == 1, code
        assert code.sources[0] in SOURCES
        for kernel in code.kernels:
            assert kernel.name.startswith("(anonymous namespace)::")
    kernels = by_arch(library)
    # fp8_guarded: body compiled out below 8.9, in the sm_80 cubin and compute_80 PTX
    assert kernels["sm_80"]["fp8_guarded_kernel"][1] is True
    assert kernels["compute_80"]["fp8_guarded_kernel"] == (0, True)
    for arch in ("sm_90a", "sm_100f", "sm_120a", "sm_121a", "compute_120"):
        assert kernels[arch]["fp8_guarded_kernel"][1] is False, arch
    # scaled_mm_sm120 with the exact guard: real on 12.0, a trap everywhere else
    assert kernels["sm_120a"]["scaled_mm_sm120_kernel"][1] is False
    for arch in ("sm_121a", "sm_90a", "sm_100f", "sm_80"):
        assert kernels[arch]["scaled_mm_sm120_kernel"][1] is True, arch
    # nvfp4 is really there, and works, wherever it was compiled
    for arch in EXPECTED_CUBINS:
        instructions, hollow = kernels[arch]["nvfp4_quant_kernel"]
        assert instructions > 20 and not hollow, arch


def test_sass_opcode_table_matches_the_disassembler(libraries: dict[str, Path]) -> None:
    """Our opcode-based count equals a count of cuobjdump -sass mnemonics."""
    env = {"NVDISASM_PATH": str(nvdisasm().parent), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(cuobjdump()), "-sass", str(libraries["default"])],
        capture_output=True, text=True, check=True, env=env, timeout=600,
    ).stdout  # fmt: skip
    counted: dict[tuple[str, str], int] = {}
    arch = function = ""
    instruction = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")
    for line in out.splitlines():
        if line.startswith("arch = "):
            arch = line[7:].strip()
        elif "Function : " in line:
            function = line.split("Function : ")[1].strip()
            counted[(arch, function)] = 0
        elif (match := instruction.match(line)) and match[1] not in NON_WORKING_SASS_MNEMONICS:
            counted[(arch, function)] += 1
    ours = {
        (c.arch.name, k.mangled): k.instructions
        for c in probe([libraries["default"]]).libraries[0].cubins
        for k in c.kernels
    }
    assert ours and ours == counted


def test_newest_cuda_13_5(tmp_path: Path) -> None:
    try:
        library = build(CudaVersion(13, 5), tmp_path)
    except ToolchainError as exc:
        pytest.skip(f"CUDA 13.5 toolchain could not be provisioned: {exc}")
    native = probe([library])
    assert native.to_json() == probe([library], engine="cuobjdump").to_json()
    assert sorted({c.arch.name for c in native.libraries[0].cubins}) == sorted(EXPECTED_CUBINS)


# --- a real vLLM wheel ------------------------------------------------------------------

WHEEL_DIR = cache_root() / "wheels"


@pytest.fixture(scope="session")
def vllm_wheel() -> Path:
    found = sorted(WHEEL_DIR.glob("vllm-*.whl"))
    if not found:
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "vllm", "-d", str(WHEEL_DIR)],
            capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        found = sorted(WHEEL_DIR.glob("vllm-*.whl"))
        if result.returncode != 0 or not found:
            pytest.skip(f"could not download the vLLM wheel: {result.stderr.strip()[-300:]}")
    return found[-1]


@pytest.fixture(scope="session")
def vllm_inventory(vllm_wheel: Path) -> Inventory:
    return probe([vllm_wheel])


def test_vllm_wheel_suffixes_and_guarded_kernels(vllm_inventory: Inventory) -> None:
    archs = {c.arch.name for lib in vllm_inventory.libraries for c in lib.cubins}
    assert {"sm_90a", "sm_100f", "sm_120f", "sm_80", "sm_90"} <= archs
    assert any(not lib.has_device_code for lib in vllm_inventory.libraries)  # cumem_allocator
    # activation_kernel<..., true, true> uses 256-bit loads only from Blackwell on: its
    # body is compiled out (#if __CUDA_ARCH__) in the sm_75 .. sm_90 cubins: hollow
    wanted = "_ZN4vllm17activation_kernelIN3c104HalfEXadL_ZNS_15gelu_new_kernelIS2_EET_RKS4_EELb1ELb1EEEvPS4_PS5_i"
    hollow: dict[str, set[bool]] = {}
    for lib in vllm_inventory.libraries:
        for code in lib.cubins:
            for kernel in code.kernels:
                if kernel.mangled == wanted:
                    hollow.setdefault(code.arch.name, set()).add(kernel.hollow)
    for arch in ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90"):
        assert hollow[arch] == {True}, arch
    for arch in ("sm_100", "sm_120"):
        assert hollow[arch] == {False}, arch


@pytest.mark.parametrize("member", ["_qutlass_C.abi3.so", "_flashmla_C.abi3.so"])
def test_vllm_wheel_engines_agree(vllm_wheel: Path, vllm_inventory: Inventory, member: str) -> None:
    (native,) = [lib for lib in vllm_inventory.libraries if lib.path.endswith("/" + member)]
    with zipfile.ZipFile(vllm_wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/" + member))
        with zf.open(name) as stream:
            real = probe_stream(stream, native.path)
    assert native.to_json() == real.to_json()
    assert any(c.arch.variant.value for c in native.cubins)  # a/f suffixes are there


# --- aarch64: containers padded to 256 bytes -------------------------------------------

AARCH64_LIBRARY = (
    Path(__file__).resolve().parents[1] / "fixtures" / "aarch64" / "_flashmla_extension_C.abi3.so"
)


def test_engines_agree_on_a_real_aarch64_library() -> None:
    """vLLM 0.33.0's aarch64 _flashmla_extension_C (checked in): both engines give the
    same inventory (matrices/truth/engines_agree.py does every library of a wheel)."""
    native = probe([AARCH64_LIBRARY])
    assert native.to_json() == probe([AARCH64_LIBRARY], engine="cuobjdump").to_json()
    assert [c.arch.name for c in native.libraries[0].cubins] == [
        "sm_90a",
        "sm_100f",
        "sm_90a",
        "sm_100f",
    ]


@pytest.mark.parametrize("member", ["_qutlass_C.abi3.so"])  # (a sample: CI time)
def test_vllm_aarch64_wheel_engines_agree(member: str) -> None:
    from vllm_wheel_cache import vllm_wheel

    wheel, why = vllm_wheel("0.33.0", "aarch64")
    if wheel is None:
        pytest.skip(why)
    (native,) = [
        lib
        for lib in probe([wheel], only=lambda name: name.endswith("/" + member)).libraries
        if lib.path.endswith("/" + member)
    ]
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/" + member))
        with zf.open(name) as stream:
            real = probe_stream(stream, native.path)
    assert native.to_json() == real.to_json()
    assert native.cubins and all(c.arch.variant.value for c in native.cubins)  # 90a / 100f


def test_an_older_cuobjdump_s_numeric_symbol_table_is_read(tmp_path: Path) -> None:
    """cuobjdump 13.2 prints symbol tables with numbers (``index value size info other
    shndx name``) where 13.5 prints names; both must give the native inventory (before,
    13.2's kernels were silently dropped: every family "missing")."""
    target = cache_root() / "tools" / "cuobjdump-13.2"
    found = sorted(target.glob("nvidia/cu*/bin/cuobjdump"))
    if not found:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(target), "nvidia-cuda-cuobjdump==13.2.*"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        found = sorted(target.glob("nvidia/cu*/bin/cuobjdump"))
        if done.returncode != 0 or not found:
            pytest.skip(f"cuobjdump 13.2 not installable: {done.stderr.strip()[-300:]}")
    version = subprocess.run([str(found[-1]), "--version"], capture_output=True, text=True)
    assert "release 13.2" in version.stdout
    dump = subprocess.run(
        [str(found[-1]), "-elf", str(AARCH64_LIBRARY)], capture_output=True, text=True
    )
    assert " index " in dump.stdout and "0x12" in dump.stdout  # the numeric form, really
    old = probe([AARCH64_LIBRARY], engine="cuobjdump", cuobjdump=found[-1])
    assert old.to_json() == probe([AARCH64_LIBRARY]).to_json()
    assert sum(len(c.kernels) for c in old.libraries[0].cubins) == 16
