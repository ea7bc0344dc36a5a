"""A real aarch64 library (vLLM 0.33.0's ``_flashmla_extension_C``, checked in under
tests/fixtures/aarch64): its fatbin containers are padded to 256 bytes, and the
native reader gives what cuobjdump printed for it by hand (see the README there)."""

from __future__ import annotations

import struct
from pathlib import Path

from orchestrator.read.elf import BytesBlob, read_header
from orchestrator.read.fatbin import FATBIN_SECTION
from orchestrator.read.library import read_library

LIBRARY = (
    Path(__file__).resolve().parents[2] / "fixtures" / "aarch64" / "_flashmla_extension_C.abi3.so"
)
EM_AARCH64 = 183
COMBINE = "_ZN5flash36flash_fwd_splitkv_mla_combine_kernelIN7cutlass10bfloat16_tEflLi512ELi"
SPLITKV = "_ZN5flash28flash_fwd_splitkv_mla_kernelI27Flash_fwd_kernel_traits_mlaILi576ELi64E"
METADATA = "_Z23get_mla_metadata_kernel19Mla_metadata_params"


def container_starts(data: bytes) -> list[tuple[int, int]]:
    """(offset in the section, size) of each container, walked with struct alone: a
    container header is magic, version, header size, size of what follows."""
    shoff, shnum, shstrndx = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HH", data, 0x3C),
    )
    names_at = struct.unpack_from("<Q", data, shoff + shstrndx * 64 + 0x18)[0]
    for index in range(shnum):
        name, _, _, _, offset, size, _, _, align, _ = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + index * 64
        )
        if data[names_at + name :].startswith(FATBIN_SECTION.encode() + b"\0"):
            assert align == 256
            found, position = [], 0
            while position < size:
                magic, _, header, body = struct.unpack_from("<IHHQ", data, offset + position)
                assert magic == 0xBA55ED50
                found.append((position, header + body))
                position += header + body
                position += -position % 256 if position < size else 0
            assert position == size  # nothing after the last container
            return found
    raise AssertionError("no .nv_fatbin")


def test_the_aarch64_layout_is_padded() -> None:
    data = LIBRARY.read_bytes()
    assert struct.unpack_from("<H", data, 0x12)[0] == EM_AARCH64
    assert read_header(BytesBlob(LIBRARY.name, data)).machine == EM_AARCH64
    assert container_starts(data) == [(0, 68344), (0x10B00, 10560)]
    assert 0x10B00 - 68344 == 8  # the gap: 8 zero bytes


def test_the_native_reader_gives_what_cuobjdump_printed() -> None:
    data = LIBRARY.read_bytes()
    library = read_library(BytesBlob(LIBRARY.name, data), LIBRARY.name)
    found = [
        (c.arch.name, sorted(k.mangled[: len(COMBINE)] for k in c.kernels)) for c in library.cubins
    ]
    assert found == [
        ("sm_90a", sorted([COMBINE] * 5 + [SPLITKV[: len(COMBINE)]] * 2)),
        ("sm_100f", sorted([COMBINE] * 5 + [SPLITKV[: len(COMBINE)]] * 2)),
        ("sm_90a", [METADATA[: len(COMBINE)]]),
        ("sm_100f", [METADATA[: len(COMBINE)]]),
    ]
    assert library.ptx == ()
    assert {k.mangled for k in library.cubins[2].kernels} == {METADATA}
    assert library.cubins[0].sources == ("flash_fwd_mla_fp8_sm90.cu",)
    assert library.cubins[2].sources == ("flash_fwd_mla_metadata.cu",)
