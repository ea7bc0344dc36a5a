"""GPU architecture rules: the one module that knows them.

Three things live here and nowhere else:

* **spelling** -- parsing every way users write an architecture (``9.0a``,
  ``sm_121a``, ``121a``, ``compute_90a``, ``9.0+PTX``) into an :class:`ArchSpec`,
  and turning specs into nvcc ``-gencode`` flags and CMake architecture values;
* **toolkits** -- which targets each CUDA version can compile, and why not;
* **devices** -- which compiled code object (:class:`Target`) runs on which
  device, and which one the driver really loads when several could.

The compatibility rules (see DESIGN.md), with ``X.Y`` a device's compute capability:

=================  ==========================================================
``sm_XYa`` cubin   runs only on X.Y
``sm_XYf`` cubin   runs on the same major, minor >= Y   (sm_100f: 10.0, 10.3)
``sm_XY`` cubin    runs on the same major, minor >= Y   (sm_80: 8.0 .. 8.9)
``compute_XY``     PTX, JIT-compiled on any device >= X.Y
``compute_XYa``    PTX, only on X.Y
``compute_XYf``    PTX, same major, minor >= Y (family-portable PTX)
=================  ==========================================================
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import total_ordering

from orchestrator.common.errors import ArchSpecError


class Variant(enum.Enum):
    """The suffix of an architecture: none, ``a`` (arch-specific), ``f`` (family)."""

    PLAIN = ""
    ARCH_SPECIFIC = "a"
    FAMILY = "f"

    @property
    def specificity(self) -> int:
        """Driver preference at the same SM: ``a`` before ``f`` before plain."""
        return {"": 0, "f": 1, "a": 2}[self.value]


@total_ordering
@dataclass(frozen=True)
class ComputeCapability:
    """A device's compute capability, e.g. ``9.0`` (H100) or ``12.1`` (DGX Spark).

    >>> ComputeCapability.parse("12.1").sm
    121
    >>> str(ComputeCapability.from_sm(90))
    '9.0'
    """

    major: int
    minor: int

    @classmethod
    def from_sm(cls, sm: int) -> ComputeCapability:
        return cls(sm // 10, sm % 10)

    @classmethod
    def parse(cls, text: str) -> ComputeCapability:
        """Parse ``9.0``, ``90``, ``sm_90``; a variant or +PTX is an error here."""
        spec = ArchSpec.parse(text)
        if spec.variant is not Variant.PLAIN or spec.ptx:
            raise ArchSpecError(f"'{text}' is not a device compute capability (write it like 9.0)")
        return spec.cc

    @property
    def sm(self) -> int:
        return self.major * 10 + self.minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ComputeCapability):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)


# Every compute capability that NVIDIA's compilers know (CUDA 12.0 .. 13.5), with
# its architecture's name. Anything else is a typo and rejected.
ARCHITECTURE_NAMES: dict[int, str] = {
    50: "Maxwell", 52: "Maxwell", 53: "Maxwell (Jetson Nano)",
    60: "Pascal", 61: "Pascal", 62: "Pascal (Jetson TX2)",
    70: "Volta", 72: "Volta (Jetson Xavier)", 75: "Turing",
    80: "Ampere", 86: "Ampere", 87: "Ampere (Jetson Orin)", 88: "Ampere (CUDA 13 target)",
    89: "Ada Lovelace", 90: "Hopper",
    100: "Blackwell", 101: "Blackwell (Thor, named sm_110 from CUDA 13.0)", 103: "Blackwell Ultra",
    107: "Blackwell (CUDA 13.4 target)", 110: "Blackwell (Thor)",
    120: "Blackwell (consumer/workstation)", 121: "Blackwell (GB10)",
}  # fmt: skip

KNOWN_CCS: frozenset[ComputeCapability] = frozenset(
    ComputeCapability.from_sm(sm) for sm in ARCHITECTURE_NAMES
)


def variants_of(cc: ComputeCapability) -> frozenset[Variant]:
    """Which suffixes exist for a compute capability.

    ``a`` exists from Hopper (9.0) on, ``f`` from Blackwell (10.0) on.

    >>> sorted(v.value for v in variants_of(ComputeCapability(9, 0)))
    ['', 'a']
    >>> sorted(v.value for v in variants_of(ComputeCapability(8, 9)))
    ['']
    """
    variants = {Variant.PLAIN}
    if cc.sm >= 90:
        variants.add(Variant.ARCH_SPECIFIC)
    if cc.sm >= 100:
        variants.add(Variant.FAMILY)
    return frozenset(variants)


@dataclass(frozen=True)
class Device:
    """A real GPU generation that users deploy on."""

    cc: ComputeCapability
    products: str


# The devices a build engineer asks about. Order: by compute capability.
DEVICES: tuple[Device, ...] = tuple(
    Device(ComputeCapability.from_sm(sm), products)
    for sm, products in (
        (75, "T4, RTX 20xx"),
        (80, "A100, A30"),
        (86, "A10, A40, RTX 30xx"),
        (87, "Jetson Orin"),
        (89, "L4, L40S, RTX 40xx"),
        (90, "H100, H200, GH200"),
        (100, "B200, GB200"),
        (103, "B300, GB300"),
        (110, "Jetson Thor"),
        (120, "RTX 50xx, RTX PRO 6000"),
        (121, "DGX Spark (GB10)"),
    )
)


def device_name(cc: ComputeCapability) -> str:
    """``9.0 (H100, H200, GH200)``; an unlisted capability is shown alone."""
    for device in DEVICES:
        if device.cc == cc:
            return f"{cc} ({device.products})"
    return str(cc)


@dataclass(frozen=True)
class Target:
    """One compiled code object: a cubin (``sm_90a``) or PTX (``compute_120``).

    >>> Target.parse("sm_100f").runs_on(ComputeCapability(10, 3))
    True
    >>> Target.parse("sm_120a").runs_on(ComputeCapability(12, 1))
    False
    >>> Target.parse("compute_80").runs_on(ComputeCapability(12, 1))
    True
    """

    cc: ComputeCapability
    variant: Variant = Variant.PLAIN
    ptx: bool = False

    # [0-9], not \d: \d also matches other scripts' digits (full-width "９０").
    _NAME = re.compile(r"^(sm|compute)_([0-9]{2,3})([af]?)$")

    @classmethod
    def parse(cls, name: str) -> Target:
        match = cls._NAME.match(name.strip())
        if not match:
            raise ArchSpecError(f"'{name}' is not a target name like sm_90a or compute_120")
        kind, sm, suffix = match.groups()
        cc = _known_cc(int(sm), name)
        variant = Variant(suffix)
        _check_variant(cc, variant, name)
        return cls(cc, variant, ptx=kind == "compute")

    @property
    def name(self) -> str:
        return f"{'compute' if self.ptx else 'sm'}_{self.cc.sm}{self.variant.value}"

    def __str__(self) -> str:
        return self.name

    def runs_on(self, device: ComputeCapability) -> bool:
        """Whether this code object can execute (cubin) or be JIT-compiled (PTX) on
        ``device``."""
        if self.variant is Variant.ARCH_SPECIFIC:
            return device == self.cc
        if self.variant is Variant.FAMILY or not self.ptx:
            return device.major == self.cc.major and device.minor >= self.cc.minor
        return device >= self.cc

    def sort_key(self) -> tuple[int, int, int]:
        return (self.cc.sm, self.variant.specificity, int(self.ptx))


def select_image(targets: Iterable[Target], device: ComputeCapability) -> Target | None:
    """The code object the driver really loads on ``device``, or None (no kernel image).

    A cubin always wins over PTX; among cubins the closest SM wins (the exact SM
    before an older one of the same major), and at the same SM the arch-specific
    one (measured on H100: sm_90 + sm_90a loads sm_90a). PTX is used only when no
    cubin fits; then the newest PTX that the device can JIT.

    >>> sm = [Target.parse(n) for n in ("sm_80", "sm_90", "sm_90a")]
    >>> select_image(sm, ComputeCapability(9, 0)).name
    'sm_90a'
    >>> select_image([Target.parse("sm_80"), Target.parse("compute_80")],
    ...              ComputeCapability(9, 0)).name
    'compute_80'
    >>> select_image([Target.parse("sm_120a")], ComputeCapability(12, 1)) is None
    True
    """
    fitting = [t for t in targets if t.runs_on(device)]
    for want_ptx in (False, True):
        candidates = [t for t in fitting if t.ptx == want_ptx]
        if candidates:
            return max(candidates, key=Target.sort_key)
    return None


@dataclass(frozen=True)
class ArchSpec:
    """One entry of an arch list as users write it.

    ``sass`` -- a cubin is compiled; ``ptx`` -- PTX is embedded for JIT.

    >>> ArchSpec.parse("sm_121a")
    ArchSpec(cc=ComputeCapability(major=12, minor=1), variant=<Variant.ARCH_SPECIFIC: 'a'>, sass=True, ptx=False)
    >>> str(ArchSpec.parse("9.0+PTX")), str(ArchSpec.parse("121f")), str(ArchSpec.parse("compute_90a"))
    ('9.0+PTX', '12.1f', 'compute_90a')
    """

    cc: ComputeCapability
    variant: Variant = Variant.PLAIN
    sass: bool = True
    ptx: bool = False

    # ASCII only: \d and int() also take other scripts' digits ("９.０" would be 9.0).
    _DOTTED = re.compile(r"^([0-9]{1,2})\.([0-9])([af]?)(\+ptx)?$", re.IGNORECASE | re.ASCII)
    _SM = re.compile(r"^(?:sm_)?([0-9]{2,3})([af]?)$", re.IGNORECASE | re.ASCII)
    _COMPUTE = re.compile(r"^compute_([0-9]{2,3})([af]?)$", re.IGNORECASE | re.ASCII)

    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        raw = text.strip()
        if match := cls._DOTTED.match(raw):
            major, minor, suffix, plus_ptx = match.groups()
            cc = _known_cc(int(major) * 10 + int(minor), raw)
            sass, ptx = True, plus_ptx is not None
        elif match := cls._SM.match(raw):
            cc, suffix, sass, ptx = _known_cc(int(match[1]), raw), match[2], True, False
        elif match := cls._COMPUTE.match(raw):
            cc, suffix, sass, ptx = _known_cc(int(match[1]), raw), match[2], False, True
        else:
            raise ArchSpecError(
                f"malformed architecture '{text}': write it like 9.0a, 10.0f, 8.9, 9.0+PTX, "
                "sm_121a, 121a or compute_90a"
            )
        variant = Variant(suffix.lower())
        _check_variant(cc, variant, raw)
        return cls(cc, variant, sass=sass, ptx=ptx)

    def __str__(self) -> str:
        if not self.sass:
            return f"compute_{self.cc.sm}{self.variant.value}"
        return f"{self.cc}{self.variant.value}{'+PTX' if self.ptx else ''}"

    @property
    def targets(self) -> tuple[Target, ...]:
        """The code objects this entry asks nvcc to embed."""
        out = []
        if self.sass:
            out.append(Target(self.cc, self.variant))
        if self.ptx:
            out.append(Target(self.cc, self.variant, ptx=True))
        return tuple(out)

    @property
    def gencode(self) -> list[str]:
        """nvcc flags for this entry.

        >>> ArchSpec.parse("9.0a+PTX").gencode
        ['-gencode', 'arch=compute_90a,code=sm_90a', '-gencode', 'arch=compute_90a,code=compute_90a']
        """
        virtual = f"compute_{self.cc.sm}{self.variant.value}"
        flags: list[str] = []
        for target in self.targets:
            flags += ["-gencode", f"arch={virtual},code={target.name}"]
        return flags

    @property
    def cmake_architecture(self) -> str:
        """The CMake ``CUDA_ARCHITECTURES`` value (``90a-real``, ``80``, ``90-virtual``).

        >>> [ArchSpec.parse(s).cmake_architecture for s in ("9.0a", "8.0+PTX", "compute_120")]
        ['90a-real', '80', '120-virtual']
        """
        base = f"{self.cc.sm}{self.variant.value}"
        if self.sass and self.ptx:
            return base
        return f"{base}-real" if self.sass else f"{base}-virtual"


def _known_cc(sm: int, raw: str) -> ComputeCapability:
    cc = ComputeCapability.from_sm(sm)
    if cc not in KNOWN_CCS:
        known = ", ".join(str(c) for c in sorted(KNOWN_CCS))
        raise ArchSpecError(
            f"unknown architecture '{raw}': no NVIDIA GPU has compute capability {cc} "
            f"(known: {known})"
        )
    return cc


def _check_variant(cc: ComputeCapability, variant: Variant, raw: str) -> None:
    if variant not in variants_of(cc):
        which = "arch-specific ('a')" if variant is Variant.ARCH_SPECIFIC else "family ('f')"
        since = "9.0" if variant is Variant.ARCH_SPECIFIC else "10.0"
        raise ArchSpecError(
            f"unknown architecture '{raw}': {which} variants exist only from {since} on"
        )


_LIST_SEPARATORS = re.compile(r"[;,\s]+")


def parse_arch_list(text: str | Sequence[str]) -> tuple[ArchSpec, ...]:
    """Parse a TORCH_CUDA_ARCH_LIST-style list (``;``, ``,`` or spaces), or a sequence
    of entries. Duplicates are dropped, the order is kept; an empty list is an error.

    >>> [str(s) for s in parse_arch_list("9.0a;10.0f 12.1a,sm_121a")]
    ['9.0a', '10.0f', '12.1a']
    """
    entries = _split_list(text)
    if not entries:
        raise ArchSpecError(f"empty architecture list '{text}'")
    return tuple(dict.fromkeys(ArchSpec.parse(entry) for entry in entries))


def parse_device_list(text: str) -> tuple[ComputeCapability, ...]:
    """``9.0,10.3 12.1`` -> compute capabilities, in the order given, no duplicates.
    A spelling that is not a device (``9.0a``, ``9.5``) is an error.

    >>> [str(d) for d in parse_device_list("10.3, 12.1;sm_90,12.1")]
    ['10.3', '12.1', '9.0']
    """
    entries = _split_list(text)
    if not entries:
        raise ArchSpecError(f"empty device list '{text}' (write e.g. 9.0,10.3,12.1)")
    return tuple(dict.fromkeys(ComputeCapability.parse(entry) for entry in entries))


def _split_list(text: str | Sequence[str]) -> list[str]:
    items = [text] if isinstance(text, str) else [str(item) for item in text]
    return [e for item in items for e in _LIST_SEPARATORS.split(item) if e]


def format_arch_list(specs: Iterable[ArchSpec]) -> str:
    """``9.0a;12.1a`` -- the canonical spelling, as TORCH_CUDA_ARCH_LIST takes it."""
    return ";".join(str(s) for s in specs)


def gencode_flags(specs: Iterable[ArchSpec]) -> list[str]:
    """All nvcc ``-gencode`` flags for a list of specs."""
    return [flag for spec in specs for flag in spec.gencode]


def cmake_architectures(specs: Iterable[ArchSpec]) -> str:
    """``CMAKE_CUDA_ARCHITECTURES`` for a list (needs CMake >= 3.31 for ``f``)."""
    return ";".join(spec.cmake_architecture for spec in specs)


def requested_devices(specs: Iterable[ArchSpec]) -> tuple[ComputeCapability, ...]:
    """The devices an arch list asks to support: the compute capability of each entry.

    (A plain ``8.0`` entry also runs on 8.6, but the user *asked* for 8.0; we check
    what was asked.)
    """
    return tuple(sorted({spec.cc for spec in specs}))


# --- CUDA toolkits -------------------------------------------------------------------


@total_ordering
@dataclass(frozen=True)
class CudaVersion:
    """A CUDA toolkit version, major.minor (``12.9``, ``13.0``).

    >>> CudaVersion.parse("13.0.88")
    CudaVersion(major=13, minor=0)
    """

    major: int
    minor: int

    # ASCII digits, at most 9 each: int() of thousands of digits is refused by Python.
    _PATTERN = re.compile(r"^([0-9]{1,9})\.([0-9]{1,9})(?:\.[0-9]{1,9})*$")

    @classmethod
    def parse(cls, text: str | float) -> CudaVersion:
        match = cls._PATTERN.match(str(text).strip())
        if not match:
            raise ArchSpecError(f"malformed CUDA version '{text}': write it like 12.9 or 13.0")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, CudaVersion):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)


# Offline targets (SM numbers) each CUDA version can compile. Read off the real
# `ptxas --help` ("Allowed values" for --gpu-name) of every toolkit on PyPI:
# nvidia-cuda-nvcc-cu12 12.0 .. 12.9 and nvidia-cuda-nvcc 13.0 .. 13.5; the 13.x
# set is re-checked against `nvcc --list-gpu-code` by tests/integration. It agrees
# with NVIDIA's release notes: 12.8 added sm_100/101/120; 12.9 added sm_103/121
# and the family ('f') variants; 13.0 removed Maxwell, Pascal and Volta
# (sm_50 .. sm_72), renamed sm_101 to sm_110 and added sm_88; 13.4 added sm_107.
# There is no CUDA 12.7.
_CUDA_12_0_SMS = frozenset({50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90})
_CUDA_12_8_SMS = _CUDA_12_0_SMS | {100, 101, 120}
_CUDA_12_9_SMS = _CUDA_12_8_SMS | {103, 121}
_CUDA_13_0_SMS = frozenset(sm for sm in _CUDA_12_9_SMS if sm >= 75 and sm != 101) | {88, 110}
_CUDA_13_4_SMS = _CUDA_13_0_SMS | {107}

_SMS_BY_VERSION: dict[CudaVersion, frozenset[int]] = {
    **{CudaVersion(12, m): _CUDA_12_0_SMS for m in range(0, 7)},
    CudaVersion(12, 8): _CUDA_12_8_SMS,
    CudaVersion(12, 9): _CUDA_12_9_SMS,
    **{CudaVersion(13, m): _CUDA_13_0_SMS for m in range(0, 4)},
    **{CudaVersion(13, m): _CUDA_13_4_SMS for m in range(4, 6)},
}

KNOWN_CUDA_VERSIONS: tuple[CudaVersion, ...] = tuple(sorted(_SMS_BY_VERSION))
FAMILY_VARIANTS_SINCE = CudaVersion(12, 9)


def check_cuda_version(version: CudaVersion) -> None:
    if version not in _SMS_BY_VERSION:
        known = ", ".join(str(v) for v in KNOWN_CUDA_VERSIONS)
        raise ArchSpecError(f"unknown CUDA version '{version}' (known: {known})")


def compilable_targets(version: CudaVersion) -> frozenset[str]:
    """Every cubin target name (``sm_90a``...) that ``version`` can compile.

    >>> "sm_121f" in compilable_targets(CudaVersion(12, 9))
    True
    >>> "sm_121a" in compilable_targets(CudaVersion(12, 8))
    False
    """
    check_cuda_version(version)
    names = set()
    for sm in _SMS_BY_VERSION[version]:
        cc = ComputeCapability.from_sm(sm)
        for variant in variants_of(cc):
            if variant is Variant.FAMILY and version < FAMILY_VARIANTS_SINCE:
                continue
            names.add(Target(cc, variant).name)
    return frozenset(names)


def unsupported_reason(version: CudaVersion, target: Target) -> str | None:
    """Why CUDA ``version`` cannot compile ``target``, or None when it can.

    >>> unsupported_reason(CudaVersion(12, 8), Target.parse("sm_121a"))
    'CUDA 12.8 cannot compile sm_121a: sm_121 is new in CUDA 12.9'
    >>> unsupported_reason(CudaVersion(13, 0), Target.parse("sm_70"))
    'CUDA 13.0 cannot compile sm_70: CUDA 13.0 dropped sm_70 (Volta); use CUDA 12.x'
    """
    sass_name = Target(target.cc, target.variant).name
    if sass_name in compilable_targets(version):
        return None
    prefix = f"CUDA {version} cannot compile {target.name}"
    sm = target.cc.sm
    if sm not in _SMS_BY_VERSION[version]:
        supporting = [v for v in KNOWN_CUDA_VERSIONS if sm in _SMS_BY_VERSION[v]]
        if supporting and supporting[0] > version:
            return f"{prefix}: sm_{sm} is new in CUDA {supporting[0]}"
        if sm == 101:
            return f"{prefix}: CUDA 13.0 renamed sm_101 to sm_110; ask for 11.0"
        if supporting:
            arch = ARCHITECTURE_NAMES[sm]
            return f"{prefix}: CUDA {supporting[-1].major + 1}.0 dropped sm_{sm} ({arch}); use CUDA {supporting[-1].major}.x"
        return f"{prefix}: no known CUDA version compiles sm_{sm}"  # pragma: no cover
    return f"{prefix}: family ('f') targets are new in CUDA {FAMILY_VARIANTS_SINCE}"
