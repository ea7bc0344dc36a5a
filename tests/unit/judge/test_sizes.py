"""What code weighs (orchestrator.judge.sizes): bytes per target read from real fatbin
bytes made here (uncompressed, zstd, LZ4; a cubin embedded twice), per family from
its kernels' .text, kept in results and baselines, and compared base against head by
``compare`` -- run directories, baselines, wheels -- on the console, in JSON and in
Markdown. Every expected number is computed here from the bytes the test built."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jsonschema
import lz4.block
import pytest
import zstandard
from report_data import passed_cell
from synth import (
    KIND_ELF,
    KIND_PTX,
    MANGLED_HOLLOW,
    MANGLED_WORK,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_shared_object,
    hollow_body,
    ptx_module,
    working_body,
)

from orchestrator.archs import ComputeCapability
from orchestrator.cli import main
from orchestrator.common.words import format_size
from orchestrator.judge.baseline import load_baseline
from orchestrator.judge.results import CellResult, load_cell_result
from orchestrator.judge.sizes import NOT_IN_CONFIGURE_TIER, Sizes, cell_sizes
from orchestrator.probe import probe
from orchestrator.read.demand import Demand
from orchestrator.read.inventory import CodeBytes, Inventory, Library
from orchestrator.symbols import FamilyRule

SCHEMAS = Path(__file__).resolve().parents[3] / "orchestrator" / "schemas"
CC = ComputeCapability.parse
WORK_BODY = working_body(40)
HOLLOW_BODY = hollow_body()
RULES = (
    FamilyRule("nvfp4", (CC("9.0"), CC("12.0")), kernels=("quant_kernel",)),
    FamilyRule("guarded", (CC("9.0"), CC("12.0")), kernels=("hollow",)),
)
FAMILIES_YAML = """\
families:
  nvfp4:
    kernels: ['quant_kernel']
    devices: ['9.0', '12.0']
  guarded:
    kernels: ['hollow']
    devices: ['9.0', '12.0']
