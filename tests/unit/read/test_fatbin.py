"""The native fatbin reader on hand-made binaries: layout, suffixes, compression,
kernels, sources, hollowness, and every kind of bad input."""

from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

import pytest
from synth import (
    EM_AARCH64,
    EM_CUDA,
    KIND_ELF,
    KIND_PTX,
    MANGLED_HOLLOW,
    MANGLED_WORK,
    CubinSpec,
    ElfSection,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_elf,
    build_shared_object,
    hollow_body,
    padded,
    ptx_module,
    trap_body,
    working_body,
)

from orchestrator.common.errors import EXIT_USAGE, InputFileError
from orchestrator.probe import probe
from orchestrator.read.elf import BytesBlob
from orchestrator.read.library import READING_SWITCH_INTERVAL, EntryDecoder, read_library


def library(data: bytes, name: str = "lib.so"):  # type: ignore[no-untyped-def]
    return read_library(BytesBlob(name, data), name)


def sample_cubin(sm: int = 100) -> bytes:
    return build_cubin(
        CubinSpec(
            [KernelSpec(MANGLED_WORK, working_body(40)), KernelSpec(MANGLED_HOLLOW, hollow_body())],
            other_symbols=["_ZN59_INTERNAL_0badcafe_23_scaled_mm_entry_stub_cu_12345678_99991xE"],
        ),
        sm,
    )


def test_every_suffix_and_kind_is_read_from_the_entry_flags() -> None:
    container = build_container(
        [
            EntrySpec(KIND_ELF, 90, sample_cubin(90), variant="a"),
            EntrySpec(KIND_ELF, 100, sample_cubin(100), variant="f", header_size=112),
            EntrySpec(KIND_ELF, 100, sample_cubin(100)),
            EntrySpec(KIND_ELF, 121, sample_cubin(121), variant="a", header_size=96),
            EntrySpec(KIND_PTX, 120, ptx_module("sm_120", {"_Z1kPf": "ret;"}), header_size=80),
            EntrySpec(KIND_PTX, 100, ptx_module("sm_100a", {"_Z1kPf": "ret;"}), variant="a"),
        ]
    )
    lib = library(build_shared_object([container]))
    assert [c.arch.name for c in lib.cubins] == ["sm_90a", "sm_100f", "sm_100", "sm_121a"]
    assert [p.arch.name for p in lib.ptx] == ["compute_120", "compute_100a"]


def test_kernels_sizes_instructions_hollowness_and_sources() -> None:
    lib = library(
        build_shared_object([build_container([EntrySpec(KIND_ELF, 90, sample_cubin(90), "a")])])
    )
    (cubin,) = lib.cubins
    by_name = {k.mangled: k for k in cubin.kernels}
    work, hollow = by_name[MANGLED_WORK], by_name[MANGLED_HOLLOW]
    assert work.name == "(anonymous namespace)::quant_kernel(float*)"
    assert (work.size, work.instructions, work.hollow) == (len(working_body(40)), 40, False)
    assert (hollow.size, hollow.instructions, hollow.hollow) == (256, 1, True)
    # every symbol carries its file, kernels or not (an OBJECT names a third file)
    assert cubin.sources == (
        "fp8_guarded_kernels.cu",
        "nvfp4_quant_kernels.cu",
        "scaled_mm_entry_stub.cu",
    )


def test_trap_kernel_is_hollow_and_non_entry_functions_are_no_kernels() -> None:
    cubin = build_cubin(
        CubinSpec(
            [
                KernelSpec("_Z4trapv", trap_body()),
                KernelSpec("_Z6helperv", working_body(20), entry=False),
            ]
        )
    )
    lib = library(build_shared_object([build_container([EntrySpec(KIND_ELF, 120, cubin, "a")])]))
    assert [(k.mangled, k.instructions, k.hollow) for k in lib.cubins[0].kernels] == [
        ("_Z4trapv", 1, True)
    ]


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_compressed_payloads(compression: str) -> None:
    ptx = ptx_module(
        "sm_80", {"_Z4workPf": "ld.param.u64 %rd1, [x];\nst.global.u32 [%rd1], 1;\nret;"}
    )
    container = build_container(
        [
            EntrySpec(KIND_ELF, 80, sample_cubin(80), compression=compression),
            EntrySpec(KIND_PTX, 80, ptx, compression=compression),
        ]
    )
    lib = library(build_shared_object([container]))
    assert [k.instructions for k in lib.cubins[0].kernels] == [1, 40]  # by mangled name
    assert [(k.mangled, k.instructions, k.hollow) for k in lib.ptx[0].kernels] == [
        ("_Z4workPf", 2, True)
    ]


