"""The check cache (orchestrator.read.checkcache): a repeated check answers from it, another
device list reuses what an earlier read decoded, and nothing stale or damaged is
ever trusted."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from synth import hollow_body, working_body
from test_check import GEMM, QUANT, cubin, library, make_wheel

import orchestrator.probe as probe_module
import orchestrator.read.library as library_module
from orchestrator.archs import ComputeCapability
from orchestrator.cli import main
from orchestrator.common.errors import InputFileError
from orchestrator.judge.check import check_paths
from orchestrator.read import checkcache
from orchestrator.symbols import FamilyRule

CC = ComputeCapability.parse
RULES = (
    FamilyRule(
        "nvfp4",
        (CC("10.0"), CC("12.0"), CC("12.1")),
        kernels=("quant_kernel",),
        libraries=("_C.*",),
    ),
    FamilyRule(
        "scaled_mm_sm120",
        (CC("12.0"), CC("12.1")),
        kernels=("scaled_mm_sm120_fp8",),
        libraries=("_C.*",),
    ),
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(cache))
    return cache / "check"


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(
        tmp_path,
        library(
            cubin(100, "f", (QUANT, working_body(40))),
            cubin(120, "f", (QUANT, working_body(40)), (GEMM, hollow_body())),
        ),
    )


def devices(text: str) -> tuple[ComputeCapability, ...]:
    return tuple(CC(d) for d in text.split(","))


def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a library was read although the cache had it")

    monkeypatch.setattr(library_module, "read_library", refuse)
    monkeypatch.setattr("orchestrator.probe.read_library", refuse)


def test_a_repeated_check_answers_from_the_cache_with_the_same_result(
    wheel: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = check_paths([wheel], RULES, devices("12.0,12.1"), cache=True)
    assert sorted(p.name.startswith("result-") for p in own_cache.iterdir()) == [False, True]
    no_reading(monkeypatch)
    monkeypatch.setattr(probe_module, "probe", lambda *a, **k: pytest.fail("probed again"))
    again = check_paths([wheel], RULES, devices("12.0,12.1"), cache=True)
    assert again.to_json() | {"seconds": 0} == first.to_json() | {"seconds": 0}
    assert again.verdict("scaled_mm_sm120", "12.1").status == "hollow"


def test_other_devices_reuse_the_library_record_without_reading_it(
    wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12.0 and 12.1 judge sm_120f and list sm_100f; 10.0 then needs sm_100f judged
    (read again, the record grows), and 10.0 + 12.x is answered by the record alone."""
    check_paths([wheel], RULES, devices("12.0,12.1"), cache=True)
    blackwell = check_paths([wheel], RULES, devices("10.0"), cache=True)
    assert blackwell.verdict("nvfp4", "10.0").status == "present"
    fresh = check_paths([wheel], RULES, devices("10.0,12.1"), cache=False)
    no_reading(monkeypatch)
    both = check_paths([wheel], RULES, devices("10.0,12.1"), cache=True)
    assert both.verdicts == fresh.verdicts
    assert both.not_judged == fresh.not_judged


def test_a_changed_wheel_is_read_again(wheel: Path, tmp_path: Path) -> None:
    check_paths([wheel], RULES, devices("12.1"), cache=True)
    rebuilt = make_wheel(tmp_path, library(cubin(120, "a", (QUANT, working_body(40)))))
    assert rebuilt == wheel  # same path, other bytes
    verdict = check_paths([rebuilt], RULES, devices("12.1"), cache=True).verdict("nvfp4", "12.1")
    assert verdict.status == "missing"  # sm_120a does not run on 12.1


def test_a_damaged_record_is_a_miss(wheel: Path, own_cache: Path) -> None:
    first = check_paths([wheel], RULES, devices("12.1"), cache=True)
    for record in own_cache.iterdir():
        record.write_text(json.dumps({"entries": [{"target": "sm_999", "action": "judge"}]}))
    again = check_paths([wheel], RULES, devices("12.1"), cache=True)
    assert again.verdicts == first.verdicts
    for record in own_cache.iterdir():
        record.write_bytes(b"\x00garbage")
    assert check_paths([wheel], RULES, devices("12.1"), cache=True).verdicts == first.verdicts