"""


def padded8(data: bytes) -> int:
    return len(data) + (-len(data) % 8)


def cubin_bytes(sm: int) -> bytes:
    spec = CubinSpec([KernelSpec(MANGLED_WORK, WORK_BODY), KernelSpec(MANGLED_HOLLOW, HOLLOW_BODY)])
    return build_cubin(spec, sm)


PTX = ptx_module("sm_120", {"ptx_only_kernel": "ret;"})


def a_library(path: Path, *, with_120: bool = True) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """A shared object holding sm_90a (uncompressed), and with ``with_120`` an sm_120a
    cubin compressed with zstd, the same cubin again uncompressed in a second
    container (what nvcc -shared does), and compute_120 PTX compressed with LZ4.
    Returns its path and, per target, (entries, bytes, stored) worked out here."""
    sm90, sm120 = cubin_bytes(90), cubin_bytes(120)
    first = [EntrySpec(KIND_ELF, 90, sm90, "a")]
    expected = {"sm_90a": (1, padded8(sm90), padded8(sm90))}
    containers = []
    if with_120:
        first += [
            EntrySpec(KIND_ELF, 120, sm120, "a", compression="zstd"),
            EntrySpec(KIND_PTX, 120, PTX, compression="lz4"),
        ]
        zstd_len = len(zstandard.ZstdCompressor().compress(sm120))
        lz4_len = len(lz4.block.compress(PTX, store_size=False))
        expected["sm_120a"] = (2, len(sm120) + padded8(sm120), zstd_len + padded8(sm120))
        expected["compute_120"] = (1, len(PTX), lz4_len)
        containers.append(build_container([EntrySpec(KIND_ELF, 120, sm120, "a")]))
    path.write_bytes(build_shared_object([build_container(first), *containers]))
    return path, expected


def as_tuples(sizes: tuple[CodeBytes, ...] | None) -> dict[str, tuple[int, int, int]]:
    assert sizes is not None
    return {s.target: (s.entries, s.size, s.stored) for s in sizes}


def test_a_library_records_every_entrys_bytes_per_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = a_library(tmp_path / "_C.so")
    (library,) = probe([path], jobs=1).libraries
    assert as_tuples(library.sizes) == expected
    assert [s.target for s in library.sizes or ()] == ["sm_90a", "compute_120", "sm_120a"]
    # the JSON form keeps them, and the schema takes it
    again = Library.from_json(json.loads(json.dumps(library.to_json())))
    assert again == library
    # a lazy read (check) counts every entry too, the PTX it leaves unread included,
    # and so does one answered from the check cache
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    demand = Demand(RULES, (CC("12.0"),))
    for _ in range(2):
        (lazy,) = probe([path], jobs=1, demand=demand, cache=True).libraries
        assert lazy.unread == ("compute_120",)
        assert as_tuples(lazy.sizes) == expected


def test_an_inventory_without_sizes_says_so_and_older_json_reads(tmp_path: Path) -> None:
    path, _ = a_library(tmp_path / "_C.so")
    (library,) = probe([path], jobs=1).libraries
    data = library.to_json()
    del data["sizes"]
    older = Library.from_json(data)
    assert older.sizes is None and "sizes" not in older.to_json()
    assert cell_sizes(Inventory((older,)), RULES) is None


def test_cell_sizes_per_target_and_per_family(tmp_path: Path) -> None:
    path, expected = a_library(tmp_path / "_C.so")
    sizes = cell_sizes(probe([path], jobs=1), RULES)
    assert sizes is not None
    assert {t: (s.entries, s.size, s.stored) for t, s in sizes.targets.items()} == expected
    # each cubin holds one kernel of each family; the sm_120a cubin is there twice
    assert sizes.families == {
        "nvfp4": {"sm_90a": len(WORK_BODY), "sm_120a": 2 * len(WORK_BODY)},
        "guarded": {"sm_90a": len(HOLLOW_BODY), "sm_120a": 2 * len(HOLLOW_BODY)},
    }
    total = sizes.total
    assert (total.entries, total.size) == (4, sum(v[1] for v in expected.values()))
    assert Sizes.from_json(json.loads(json.dumps(sizes.to_json()))) == sizes


def cell_with(sizes: Sizes | None, tier: str = "build") -> CellResult:
    result = passed_cell()
    result.sizes, result.tier = sizes, tier
    return result


BASE = Sizes(
    {"sm_120f": CodeBytes("sm_120f", 3, 90_000, 40_000)},
    {"nvfp4": {"sm_120f": 21_000}, "scaled_mm_sm120": {"sm_120f": 20_000}},
)
HEAD = Sizes(
    {
        "sm_120a": CodeBytes("sm_120a", 2, 62_914_560, 20_000_000),
        "sm_120f": CodeBytes("sm_120f", 3, 90_000, 40_000),
    },
    {"nvfp4": {"sm_120a": 7_000, "sm_120f": 21_000}, "scaled_mm_sm120": {"sm_120f": 20_000}},
)


def compare_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["compare", *argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, json.loads((SCHEMAS / "compare.schema.json").read_text()))
    return data


def test_compare_reports_the_bytes_that_changed_in_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    head = tmp_path / "head"
    cell_with(BASE).write(base)
    cell_with(HEAD).write(head)
    for run in (base, head):  # valid cell results (results.schema.json's cellResult)
        load_cell_result(next((run / "cells").glob("*.json")))

    data = compare_json(capsys, str(base), str(head))
    (entry,) = data["sizes"]
    assert entry["cell"] == "cu13.0-12.1f" and entry["known"] and data["files"] is None
    # only the target that changed, and the total (always)
    assert [(t["target"], t["base"], t["head"], t["delta"]) for t in entry["targets"]] == [
        ("sm_120a", 0, 62_914_560, 62_914_560)
    ]
    (added,) = entry["targets"]
    assert (added["stored_delta"], added["base_entries"], added["head_entries"]) == (
        20_000_000,
        0,
        2,
    )
    total = entry["total"]
    assert (total["base"], total["head"], total["delta"]) == (
        90_000,
        62_914_560 + 90_000,
        62_914_560,
    )
    assert (total["base_stored"], total["head_stored"]) == (40_000, 20_040_000)
    # only the family that changed, with its change per target
    assert entry["families"] == [
        {
            "family": "nvfp4",
            "base": 21_000,
            "head": 28_000,
            "delta": 7_000,
            "targets": {"sm_120a": 7_000},
        }
    ]

    assert main(["compare", str(base), str(head)]) == 0
    out = capsys.readouterr().out
    assert "  cu13.0-12.1f: total 87.9 KiB -> 60.1 MiB (+60.0 MiB; stored +19.1 MiB)" in out
    assert "    sm_120a: 0 B -> 60.0 MiB (+60.0 MiB; stored +19.1 MiB)" in out
    assert "    family nvfp4: 20.5 KiB -> 27.3 KiB (+6.8 KiB: sm_120a +6.8 KiB)" in out
    assert "scaled_mm_sm120" not in out.split("sizes (")[1]  # unchanged: not listed
    assert out.rstrip().splitlines()[-1].startswith("kernel-matrix compare: OK")

    assert main(["compare", str(base), str(head), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| cu13.0-12.1f | total | 87.9 KiB | 60.1 MiB | +60.0 MiB; stored +19.1 MiB |" in md
    assert "| cu13.0-12.1f | sm_120a | 0 B | 60.0 MiB | +60.0 MiB; stored +19.1 MiB |" in md
    assert (
        "| cu13.0-12.1f | family nvfp4 (sm_120a +6.8 KiB) | 20.5 KiB | 27.3 KiB | +6.8 KiB |" in md
    )

    # a baseline keeps the sizes, and compares the same way
    assert main(["baseline", "save", str(base), "--out", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert load_baseline(tmp_path / "b.json").cells["cu13.0-12.1f"].sizes == BASE
    assert compare_json(capsys, str(tmp_path / "b.json"), str(head))["sizes"] == data["sizes"]


def test_the_configure_tier_has_no_sizes_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, head = tmp_path / "base", tmp_path / "head"
    cell_with(None, "configure").write(base)
    cell_with(None, "configure").write(head)
    data = compare_json(capsys, str(base), str(head))
    assert data["sizes"] == [{"cell": "cu13.0-12.1f", "known": False, "why": NOT_IN_CONFIGURE_TIER}]
    main(["compare", str(base), str(head)])
    out = capsys.readouterr().out
    assert f"sizes: {NOT_IN_CONFIGURE_TIER}" in out and " 0 B" not in out
    main(["compare", str(base), str(head), "--markdown"])
    assert f"Sizes: {NOT_IN_CONFIGURE_TIER}." in capsys.readouterr().out
    # one side built, the other configured: not compared at all (one line, exit 2)
    cell_with(HEAD).write(tmp_path / "built")
    assert main(["compare", str(base), str(tmp_path / "built"), "--json"]) == 2
    assert "cannot compare a configure-tier run with a build-tier one" in capsys.readouterr().err


def wheel(
    tmp_path: Path, name: str, *, with_120: bool
) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    so, expected = a_library(tmp_path / f"{name}.so", with_120=with_120)
    path = tmp_path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/_C.abi3.so", so.read_bytes())
    return path, expected


def test_compare_two_wheels_probes_judges_and_weighs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    families = tmp_path / "families.yaml"
    families.write_text(FAMILIES_YAML)
    base, _ = wheel(tmp_path, "base", with_120=False)
    head, expected = wheel(tmp_path, "head", with_120=True)
    data = compare_json(capsys, str(base), str(head), "--families", str(families))
    # 12.0 gains nvfp4 (the sm_120a cubin; the other family's kernel is hollow)
    assert [(f["family"], f["device"]) for f in data["fixed"]] == [("nvfp4", "12.0")]
    (entry,) = data["sizes"]
    assert entry["cell"] == "artifact" and entry["known"]
    rows = {
        t["target"]: (t["head_entries"], t["delta"], t["stored_delta"]) for t in entry["targets"]
    }
    assert rows == {"sm_120a": expected["sm_120a"], "compute_120": expected["compute_120"]}
    assert entry["total"]["delta"] == expected["sm_120a"][1] + expected["compute_120"][1]
    assert {f["family"]: f["targets"] for f in entry["families"]} == {
        "nvfp4": {"sm_120a": 2 * len(WORK_BODY)},
        "guarded": {"sm_120a": 2 * len(HOLLOW_BODY)},
    }
    size_of = {p: p.stat().st_size for p in (base, head)}
    stored = {p: zipfile.ZipFile(p).getinfo("pkg/_C.abi3.so").compress_size for p in size_of}
    assert data["files"] == {
        "base": size_of[base],
        "head": size_of[head],
        "delta": size_of[head] - size_of[base],
        "libraries": [
            {
                "library": "pkg/_C.abi3.so",
                "base": stored[base],
                "head": stored[head],
                "delta": stored[head] - stored[base],
            }
        ],
    }
    assert main(["compare", str(base), str(head), "--families", str(families)]) == 0
    out = capsys.readouterr().out
    assert f"  pkg/_C.abi3.so: {format_size(stored[base])} -> {format_size(stored[head])}" in out
    # a library file is a side too; the same bytes
    lib = compare_json(
        capsys, str(tmp_path / "base.so"), str(tmp_path / "head.so"), "--families", str(families)
    )
    assert lib["sizes"][0]["targets"] == entry["targets"]
    # without --families a wheel cannot be judged: one line, exit 2
    assert main(["compare", str(base), str(head)]) == 2
    assert "--families" in capsys.readouterr().err


def test_libraries_of_results_without_sizes_are_not_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results written before sizes were recorded: not known, never 0 B."""
    cell_with(None).write(tmp_path / "old")
    cell_with(HEAD).write(tmp_path / "new")
    (entry,) = compare_json(capsys, str(tmp_path / "old"), str(tmp_path / "new"))["sizes"]
    assert not entry["known"] and entry["why"].startswith("base: not in these results")
