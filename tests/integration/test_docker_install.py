"""The docker backend as a user gets it: kernel-matrix installed without ``-e`` into a
fresh virtual environment, and the README's docker commands run as they are written.

Both start from a fresh copy of this repository (its tracked files and the untracked
ones git does not ignore: what a clone of the commit being made holds). Each run of
kernel-matrix gets a result cache of its own (``KERNEL_MATRIX_CACHE``; the CUDA
toolchains in it are the machine's, linked), so every cell is really built in a
container, never answered from an earlier run's cache. The offline base image is
made once per machine (``ensure_offline_base``, as in test_docker_backend.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docker_required import skip_unless_required

from orchestrator.archs import CudaVersion
from orchestrator.building.backends.container import Engine
from orchestrator.building.backends.offline_base import ensure_offline_base
from orchestrator.common.errors import DockerError, ToolError
from orchestrator.toolchains import cuda as toolchain

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CELL = "cu13.0-12.1a"
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 1800

# What the sample extension's CMakeLists.txt builds for TORCH_CUDA_ARCH_LIST=12.1a
# with CUDA 13.0 (read from its guards: NVFP4 allows 12.1f, scaled_mm_c3x_sm120
# 12.1f, both matching the requested 12.1a; sm90 allows only 9.0a, sm100 and MLA
# only 10.x; the dispatcher and fp8_guarded kernels are built for every arch).
KERNELS_IN_SM121A = {
    "dispatch_entry_kernel",
    "dispatch_image_kernel",
    "fp8_guarded_kernel",
    "nvfp4_quant_kernel",
    "nvfp4_scaled_mm_kernel",
    "scaled_mm_sm120_kernel",
}
# families.yaml: the families whose devices include 12.1.
FAMILIES_ON_12_1 = {"nvfp4", "scaled_mm_sm120", "fp8_guarded", "dispatch"}


@pytest.fixture(scope="module")
def base_image() -> str:
    try:
        engine = Engine.connect()
    except DockerError as exc:
        skip_unless_required(f"no Docker engine: {exc}")
    try:
        return ensure_offline_base(engine)
    except ToolError as exc:
        skip_unless_required(f"cannot make the offline base image here: {exc}")


@pytest.fixture(scope="module")
def cuda13() -> toolchain.Toolchain:
    return toolchain.provision(CudaVersion(13, 0))  # cached after the first run on a machine


def fresh_copy(dest: Path) -> Path:
    """This repository as a clone of the commit being made has it."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: cannot tell the repository's files")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        source = REPO / os.fsdecode(name)
        if source.is_file() or source.is_symlink():  # (a tracked file deleted meanwhile: not)
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