def test_the_reading_thread_lowers_the_switch_interval_until_the_decoder_closes() -> None:
    """zstd entries come back from the reading thread without waiting 5 ms for the
    GIL each; the interpreter's own interval is back once the reading is done."""
    data = build_shared_object(
        [build_container([EntrySpec(KIND_ELF, 80, sample_cubin(80), compression="zstd")] * 3)]
    )
    before = sys.getswitchinterval()
    with EntryDecoder(1) as decoder:
        lib = read_library(BytesBlob("lib.so", data), "lib.so", decoder)
        assert sys.getswitchinterval() == min(before, READING_SWITCH_INTERVAL)
        with EntryDecoder(1) as beside:  # (as run's cells, read in threads)
            read_library(BytesBlob("lib.so", data), "lib.so", beside)
        assert sys.getswitchinterval() == min(before, READING_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before
    assert [len(code.kernels) for code in lib.cubins] == [2, 2, 2]


def test_several_containers_back_to_back_and_device_link_duplicates() -> None:
    """nvcc -shared: each cubin twice, once without kernels (device link)."""
    empty = build_cubin(CubinSpec())
    link = build_container([EntrySpec(KIND_ELF, 90, empty, "a")])
    own = build_container([EntrySpec(KIND_ELF, 90, sample_cubin(90), "a")])
    lib = library(build_shared_object([link, own]))
    assert [(c.arch.name, len(c.kernels)) for c in lib.cubins] == [("sm_90a", 0), ("sm_90a", 2)]


def three_containers() -> list[bytes]:
    """Containers of 3 sizes that are multiples of 8 but not of 256 (as real ones)."""
    return [
        build_container([EntrySpec(KIND_ELF, 90, sample_cubin(90), "a")]),
        build_container([EntrySpec(KIND_PTX, 80, ptx_module("sm_80", {"_Z1kPf": "ret;"}))]),
        build_container([EntrySpec(KIND_ELF, 100, sample_cubin(100), "f", compression="zstd")]),
    ]


def inventory_of(data: bytes) -> list[tuple[str, tuple[str, ...]]]:
    lib = library(data)
    return [
        (o.arch.name, tuple(sorted(k.mangled for k in o.kernels))) for o in (*lib.cubins, *lib.ptx)
    ]


def test_aarch64_layout_containers_padded_to_the_section_alignment() -> None:
    """aarch64 linkers start each container on a 256-byte boundary, zeros between
    (vLLM's and sgl-kernel's aarch64 wheels): the same inventory as back to back."""
    containers = three_containers()
    gaps = [-len(c) % 256 for c in containers[:-1]]
    assert all(gaps) and all(g % 8 == 0 for g in gaps)  # the layout really has gaps
    packed = build_shared_object(containers)
    aarch64 = build_shared_object(containers, align=256, machine=EM_AARCH64)
    assert len(aarch64) > len(packed)
    expected = [
        ("sm_90a", (MANGLED_HOLLOW, MANGLED_WORK)),
        ("sm_100f", (MANGLED_HOLLOW, MANGLED_WORK)),
        ("compute_80", ("_Z1kPf",)),
    ]
    assert inventory_of(packed) == inventory_of(aarch64) == expected
    # Back to back in a section that says 256 (a linker that did not pad): still read.
    unpadded = build_shared_object(containers, align=8)
    unpadded = patch_section_alignment(unpadded, 256)
    assert inventory_of(unpadded) == expected


def patch_section_alignment(data: bytes, align: int) -> bytes:
    """``data`` with the sh_addralign of its ``.nv_fatbin`` section set to ``align``."""
    shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], 64, data[0x3C]
    start = fatbin_offset(data)
    for index in range(shnum):
        header = shoff + index * shentsize
        if struct.unpack_from("<Q", data, header + 0x18)[0] == start:
            return patch(data, header + 0x30, struct.pack("<Q", align))
    raise AssertionError("no .nv_fatbin section header")


