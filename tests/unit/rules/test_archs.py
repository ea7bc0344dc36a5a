"""Architecture rules: spelling, toolkit support, device compatibility, driver choice."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.archs import (
    DEVICES,
    KNOWN_CCS,
    KNOWN_CUDA_VERSIONS,
    ArchSpec,
    ComputeCapability,
    CudaVersion,
    Target,
    Variant,
    cmake_architectures,
    compilable_targets,
    device_name,
    format_arch_list,
    gencode_flags,
    parse_arch_list,
    requested_devices,
    select_image,
    unsupported_reason,
    variants_of,
)
from orchestrator.common.errors import ArchSpecError

CC = ComputeCapability.parse


def t(name: str) -> Target:
    return Target.parse(name)


# --- spelling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "sass", "ptx"),
    [
        ("9.0a", "9.0a", True, False),
        ("10.0f", "10.0f", True, False),
        ("12.1a", "12.1a", True, False),
        ("8.9", "8.9", True, False),
        ("9.0+PTX", "9.0+PTX", True, True),
        ("8.0+ptx", "8.0+PTX", True, True),
        ("sm_121a", "12.1a", True, False),
        ("SM_90", "9.0", True, False),
        ("121a", "12.1a", True, False),
        ("90", "9.0", True, False),
        ("compute_90a", "compute_90a", False, True),
        ("compute_120", "compute_120", False, True),
        ("  10.3f ", "10.3f", True, False),
    ],
)
def test_parse_every_spelling(text: str, canonical: str, sass: bool, ptx: bool) -> None:
    spec = ArchSpec.parse(text)
    assert str(spec) == canonical
    assert (spec.sass, spec.ptx) == (sass, ptx)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9.5", "unknown architecture '9.5'"),
        ("sm_95a", "unknown architecture 'sm_95a'"),
        ("8.9a", "arch-specific ('a') variants exist only from 9.0"),
        ("9.0f", "family ('f') variants exist only from 10.0"),
        ("9.0x", "malformed architecture '9.0x'"),
        ("ampere", "malformed architecture 'ampere'"),
        ("", "malformed architecture ''"),
        ("12.1a+", "malformed architecture '12.1a+'"),
    ],
)
def test_bad_spellings_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ArchSpecError, match=re.escape(message)):
        ArchSpec.parse(text)


def test_arch_lists_accept_torch_separators_and_drop_duplicates() -> None:
    specs = parse_arch_list("9.0a;10.0f 12.1a,sm_121a\t12.0a")
    assert format_arch_list(specs) == "9.0a;10.0f;12.1a;12.0a"
    assert parse_arch_list(["9.0a", "10.0f;12.1a"]) == parse_arch_list("9.0a;10.0f;12.1a")


@pytest.mark.parametrize("text", ["", " ; ", ",,"])
def test_empty_arch_list_is_an_error(text: str) -> None:
    with pytest.raises(ArchSpecError, match="empty architecture list"):
        parse_arch_list(text)


def test_gencode_and_cmake_values() -> None:
    specs = parse_arch_list("9.0a;10.0f;8.0+PTX;compute_120")
    assert gencode_flags(specs) == [
        "-gencode", "arch=compute_90a,code=sm_90a",
        "-gencode", "arch=compute_100f,code=sm_100f",
        "-gencode", "arch=compute_80,code=sm_80",
        "-gencode", "arch=compute_80,code=compute_80",
        "-gencode", "arch=compute_120,code=compute_120",
    ]  # fmt: skip
    assert cmake_architectures(specs) == "90a-real;100f-real;80;120-virtual"


def test_requested_devices_are_the_entries_capabilities() -> None:
    assert [str(d) for d in requested_devices(parse_arch_list("12.1a;9.0a;12.1f"))] == [
        "9.0",
        "12.1",
    ]


# --- property tests: round trips ------------------------------------------------------

known_ccs = st.sampled_from(sorted(KNOWN_CCS))


@st.composite
def arch_specs(draw: st.DrawFn) -> ArchSpec:
    cc = draw(known_ccs)
    variant = draw(st.sampled_from(sorted(variants_of(cc), key=lambda v: v.value)))
    sass, ptx = draw(st.sampled_from([(True, False), (True, True), (False, True)]))
    return ArchSpec(cc, variant, sass=sass, ptx=ptx)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    cc = draw(known_ccs)
    variant = draw(st.sampled_from(sorted(variants_of(cc), key=lambda v: v.value)))
    return Target(cc, variant, ptx=draw(st.booleans()))


@given(arch_specs())
def test_format_then_parse_is_identity(spec: ArchSpec) -> None:
    assert ArchSpec.parse(str(spec)) == spec


@given(arch_specs())
def test_sm_spellings_parse_to_the_same_spec(spec: ArchSpec) -> None:
    if spec.sass and not spec.ptx:
        suffix = spec.variant.value
        assert ArchSpec.parse(f"sm_{spec.cc.sm}{suffix}") == spec
        assert ArchSpec.parse(f"{spec.cc.sm}{suffix}") == spec


@given(st.lists(arch_specs(), min_size=1, max_size=6))
def test_list_format_then_parse_is_identity_without_duplicates(specs: list[ArchSpec]) -> None:
    unique = list(dict.fromkeys(specs))
    assert list(parse_arch_list(format_arch_list(unique))) == unique


@given(targets())
def test_target_name_round_trip(target: Target) -> None:
    assert Target.parse(target.name) == target


# --- property tests: compatibility laws ----------------------------------------------


@given(targets(), known_ccs)
def test_arch_specific_runs_only_on_its_own_capability(
    target: Target, device: ComputeCapability
) -> None:
    if target.variant is Variant.ARCH_SPECIFIC:
        assert target.runs_on(device) == (device == target.cc)


@given(targets(), known_ccs)
def test_cubins_never_cross_a_major_version(target: Target, device: ComputeCapability) -> None:
    if not target.ptx and target.runs_on(device):
        assert device.major == target.cc.major
        assert device.minor >= target.cc.minor


@given(targets(), known_ccs)
def test_nothing_runs_on_an_older_device(target: Target, device: ComputeCapability) -> None:
    if device < target.cc:
        assert not target.runs_on(device)


@given(targets())
def test_every_target_runs_on_its_own_capability(target: Target) -> None:
    assert target.runs_on(target.cc)


@given(targets(), known_ccs)
def test_family_is_a_subset_of_plain_and_a_superset_of_arch_specific(
    target: Target, device: ComputeCapability
) -> None:
    if target.cc.sm < 100:
        return
    plain = Target(target.cc, Variant.PLAIN, target.ptx)
    family = Target(target.cc, Variant.FAMILY, target.ptx)
    specific = Target(target.cc, Variant.ARCH_SPECIFIC, target.ptx)
    if specific.runs_on(device):
        assert family.runs_on(device)
    if family.runs_on(device):
        assert plain.runs_on(device)


@given(targets(), known_ccs)
def test_plain_ptx_runs_wherever_the_plain_cubin_does(
    target: Target, device: ComputeCapability
) -> None:
    cubin = Target(target.cc, Variant.PLAIN)
    ptx = Target(target.cc, Variant.PLAIN, ptx=True)
    if cubin.runs_on(device):
        assert ptx.runs_on(device)


@given(st.lists(targets(), max_size=8), known_ccs)
def test_selected_image_runs_and_prefers_cubins(
    images: list[Target], device: ComputeCapability
) -> None:
    chosen = select_image(images, device)
    runnable = [i for i in images if i.runs_on(device)]
    assert (chosen is None) == (not runnable)
    if chosen is not None:
        assert chosen.runs_on(device)
        if any(not i.ptx for i in runnable):
            assert not chosen.ptx


# --- the exact rules of DESIGN.md -----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "device", "runs"),
    [
        # the vLLM 37725 case: an `a` cubin for 12.0 does not serve a 12.1 device ...
        ("sm_120a", "12.1", False),
        # ... an `f` cubin for 12.0 does, and so does a plain one
        ("sm_120f", "12.1", True),
        ("sm_120", "12.1", True),
        ("sm_121a", "12.1", True),
        ("sm_121f", "12.0", False),
        ("sm_100f", "10.0", True),
        ("sm_100f", "10.3", True),
        ("sm_100f", "11.0", False),
        ("sm_100f", "12.0", False),
        ("sm_100a", "10.3", False),
        ("sm_90a", "9.0", True),
        ("sm_90a", "10.0", False),
        ("sm_80", "8.6", True),
        ("sm_80", "8.9", True),
        ("sm_86", "8.0", False),
        ("sm_80", "9.0", False),
        ("compute_80", "9.0", True),
        ("compute_80", "12.1", True),
        ("compute_90", "8.9", False),
        ("compute_90a", "9.0", True),
        ("compute_90a", "10.0", False),
        ("compute_100f", "10.3", True),
        ("compute_100f", "12.0", False),
    ],
)
def test_design_compatibility_rules(target: str, device: str, runs: bool) -> None:
    assert t(target).runs_on(CC(device)) is runs


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        # Measured on an H100 (CC 9.0, driver 580, CUDA 13.0) -- DESIGN.md
        ("sm_80 sm_90", "sm_90"),
        ("sm_80 sm_90a", "sm_90a"),
        ("sm_90 sm_90a", "sm_90a"),
        ("sm_80", None),
        ("sm_86", None),
        ("sm_75 sm_80", None),
        ("sm_120a", None),
        ("compute_80", "compute_80"),
        ("sm_80 compute_80", "compute_80"),
        ("compute_90a", "compute_90a"),
        ("sm_100f compute_80", "compute_80"),
        ("compute_80 compute_90", "compute_90"),
    ],
)
def test_driver_selection_matches_h100_measurements(images: str, expected: str | None) -> None:
    chosen = select_image([t(n) for n in images.split()], CC("9.0"))
    assert (chosen.name if chosen else None) == expected


def test_closest_cubin_of_the_same_family_wins() -> None:
    images = [t("sm_100f"), t("sm_103a")]
    assert select_image(images, CC("10.3")) == t("sm_103a")
    assert select_image(images, CC("10.0")) == t("sm_100f")
    assert select_image([t("sm_120f"), t("sm_121a")], CC("12.1")) == t("sm_121a")
    assert select_image([t("sm_120a"), t("sm_120f")], CC("12.1")) == t("sm_120f")


# --- toolkits -------------------------------------------------------------------------


def test_family_targets_need_cuda_12_9() -> None:
    assert unsupported_reason(CudaVersion(12, 8), t("sm_100f")) == (
        "CUDA 12.8 cannot compile sm_100f: family ('f') targets are new in CUDA 12.9"
    )
    assert unsupported_reason(CudaVersion(12, 9), t("sm_100f")) is None


@pytest.mark.parametrize(
    ("cuda", "target", "reason"),
    [
        ("12.6", "sm_100a", "sm_100 is new in CUDA 12.8"),
        ("12.8", "sm_121a", "sm_121 is new in CUDA 12.9"),
        ("12.8", "sm_103a", "sm_103 is new in CUDA 12.9"),
        ("13.0", "sm_70", "CUDA 13.0 dropped sm_70 (Volta); use CUDA 12.x"),
        ("13.0", "sm_101a", "CUDA 13.0 renamed sm_101 to sm_110; ask for 11.0"),
        ("12.9", "sm_110f", "sm_110 is new in CUDA 13.0"),
        ("13.3", "sm_107a", "sm_107 is new in CUDA 13.4"),
    ],
)
def test_unsupported_reasons(cuda: str, target: str, reason: str) -> None:
    message = unsupported_reason(CudaVersion.parse(cuda), t(target))
    assert message is not None and message.endswith(reason)


def test_supported_targets_of_the_card_versions() -> None:
    card = {"sm_90a", "sm_100f", "sm_120a", "sm_121a", "sm_121f"}
    assert card <= compilable_targets(CudaVersion(12, 9))
    assert card <= compilable_targets(CudaVersion(13, 0))
    assert compilable_targets(CudaVersion(12, 8)) & card == {"sm_90a", "sm_120a"}
    assert "sm_75" in compilable_targets(CudaVersion(13, 0))
    assert "sm_72" not in compilable_targets(CudaVersion(13, 0))


def test_cuda_versions() -> None:
    assert CudaVersion.parse("12.9") < CudaVersion.parse("13.0")
    assert CudaVersion(12, 7) not in KNOWN_CUDA_VERSIONS
    with pytest.raises(ArchSpecError, match="malformed CUDA version '13'"):
        CudaVersion.parse("13")
    with pytest.raises(ArchSpecError, match=re.escape("unknown CUDA version '12.7'")):
        compilable_targets(CudaVersion(12, 7))


def test_devices_cover_the_card() -> None:
    names = {str(d.cc): d.products for d in DEVICES}
    for cc in ("7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1"):
        assert cc in names
    assert "H100" in names["9.0"] and "B200" in names["10.0"] and "B300" in names["10.3"]
    assert "Thor" in names["11.0"] and "RTX 50" in names["12.0"] and "DGX Spark" in names["12.1"]
    assert device_name(CC("12.1")) == "12.1 (DGX Spark (GB10))"


def test_device_capability_rejects_variants() -> None:
    with pytest.raises(ArchSpecError, match="not a device compute capability"):
        ComputeCapability.parse("12.1a")
