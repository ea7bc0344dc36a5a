"""What a change weighs, for real: the sample extension built with CUDA 13.0 (nvcc from
PyPI, CMake), compared by ``kernel-matrix compare`` -- two libraries (archs "9.0a"
against "9.0a;12.0a") and two runs (a base whose SM12x guard leaves 12.0 out, a head
that builds it). The bytes compare reports are checked against what cuobjdump
extracts from the same files (``-xelf all``: one file per cubin) and against the
``.text`` sections of those cubins, read here with a few lines of ELF parsing."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.toolchains.cuda import cuobjdump

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"
FAMILIES = SAMPLE / "families.yaml"
GUARD = 'set(SM120_ALLOWED "12.0f;12.1f")'
BOTH = "cu13.0-9.0a_12.0a"


def run(tmp: Path, name: str, source: Path, archs: list[str], exit_code: int = 0) -> Path:
    matrix = tmp / f"{name}.yaml"
    matrix.write_text(
        f"project: {{name: sample_ext, source: {source}, build: cmake, artifacts: ['*.so']}}\n"
        f'cuda: ["13.0"]\narchs: {json.dumps(archs)}\nfamilies: {FAMILIES}\n'
    )
    out = tmp / name
    code = main([
        "run", str(matrix), "--out", str(out / "results"), "--build-dir", str(out / "build"),
        "--no-cache",
    ])  # fmt: skip
    assert code == exit_code
    return out


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base, head): the base's scaled_mm SM12x guard knows only 12.1f, so its
    "9.0a;12.0a" cell has no scaled_mm_sm120 cubin; the head is the sample as is,
    also built for "9.0a" alone."""
    tmp = tmp_path_factory.mktemp("sizes")
    base_source = tmp / "base_source"
    shutil.copytree(SAMPLE, base_source, ignore=shutil.ignore_patterns("build*"))
    lists = base_source / "CMakeLists.txt"
    assert lists.read_text().count(GUARD) == 1
    lists.write_text(lists.read_text().replace(GUARD, 'set(SM120_ALLOWED "12.1f")'))
    # (the base fails: scaled_mm_sm120 is missing on 12.0)
    base = run(tmp, "base", base_source, ["9.0a;12.0a"], exit_code=1)
    head = run(tmp, "head", SAMPLE, ["9.0a", "9.0a;12.0a"])
    return base, head


def extracted(library: Path, into: Path) -> dict[str, list[Path]]:
    """``cuobjdump -xelf all``: the cubins of ``library``, by the arch in their name."""
    into.mkdir(parents=True)
    subprocess.run(
        [str(cuobjdump()), "-xelf", "all", str(library.resolve())],
        cwd=into,
        check=True,
        capture_output=True,
    )
    found: dict[str, list[Path]] = {}
    for cubin in sorted(into.glob("*.cubin")):
        found.setdefault(cubin.name.split(".")[-2], []).append(cubin)
    return found


def text_sections(cubin: Path) -> dict[str, int]:
    """Name -> size of the ``.text.*`` sections of an ELF64 file."""
    data = cubin.read_bytes()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize) for i in range(count)]
    names_at = headers[names_index][4]
    out = {}
    for header in headers:
        start = names_at + header[0]
        name = data[start : data.index(b"\0", start)].decode()
        if name.startswith(".text."):
            out[name] = header[5]
    return out