def test_padding_between_containers_must_be_zeros_and_shorter_than_the_alignment() -> None:
    containers = three_containers()
    data = build_shared_object(containers, align=256, machine=EM_AARCH64)
    gap = fatbin_offset(data) + len(containers[0])  # the first byte of the first gap
    expect_error(patch(data, gap, b"\x01"), "bad magic 0x00000001")
    expect_error(patch(data, gap + 7, b"\xff"), "bad magic")
    # A whole boundary of zeros more is no padding: zeros where a container must start.
    first = containers[0] + bytes(-len(containers[0]) % 256)
    section = first + bytes(256) + padded(containers[1:], 256)
    aligned_far = build_elf(EM_AARCH64, [ElfSection(".nv_fatbin", 1, section, flags=2, align=256)])
    expect_error(
        aligned_far, f"bad magic 0x00000000 at offset {fatbin_offset(aligned_far) + len(first)}"
    )
    # Truncated and overrunning containers stay errors in the padded layout.
    expect_error(data[: gap + 300], "")
    last = fatbin_offset(data) + len(padded([*containers[:2], b""], 256))  # the third's start
    expect_error(
        patch(data, last + 8, struct.pack("<Q", 1 << 20)), "truncated or corrupt fatbin container"
    )


def test_hostile_section_alignments_do_not_make_padding() -> None:
    """A section alignment that is not a power of two from 8 to 4096 allows no more
    than the 8-byte padding entries already have."""
    containers = three_containers()
    data = build_shared_object(containers, align=256, machine=EM_AARCH64)
    for align in (1 << 20, 24, 0):
        expect_error(patch_section_alignment(data, align), "bad magic 0x00000000")


def test_library_without_device_code_is_listed_empty() -> None:
    lib = library(build_shared_object([], with_fatbin=False))
    assert (lib.cubins, lib.ptx, lib.has_device_code) == ((), (), False)
    assert library(build_shared_object([b""])).cubins == ()


def test_pre_volta_cubins_count_every_instruction() -> None:
    cubin = build_cubin(CubinSpec([KernelSpec("_Z1kv", bytes(64))]), sm=75)
    lib = library(build_shared_object([build_container([EntrySpec(KIND_ELF, 75, cubin)])]))
    assert lib.cubins[0].kernels[0].instructions == 4  # all zero words: opcode 0 works


# --- bad input ------------------------------------------------------------------------


def good_library() -> bytes:
    return build_shared_object(
        [
            build_container(
                [
                    EntrySpec(KIND_ELF, 100, sample_cubin(), "f", compression="zstd"),
                    EntrySpec(
                        KIND_PTX, 100, ptx_module("sm_100", {"_Z1kv": "ret;"}), compression="lz4"
                    ),
                ]
            )
        ]
    )


def fatbin_offset(data: bytes) -> int:
    return data.index(struct.pack("<I", 0xBA55ED50))


def patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def expect_error(data: bytes, *fragments: str) -> None:
    with pytest.raises(InputFileError) as info:
        library(data)
    assert info.value.exit_code == EXIT_USAGE
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("lib.so")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_not_elf_and_truncated_files() -> None:
    expect_error(b"hello world, not an ELF file at all" * 3, "not an ELF file")
    expect_error(b"\x7fELF", "truncated")
    data = good_library()
    for cut in (10, 70, len(data) // 2, len(data) - 10):
        expect_error(data[:cut], "")
    expect_error(patch(data, 4, b"\x01"), "unsupported ELF class")


def test_unknown_fatbin_versions_and_kinds() -> None:
    data = good_library()
    base = fatbin_offset(data)
    expect_error(patch(data, base + 4, struct.pack("<H", 7)), "container version 7", "unknown")
    entry = base + 16
    expect_error(patch(data, entry + 2, struct.pack("<H", 0x0202)), "unknown entry version 0x0202")
    expect_error(patch(data, entry, struct.pack("<H", 9)), "unknown entry kind 9")
    expect_error(patch(data, entry + 28, struct.pack("<I", 95)), "unknown architecture sm_95")
    expect_error(patch(data, entry + 40, struct.pack("<Q", 0x01308011)), "both 'a' and 'f'")
    expect_error(patch(data, base, b"\xde\xad\xbe\xef"), "bad magic")


def test_corrupt_compressed_payload_and_sizes() -> None:
    data = good_library()
    entry = fatbin_offset(data) + 16
    payload = entry + 64
    expect_error(patch(data, payload + 8, b"\xff" * 32), "corrupt zstd payload")
    expect_error(patch(data, entry + 56, struct.pack("<Q", 5)), "")
    expect_error(patch(data, entry + 8, struct.pack("<Q", 1 << 40)), "overruns")
    expect_error(patch(data, entry + 4, struct.pack("<I", 12)), "header size 12")


def test_corrupt_cubin_inside_a_good_fatbin() -> None:
    bad_cubin = build_elf(EM_CUDA, [ElfSection(".symtab", 2, bytes(30), link=99, entsize=24)])
    data = build_shared_object([build_container([EntrySpec(KIND_ELF, 90, bad_cubin)])])
    expect_error(data, "bad symbol table")
    wrong_machine = build_elf(62, [])
    expect_error(
        build_shared_object([build_container([EntrySpec(KIND_ELF, 90, wrong_machine)])]),
        "not a CUDA cubin",
    )


def test_entry_header_payload_sizes_are_bounded() -> None:
    # Found by the fuzz test: a huge uncompressed size made zstd overflow; a corrupt
    # size field must never make the reader allocate gigabytes.
    data = good_library()
    entry = fatbin_offset(data) + 16
    (compressed,) = struct.unpack_from("<I", data, entry + 16)
    beyond_zstd = compressed * (1 << 15) + 4097  # more than any zstd frame can expand
    for size in (1 << 63, 1 << 62, 3 << 30, (1 << 31) + 5, beyond_zstd):
        expect_error(patch(data, entry + 56, struct.pack("<Q", size)), "corrupt compressed sizes")
    # Within what zstd can do, but not what this payload holds: caught after decompressing.
    expect_error(patch(data, entry + 56, struct.pack("<Q", 10_000_000)), "corrupt")


def test_highly_compressible_cubins_are_read() -> None:
    """Found by the bad-input catalogue: nvcc 13.0 compresses a cubin holding an
    initialised 16 MiB ``__device__`` array about 7800:1; a fixed 1024:1 bound called
    that real library corrupt. The bound is now each format's own maximum."""
    cubin = build_cubin(CubinSpec([KernelSpec("_Z1kv", working_body(3))], data=bytes(16 << 20)))
    data = build_shared_object(
        [
            build_container(
                [
                    EntrySpec(KIND_ELF, 100, cubin, "a", compression="zstd"),
                    EntrySpec(KIND_ELF, 90, cubin, "a", compression="lz4"),
                ]
            )
        ]
    )
    entry = fatbin_offset(data) + 16
    compressed, _ = struct.unpack_from("<IQ", data, entry + 16)
    assert (16 << 20) / compressed > 5000  # far beyond the old 1024:1 bound
    lib = library(data)
    assert [c.arch.name for c in lib.cubins] == ["sm_100a", "sm_90a"]
    assert all(len(c.kernels) == 1 for c in lib.cubins)


# --- wheels, directories, files --------------------------------------------------------


def test_probe_reads_wheels_in_place_and_directories(tmp_path: Path) -> None:
    so = good_library()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/_C.abi3.so", so)
        zf.writestr("pkg/libx.so.12", build_shared_object([], with_fatbin=False))
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/README.so.txt", "not a library")
    inventory = probe([wheel])
    assert [lib.path for lib in inventory.libraries] == [
        f"{wheel}!pkg/_C.abi3.so",
        f"{wheel}!pkg/libx.so.12",
    ]
    assert inventory.libraries[0].cubins[0].arch.name == "sm_100f"
    direct = tmp_path / "lib" / "_C.abi3.so"
    direct.parent.mkdir()
    direct.write_bytes(so)
    (direct.parent / "_C.so").symlink_to(direct.name)  # the same file: probed once
    from_dir = probe([direct.parent])
    assert len(from_dir.libraries) == 1
    assert from_dir.libraries[0].to_json()["cubins"] == inventory.libraries[0].to_json()["cubins"]


@pytest.mark.parametrize("member", ["../evil.so", "/abs/evil.so", "pkg/../../evil.so"])
def test_zip_slip_wheels_are_refused(tmp_path: Path, member: str) -> None:
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, b"x")
    with pytest.raises(InputFileError, match="zip-slip"):
        probe([wheel])


def test_corrupt_wheel_member(tmp_path: Path) -> None:
    wheel = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/_C.so", good_library())
    raw = bytearray(wheel.read_bytes())
    start = raw.index(b"pkg/_C.so") + len("pkg/_C.so") + 200
    raw[start : start + 64] = b"\x00" * 64
    wheel.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match=r"_C\.so"):
        probe([wheel])
    (tmp_path / "notzip.whl").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match=r"notzip\.whl"):
        probe([tmp_path / "notzip.whl"])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        probe([tmp_path / "nope.so"])
    (tmp_path / "empty.so").write_bytes(b"")
    with pytest.raises(InputFileError, match="empty file"):
        probe([tmp_path / "empty.so"])
