"""``check --installed DIST``: the shared objects of an installed distribution, found
through its RECORD by the interpreter that has it, and the profile shipped for it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from synth import KIND_ELF, EntrySpec, build_container, build_shared_object, two_kernel_cubin

from orchestrator.cli import main
from orchestrator.common.errors import UsageError
from orchestrator.read.installed import find_installed


def install(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """What pip leaves: the files, and a .dist-info whose RECORD lists them."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for member, data in files.items():
        (site / member).parent.mkdir(parents=True, exist_ok=True)
        (site / member).write_bytes(data)
    record = [f"{member},," for member in files] + [
        f"{info.name}/METADATA,,",
        f"{info.name}/RECORD,,",
    ]
    (info / "RECORD").write_text("\n".join(record) + "\n")


LIBRARY = build_shared_object(
    [build_container([EntrySpec(KIND_ELF, 90, two_kernel_cubin(90), "a")])]
)


def test_finds_the_shared_objects_its_record_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    install(
        site,
        "vllm",
        "0.33.0",
        {"vllm/_C_stable_libtorch.abi3.so": LIBRARY, "vllm/__init__.py": b"", "vllm/x.so.txt": b""},
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    found = find_installed("vllm", sys.executable)
    assert (found.name, found.version, found.python) == ("vllm", "0.33.0", sys.executable)
    assert found.libraries == (site / "vllm" / "_C_stable_libtorch.abi3.so",)


def test_the_shipped_profile_of_the_distribution_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check --installed vllm`` with no --families reads vLLM's shipped profile: its
    families are judged, and each one missing gets a sentence saying what to do."""
    site = tmp_path / "site"
    install(site, "vllm", "0.33.0", {"vllm/_C_stable_libtorch.abi3.so": LIBRARY})
    monkeypatch.setenv("PYTHONPATH", str(site))
    code = main(["check", "--installed", "vllm", "--python", sys.executable, "--devices", "12.1"])
    out = capsys.readouterr().out
    assert code == 1  # none of vLLM's families is in a library of one made-up kernel
    assert "installed: vllm 0.33.0 (1 shared objects" in out
    assert "nvfp4_quant" in out and "marlin" in out  # the shipped profile's families
    # vllm-truth.md: 0.33.0 serves Marlin on 12.1 on both platforms; this install
    # (one library of one made-up kernel) does not.
    assert (
        f"what to do: marlin on 12.1: the truth table says vllm 0.33.0 "
        f"({platform.machine()}) has it, but this install does not" in out
    )


def test_a_distribution_without_a_profile_needs_families(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    install(site, "my-ext", "1.0", {"my_ext/_C.so": LIBRARY})
    monkeypatch.setenv("PYTHONPATH", str(site))
    assert main(["check", "--installed", "my-ext", "--python", sys.executable]) == 2
    assert "no shipped profile for my-ext: pass --families FILE" in capsys.readouterr().err


def test_the_interpreter_that_has_it_answers_not_this_one(tmp_path: Path) -> None:
    """A distribution installed only in another environment is found with --python."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = next((env / "lib").glob("python3*/site-packages"))
    install(site, "sgl-kernel", "0.3.21", {"sgl_kernel/sm90/common_ops.abi3.so": LIBRARY})
    with pytest.raises(UsageError, match="not installed for"):
        find_installed("sgl-kernel", sys.executable)
    found = find_installed("sgl-kernel", str(python))
    assert found.version == "0.3.21" and found.libraries[0].name == "common_ops.abi3.so"