def base_python() -> Path:
    """A Python outside the repository and outside this test's environment: the
    system's when it can make virtual environments, else the one this environment
    was made from."""
    system = Path("/usr/bin/python3")
    if system.is_file():
        probe = subprocess.run(
            [
                str(system),
                "-c",
                "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            return system
    return Path(getattr(sys, "_base_executable", sys.executable))


def own_cache(root: Path) -> Path:
    """A result cache of its own, with the machine's CUDA toolchains in it."""
    cache = root / "cache"
    cache.mkdir(parents=True)
    (cache / "toolchains").symlink_to(toolchain.cache_root() / "toolchains")
    return cache


def user_env(cache: Path) -> dict[str, str]:
    """The environment of a user's shell: nothing of this test's virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env["KERNEL_MATRIX_CACHE"] = str(cache)
    return env


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: int) -> str:
    """Run, and fail the test with the output's end when it fails."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}:\n{done.stdout[-6000:]}"
    return done.stdout


def cuobjdump_kernels(library: Path) -> dict[str, set[str]]:
    """``{cubin arch: names of its kernels}``, read by cuobjdump (the ELF truth)."""
    out = subprocess.run(
        [str(toolchain.cuobjdump()), "--dump-elf-symbols", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kernels: dict[str, set[str]] = {}
    arch = None
    in_ptx = False
    for line in out.splitlines():
        if line.startswith("Fatbin"):
            in_ptx = "ptx" in line
        elif line.startswith("arch =") and not in_ptx:
            arch = line.split("=", 1)[1].strip()
            kernels.setdefault(arch, set())
        elif line.startswith("FUNC") and " ENTRY " in line and arch and not in_ptx:
            kernels[arch].add(line.split()[-1])
    return kernels


def kernel_names(mangled: set[str]) -> set[str]:
    """The sample extension's kernels among ``mangled`` names (an identifier is
    mangled as its length, then itself: ``18nvfp4_quant_kernelE``)."""
    return {k for k in SAMPLE_KERNELS for name in mangled if f"{len(k)}{k}E" in name}


# Every __global__ function of examples/sample_ext/csrc.
SAMPLE_KERNELS = KERNELS_IN_SM121A | {
    "cutlass_mla_sm100_kernel",
    "scaled_mm_sm100_kernel",
    "scaled_mm_sm90_kernel",
    "sm100_cutlass_mla_kernel",
}


def cell_result(out_dir: Path) -> dict[str, object]:
    return dict(json.loads((out_dir / "cells" / f"{CELL}.json").read_text()))


def built_in_a_container(result: dict[str, object], out_dir: Path) -> None:
    """The cell was built (not read from a cache) in a container, on the mounted toolchain."""
    assert result["status"] == "passed", result.get("reason")
    assert result["cached"] is False
    assert " mounted in docker image kernel-matrix-build:cu13.0-" in str(result["toolchain"])
    log = (out_dir / str(result["log"])).read_text()
    assert log.startswith("# kernel-matrix docker: image kernel-matrix-build:cu13.0-")
    assert "-DCMAKE_CUDA_COMPILER=/opt/kernel-matrix/cuda-13.0/bin/nvcc" in log
    assert "Linking CUDA shared library _C.so" in log


# --- installed without -e ------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a virtual environment with kernel-matrix installed without -e, the copy it
    was installed from, without its orchestrator/ package afterwards)."""
    root = tmp_path_factory.mktemp("installed")
    copy = fresh_copy(root / "clone")
    venv = root / "venv"
    python = base_python()
    assert REPO not in python.resolve().parents
    env = user_env(root)
    run([str(python), "-m", "venv", str(venv)], cwd=root, env=env, timeout=300)
    run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(copy)],
        cwd=root,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    # Nothing of the checkout may be needed at run time: only the package is left.
    shutil.rmtree(copy / "orchestrator")
    where = run(
        [str(venv / "bin" / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=root,
        env=env,
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(venv)
    return venv, copy


def test_installed_package_builds_a_cell_in_a_container_like_locally(
    installed: tuple[Path, Path],
    base_image: str,
    cuda13: toolchain.Toolchain,
    tmp_path: Path,
) -> None:
    """Locally, then in a container, in the same build directory (as after `nox -s
    matrix`): the container must not inherit the local CMake cache's tool paths."""
    venv, copy = installed
    env = user_env(own_cache(tmp_path))
    build = tmp_path / "build"
    outs = {backend: tmp_path / backend for backend in ("local", "docker")}
    for backend, out in outs.items():
        argv = [
            str(venv / "bin" / "kernel-matrix"), "run", str(copy / "matrix.yaml"),
            "--only", CELL, "--backend", backend, "--jobs", "1",
            "--out", str(out), "--build-dir", str(build),
        ]  # fmt: skip
        if backend == "docker":
            argv += ["--docker-base-image", base_image, "--docker-toolchain", "mount"]
        run(
            argv,
            cwd=tmp_path,
            env={**env, "KERNEL_MATRIX_DOCKER_OFFLINE": "1"} if backend == "docker" else env,
            timeout=RUN_TIMEOUT_S,
        )
        if backend == "local":
            assert f"{venv}/bin/ninja" in (build / CELL / "CMakeCache.txt").read_text()
            shutil.copy2(build / CELL / "_C.so", tmp_path / "local_C.so")
    local, in_docker = cell_result(outs["local"]), cell_result(outs["docker"])
    assert local["cached"] is False
    built_in_a_container(in_docker, outs["docker"])
    assert " --fresh\n" in (outs["docker"] / str(in_docker["log"])).read_text()

    def comparable(result: dict[str, object]) -> dict[str, object]:
        return {k: result[k] for k in ("status", "inventory", "verdicts", "skip_lines")}

    assert comparable(in_docker) == comparable(local)
    # The libraries themselves, read by cuobjdump: the same kernels in the same cubins.
    in_container = cuobjdump_kernels(build / CELL / "_C.so")
    assert in_container == cuobjdump_kernels(tmp_path / "local_C.so")
    assert kernel_names(in_container["sm_121a"]) == KERNELS_IN_SM121A


# --- the README's docker section, as written -------------------------------------------------


def readme_docker_commands() -> str:
    """The first ```bash block of README.md's "Docker backend" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Docker backend\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```bash\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, "README.md's Docker backend section has no ```bash block"
    return match[1]


@pytest.mark.parametrize("install", ["pip install .", "pip install -e ."])
def test_readme_docker_section_as_written(
    install: str, base_image: str, cuda13: toolchain.Toolchain, tmp_path: Path
) -> None:
    """The README's commands, in order, in a fresh copy: from a plain install as
    written, and from an editable one (which the README says works as well)."""
    commands = readme_docker_commands()
    assert ".venv/bin/pip install .\n" in commands
    assert "docker base-image" in commands and "--backend docker" in commands
    if install == "pip install -e .":
        assert "`pip install -e .` works as well" in (REPO / "README.md").read_text()
        commands = commands.replace(".venv/bin/pip install .\n", ".venv/bin/pip install -e .\n")
    prelude = "set -euo pipefail\n"
    if shutil.which("sudo") is None or os.geteuid() == 0:
        if os.geteuid() != 0:
            pytest.skip("the README's commands use sudo, which this machine lacks")
        prelude += 'sudo() { "$@"; }  # root already: what sudo would do\n'
    elif subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("the README's commands use sudo, which needs a password here")
    clone = fresh_copy(tmp_path / "clone")
    output = run(
        ["bash", "-c", prelude + commands],
        cwd=clone,
        env=user_env(own_cache(tmp_path)),
        timeout=INSTALL_TIMEOUT_S + RUN_TIMEOUT_S,
    )
    assert base_image in output.splitlines()  # what `docker base-image` printed
    (out_dir,) = (clone / "reports").glob("2*")  # the one run the commands made
    result = cell_result(out_dir)
    built_in_a_container(result, out_dir)
    listed = result["verdicts"]
    assert isinstance(listed, list)
    verdicts = {(v["family"], v["device"]): v["status"] for v in listed}
    assert {f for (f, device), s in verdicts.items() if s == "present"} == FAMILIES_ON_12_1
    assert set(verdicts.values()) == {"present", "not-applicable"}
    library = clone / "build" / "matrix" / CELL / "_C.so"  # build/<matrix stem>/<cell>
    assert kernel_names(cuobjdump_kernels(library)["sm_121a"]) == KERNELS_IN_SM121A
    site = clone / ".venv" / "lib"
    installed_at = sorted(site.glob("python3*/site-packages/orchestrator"))
    assert bool(installed_at) == (install == "pip install .")  # -e: no copy of the package