def compare(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    main(["compare", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_the_bytes_an_added_arch_costs_are_what_cuobjdump_extracts(
    builds: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, head = builds
    only_90 = head / "build" / "cu13.0-9.0a" / "_C.so"
    with_120 = head / "build" / BOTH / "_C.so"
    data = compare(capsys, str(only_90), str(with_120), "--families", str(FAMILIES))
    assert data["exit_code"] == 0
    cubins = extracted(with_120, tmp_path / "head")
    before = extracted(only_90, tmp_path / "base")
    assert sorted(cubins) == ["sm_120a", "sm_90a"] and sorted(before) == ["sm_90a"]
    (entry,) = data["sizes"]
    # sm_90a is the same code in both: not listed; sm_120a is all new
    (row,) = entry["targets"]
    added = sum(c.stat().st_size for c in cubins["sm_120a"])
    assert (row["target"], row["base"], row["head"], row["delta"]) == ("sm_120a", 0, added, added)
    assert row["head_entries"] == len(cubins["sm_120a"])
    sm90 = sum(c.stat().st_size for c in before["sm_90a"])
    assert sm90 == sum(c.stat().st_size for c in cubins["sm_90a"])
    assert (entry["total"]["base"], entry["total"]["head"]) == (sm90, sm90 + added)
    # per family: the .text of its kernels in the sm_120a cubins
    texts = [text_sections(c) for c in cubins["sm_120a"]]
    families = {f["family"]: f for f in entry["families"]}
    for family, source in (("scaled_mm_sm120", "scaled_mm_c3x_sm120_cu"), ("nvfp4", "nvfp4_")):
        own = sum(size for t in texts for name, size in t.items() if source in name)
        assert own > 0 and families[family]["targets"] == {"sm_120a": own}
    size_of = {p: p.stat().st_size for p in (only_90, with_120)}
    assert data["files"]["delta"] == size_of[with_120] - size_of[only_90]


def test_a_head_that_builds_a_family_for_one_more_arch_shows_its_bytes(
    builds: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, head = builds
    data = compare(capsys, str(base / "results"), str(head / "results"))
    assert [(f["cell"], f["family"], f["device"]) for f in data["fixed"]] == [
        (BOTH, "scaled_mm_sm120", "12.0")
    ]
    (entry,) = [e for e in data["sizes"] if e["cell"] == BOTH]
    was = extracted(base / "build" / BOTH / "_C.so", tmp_path / "base")["sm_120a"]
    now = extracted(head / "build" / BOTH / "_C.so", tmp_path / "head")["sm_120a"]
    (row,) = entry["targets"]
    assert row["target"] == "sm_120a"
    assert (row["base"], row["head"]) == (
        sum(c.stat().st_size for c in was),
        sum(c.stat().st_size for c in now),
    )
    assert (row["base_entries"], row["head_entries"]) == (len(was), len(now))
    text = sum(
        size
        for c in now
        for name, size in text_sections(c).items()
        if "scaled_mm_c3x_sm120_cu" in name
    )
    (family,) = entry["families"]
    assert family == {
        "family": "scaled_mm_sm120",
        "base": 0,
        "head": text,
        "delta": text,
        "targets": {"sm_120a": text},
    }
    # the console and the Markdown block show them too
    main(["compare", str(base / "results"), str(head / "results")])
    out = capsys.readouterr().out
    assert f"  {BOTH}: total " in out and "    sm_120a: " in out
    assert "    family scaled_mm_sm120: 0 B -> " in out
    main(["compare", str(base / "results"), str(head / "results"), "--markdown"])
    assert f"| {BOTH} | sm_120a | " in capsys.readouterr().out


def test_compressed_entries_count_their_bytes_uncompressed_and_as_stored(tmp_path: Path) -> None:
    """Everything compressed (zstd): a target's bytes are what cuobjdump extracts
    (-xelf, -xptx: the code uncompressed), and what it takes in the file is less."""
    from test_probe_real import build

    from orchestrator.archs import CudaVersion
    from orchestrator.probe import probe

    library = build(CudaVersion(13, 0), tmp_path, "--compress-mode=size", "-Xfatbin=-compress-all")
    (read,) = probe([library]).libraries
    assert read.sizes is not None
    out = tmp_path / "x"
    out.mkdir()
    for what in ("-xelf", "-xptx"):
        subprocess.run(
            [str(cuobjdump()), what, "all", str(library)], cwd=out, check=True, capture_output=True
        )
    extracted_bytes: dict[str, list[int]] = {}
    for path in out.iterdir():
        arch = path.name.split(".")[-2]  # lib.3.sm_90a.cubin, lib.6.sm_120.ptx
        if path.suffix == ".ptx":
            arch = arch.replace("sm_", "compute_")
        extracted_bytes.setdefault(arch, []).append(path.stat().st_size)
    # cuobjdump's names lose the f suffix (DESIGN.md): sm_100f is listed as sm_100
    sizes = {s.target.replace("sm_100f", "sm_100"): s for s in read.sizes}
    assert sorted(sizes) == sorted(extracted_bytes)
    for arch, found in extracted_bytes.items():
        # (a PTX entry holds its text and a terminating NUL, which -xptx leaves out)
        nul = len(found) if arch.startswith("compute_") else 0
        assert (sizes[arch].entries, sizes[arch].size) == (len(found), sum(found) + nul), arch
        assert 0 < sizes[arch].stored < sizes[arch].size, arch