def test_check_no_cache_writes_nothing(
    wheel: Path, own_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    families = tmp_path / "families.yaml"
    families.write_text(
        "families:\n  nvfp4:\n    kernels: ['quant_kernel']\n    libraries: ['_C.*']\n"
        "    devices: ['12.1']\n"
    )
    assert main(["check", str(wheel), "--families", str(families), "--no-cache"]) == 0
    assert not own_cache.exists()
    assert main(["check", str(wheel), "--families", str(families)]) == 0
    assert own_cache.is_dir() and len(list(own_cache.iterdir())) == 2
    capsys.readouterr()


def test_the_record_keeps_at_most_its_limit(
    wheel: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkcache, "MAX_RECORDS", 3)
    for device in ("10.0", "12.0", "12.1", "10.0,12.0"):
        check_paths([wheel], RULES, devices(device), cache=True)
    assert len(list(own_cache.iterdir())) == 3


def test_a_library_file_is_kept_by_its_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    so = tmp_path / "build" / "_C.so"
    so.parent.mkdir()
    so.write_bytes(library(cubin(120, "f", (QUANT, working_body(40)))))
    first = check_paths([so.parent], RULES, devices("12.1"), cache=True)
    assert first.verdict("nvfp4", "12.1").status == "present"
    with monkeypatch.context() as patch:
        no_reading(patch)
        again = check_paths([so.parent], RULES, devices("12.0,12.1"), cache=True)
    assert again.verdict("nvfp4", "12.0").status == "present"
    so.write_bytes(library(cubin(120, "a", (QUANT, working_body(40)))))  # rebuilt
    rebuilt = check_paths([so.parent], RULES, devices("12.1"), cache=True)
    assert rebuilt.verdict("nvfp4", "12.1").status == "missing"


def two_library_wheel(tmp_path: Path, second: bytes, first: bytes | None = None) -> Path:
    """A wheel of two libraries the families look in (``_C`` and ``_C.more``)."""
    first = first or library(cubin(120, "f", (QUANT, working_body(40))))
    wheel = tmp_path / "vllm-0.0.0-two.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vllm/_C.abi3.so", first)
        zf.writestr("vllm/_C.more.abi3.so", second)
    return wheel


def inflations_noted(patch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every member inflated from now on, and whether on the inflating thread (small
    members too: these wheels' are)."""
    noted: list[tuple[str, bool]] = []
    inflate = probe_module._inflate_into_memory

    def noting(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
        in_thread = threading.current_thread().name.startswith("kernel-matrix-inflate")
        noted.append((info.filename, in_thread))
        return inflate(archive, info, label)

    patch.setattr(probe_module, "_inflate_into_memory", noting)
    patch.setattr(probe_module, "INFLATE_AHEAD_MIN_BYTES", 0)
    return noted


def test_the_next_member_inflated_ahead_gives_the_same_verdicts_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member after the one being read is inflated in a thread; only a member
    that is read at all (its record does not answer it), and its damage is reported
    as its own."""
    second = library(cubin(120, "f", (GEMM, working_body(400))))  # (the larger: read last)
    wheel = two_library_wheel(tmp_path, second)
    inflated = inflations_noted(monkeypatch)
    ahead = check_paths([wheel], RULES, devices("12.0,12.1"), cache=True)
    alone = check_paths([wheel], RULES, devices("12.0,12.1"), cache=False, jobs=1)
    assert ahead.verdicts == alone.verdicts
    assert ahead.verdict("scaled_mm_sm120", "12.0").status == "present"
    first, second_ahead = ("vllm/_C.abi3.so", False), ("vllm/_C.more.abi3.so", True)
    assert sorted(inflated) == [first, first, second_ahead, second_ahead]
    inflated.clear()
    check_paths([wheel], RULES, devices("12.1"), cache=True)  # the records answer both
    assert inflated == []
    # A damaged second member: its own error, raised when it is read.
    damaged = two_library_wheel(tmp_path, second)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("vllm/_C.more.abi3.so")
    raw = bytearray(damaged.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # its data
    raw[start + 2 : start + info.compress_size - 2] = bytes(info.compress_size - 4)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match=r"_C\.more\.abi3\.so: corrupt wheel member"):
        check_paths([damaged], RULES, devices("12.1"), cache=False)


def test_members_are_read_smallest_first_and_listed_by_name(tmp_path: Path) -> None:
    """The smallest member is read first (its inflating overlaps nothing but the
    next one's), the larger one inflated on the thread meanwhile; the libraries are
    still listed in the wheel's name order."""
    larger = library(cubin(120, "f", (QUANT, working_body(400))))
    smaller = library(cubin(120, "f", (GEMM, working_body(40))))
    assert len(larger) > len(smaller)
    wheel = two_library_wheel(tmp_path, smaller, first=larger)
    with pytest.MonkeyPatch.context() as patch:
        read = inflations_noted(patch)
        inventory = probe_module.probe([wheel], jobs=1)
    assert sorted(read) == [("vllm/_C.abi3.so", True), ("vllm/_C.more.abi3.so", False)]
    assert [lib.path.rsplit("!", 1)[1] for lib in inventory.libraries] == [
        "vllm/_C.abi3.so",
        "vllm/_C.more.abi3.so",
    ]
    assert [len(lib.cubins) for lib in inventory.libraries] == [1, 1]
