"""The Debian CUDA 12.x provider without the network: the private sources list built
from the host's own apt sources, the CUDA_HOME laid out from the packages' files
with a relative nvcc.profile, and the error paths (missing suite, missing package,
unreadable sources list, a bad signature) against a local, signed package archive
that the test makes (file: URIs, real apt-get and gpg). The real archive and the
real packages are exercised by tests/integration/test_debian_toolchain.py."""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion, parse_arch_list
from orchestrator.common.errors import EXIT_INFRA, ToolchainError
from orchestrator.planning.matrix import CellSpec
from orchestrator.planning.plan import TOOLCHAIN_UNAVAILABLE, plan_cell
from orchestrator.toolchains import aptsources, debian
from orchestrator.toolchains.debian import Mirror

CUDA = CudaVersion(12, 4)
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'


def host(tmp_path: Path, sources: str, *, os_release: str = OS_RELEASE) -> tuple[Path, Path]:
    """A fake /etc/apt (sources.list only) and /etc/os-release."""
    root = tmp_path / "etc-apt"
    root.mkdir()
    (root / "sources.list").write_text(sources)
    release = tmp_path / "os-release"
    release.write_text(os_release)
    return root, release


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))


# --- the sources list ---------------------------------------------------------------


def test_mirrors_are_the_hosts_debian_archives_with_their_keyrings(tmp_path: Path) -> None:
    key = tmp_path / "archive.gpg"
    key.write_bytes(b"key")
    root, release = host(
        tmp_path,
        f"deb [signed-by={key}] http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian bookworm-updates main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb http://vendor.example/apt cloud-sdk-bookworm main\n",
    )
    (root / "sources.list.d").mkdir()
    (root / "sources.list.d" / "second.sources").write_text(
        "Types: deb\nURIs: http://other.example/debian/\nSuites: bookworm\nComponents: main\n"
    )
    mirrors = debian.debian_mirrors(root, release)
    assert mirrors == [
        Mirror("http://mirror.example/debian", key),
        Mirror("http://mirror.example/debian", None),
        Mirror("http://other.example/debian", None),
    ]
    text = debian.sources_list(debian.RELEASES[CUDA], mirrors[:1] + mirrors[2:])
    assert text.splitlines() == [
        f"deb [signed-by={key}] http://mirror.example/debian trixie non-free",
        f"deb [signed-by={key}] http://mirror.example/debian sid non-free",
        "deb http://other.example/debian trixie non-free",
        "deb http://other.example/debian sid non-free",
    ]
    experimental = debian.sources_list(debian.RELEASES[CudaVersion(12, 5)], mirrors[:1])
    assert (
        experimental
        == f"deb [signed-by={key}] http://mirror.example/debian experimental non-free\n"
    )


def test_host_problems_are_one_line_each(tmp_path: Path) -> None:
    root, release = host(tmp_path, "deb http://mirror.example/debian bookworm main\n")
    assert debian.host_problem(CUDA, root, release) is None
    assert "no CUDA 12.8" in (debian.host_problem(CudaVersion(12, 8), root, release) or "")
    ubuntu = tmp_path / "ubuntu"
    ubuntu.write_text("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n")
    assert "is not Debian" in (debian.host_problem(CUDA, root, ubuntu) or "")
    assert "ID=ubuntu" in (debian.host_problem(CUDA, root, ubuntu) or "")
    other = tmp_path / "other"
    other.mkdir()
    (other / "sources.list").write_text("deb http://vendor.example/apt nodistro main\n")
    said = debian.host_problem(CUDA, other, release) or ""
    assert "no enabled apt source of this host lists its Debian release 'bookworm'" in said


def test_unreadable_sources_list_is_named(tmp_path: Path) -> None:
    root = tmp_path / "etc-apt"
    (root / "sources.list").mkdir(parents=True)  # exists, cannot be read (even by root)
    release = tmp_path / "os-release"
    release.write_text(OS_RELEASE)
    said = debian.host_problem(CUDA, root, release) or ""
    assert f"cannot read {root / 'sources.list'}" in said
    with pytest.raises(ToolchainError) as caught:
        debian.provision(CUDA, apt_root=root, os_release=release)
    assert caught.value.exit_code == EXIT_INFRA
    assert "\n" not in str(caught.value) and "--cuda-home" in str(caught.value)


# --- the CUDA_HOME layout -----------------------------------------------------------


def build_deb(tmp_path: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A real .deb (dpkg-deb --build) holding ``files`` (paths under /)."""
    tree = tmp_path / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: test <test@example.invalid>\nSection: non-free/devel\n"
        f"Description: test package\n{extra_control.get(name, '')}"
    )
    for path, data in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if "/bin/" in path else 0o644)
    out = tmp_path / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


extra_control: dict[str, str] = {}

TOOLKIT_FILES = {
    "usr/bin/nvcc": b'#!/bin/sh\nexec /usr/lib/nvidia-cuda-toolkit/bin/nvcc "$@"\n',
    "usr/bin/ptxas": b"ptxas",
    "usr/bin/fatbinary": b"fatbinary",
    "usr/bin/nvlink": b"nvlink",
    "usr/bin/cudafe++": b"cudafe",
    "usr/lib/nvidia-cuda-toolkit/bin/nvcc": b"the real nvcc",
    "usr/lib/nvidia-cuda-toolkit/bin/cicc": b"cicc",
    "usr/lib/nvidia-cuda-toolkit/bin/g++": b"#!/bin/sh\n",
    "usr/lib/nvidia-cuda-toolkit/bin/crt/link.stub": b"stub",
    "usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc": b"bc",
    "usr/lib/nvidia-cuda-toolkit/compute-sanitizer/compute-sanitizer": b"big",
    "etc/nvcc.profile": b"NVVMIR_LIBRARY_DIR = /usr/lib/nvidia-cuda-toolkit/libdevice\n",
}
DEV_FILES = {
    "usr/include/cuda_runtime.h": b"// runtime",
    "usr/include/crt/host_config.h": b"// crt",
    "usr/lib/x86_64-linux-gnu/libcudart_static.a": b"!<arch>\n",
    "usr/lib/x86_64-linux-gnu/libcudadevrt.a": b"!<arch>\n",
    "usr/lib/x86_64-linux-gnu/libculibos.a": b"!<arch>\n",
    "usr/lib/x86_64-linux-gnu/libcublasLt_static.a": b"not needed",
    "usr/lib/x86_64-linux-gnu/stubs/libcuda.so": b"\x7fELF",
    "usr/lib/x86_64-linux-gnu/stubs/libcublas.so": b"\x7fELF",
}


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_packages_unpack_into_a_relocatable_cuda_home(tmp_path: Path) -> None:
    toolkit = build_deb(tmp_path, "nvidia-cuda-toolkit", "12.4.131~12.4.1-2", TOOLKIT_FILES)
    dev = build_deb(tmp_path, "nvidia-cuda-dev", "12.4.127~12.4.1-2", DEV_FILES)
    home = tmp_path / "home"
    log: list[str] = []
    debian.unpack(toolkit, home, debian.toolkit_member, "toolkit", log)
    debian.unpack(dev, home, debian.dev_member, "dev", log)
    with pytest.raises(ToolchainError, match="lacks include/nv/target"):
        debian.write_profile(home)
    (home / "include" / "nv").mkdir()
    (home / "include" / "nv" / "target").write_text("// from CCCL")
    debian.write_profile(home)
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert files == [
        "bin/crt/link.stub", "bin/cudafe++", "bin/fatbinary", "bin/nvcc", "bin/nvcc.profile",
        "bin/nvlink", "bin/ptxas", "include/crt/host_config.h", "include/cuda_runtime.h",
        "include/nv/target", "lib64/libcudadevrt.a", "lib64/libcudart_static.a",
        "lib64/libculibos.a", "lib64/stubs/libcuda.so", "nvvm/bin/cicc",
        "nvvm/libdevice/libdevice.10.bc",
    ]  # fmt: skip
    assert (home / "bin" / "nvcc").read_bytes() == b"the real nvcc"  # not Debian's wrapper
    assert os.access(home / "bin" / "nvcc", os.X_OK)
    profile = (home / "bin" / "nvcc.profile").read_text()
    assert "TOP                = $(_HERE_)/.." in profile
    assert "/usr/" not in profile and "/etc/" not in profile
    assert '"-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"' in profile
    assert any("unpacked 8 files of toolkit" in line for line in log)


# --- a local signed archive: the error paths, through the real apt ------------------


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """A throwaway gpg key: the environment that signs with it, and its public keyring."""
    if shutil.which("gpg") is None or shutil.which("apt-get") is None:
        pytest.skip("needs gpg and apt-get")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
         "kernel-matrix test <test@example.invalid>", "default", "default", "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    keyring = home.parent / f"{home.name}-public.gpg"
    keyring.write_bytes(
        subprocess.run(["gpg", "--export"], env=env, check=True, capture_output=True).stdout
    )
    yield env, keyring
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


def make_archive(
    root: Path, env: dict[str, str], suites: dict[str, list[Path]], component: str = "non-free"
) -> str:
    """A signed archive at ``root`` with ``suites`` (suite → its .deb files), as apt
    reads it: dists/<suite>/InRelease, <component>/binary-<arch>/Packages, pool/."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for suite, debs in suites.items():
        pool = root / "pool" / suite
        pool.mkdir(parents=True)
        for deb in debs:
            shutil.copy(deb, pool / deb.name)
        packages = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", f"pool/{suite}", "/dev/null"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        index = f"{component}/binary-{arch}/Packages"
        dist = root / "dists" / suite
        (dist / index).parent.mkdir(parents=True)
        (dist / index).write_text(packages)
        digest = hashlib.sha256(packages.encode()).hexdigest()
        release = (
            f"Origin: test\nSuite: {suite}\nCodename: {suite}\nArchitectures: {arch}\n"
            f"Components: {component}\nDate: {email.utils.formatdate(usegmt=True)}\n"
            f"SHA256:\n {digest} {len(packages.encode())} {index}\n"
        )
        (dist / "Release").write_text(release)
        subprocess.run(
            ["gpg", "--batch", "--yes", "--clearsign", "-o", str(dist / "InRelease"),
             str(dist / "Release")],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
    return f"file:{root}"


def toolkit_debs(tmp_path: Path, toolkit: str = "12.4.131~12.4.1-2") -> list[Path]:
    extra_control["nvidia-cuda-toolkit"] = "Depends: nvidia-cuda-dev (= 12.4.127~12.4.1-2)\n"
    try:
        return [
            build_deb(tmp_path, "nvidia-cuda-toolkit", toolkit, TOOLKIT_FILES),
            build_deb(tmp_path, "nvidia-cuda-dev", "12.4.127~12.4.1-2", DEV_FILES),
        ]
    finally:
        extra_control.clear()


def provision_from(
    tmp_path: Path, uri: str, keyring: Path, monkeypatch: pytest.MonkeyPatch
) -> ToolchainError:
    root, release = host(tmp_path, f"deb [signed-by={keyring}] {uri} bookworm main\n")
    monkeypatch.setattr(aptsources, "APT_ROOT", root)
    monkeypatch.setattr(aptsources, "OS_RELEASE", release)
    with pytest.raises(ToolchainError) as caught:
        debian.provision(CUDA)
    assert caught.value.exit_code == EXIT_INFRA
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_missing_suite_is_one_line(
    tmp_path: Path, signing_key: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, keyring = signing_key
    uri = make_archive(
        tmp_path / "archive", env, {"bookworm": [], "trixie": toolkit_debs(tmp_path)}
    )
    error = provision_from(tmp_path, uri, keyring, monkeypatch)
    assert "apt-get update" in str(error)
    assert "sid Release' does not have a Release file" in str(error)
    assert not debian.debian_home(CUDA).exists()  # nothing half-made is left


def test_a_withdrawn_package_is_one_line_and_planning_says_so(
    tmp_path: Path, signing_key: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, keyring = signing_key
    debs = toolkit_debs(tmp_path, toolkit="12.3.107~12.3.2-1")  # another CUDA only
    uri = make_archive(tmp_path / "archive", env, {"bookworm": [], "trixie": debs, "sid": []})
    error = provision_from(tmp_path, uri, keyring, monkeypatch)
    assert str(error).startswith(
        "toolchain unavailable: CUDA 12.4 from Debian's non-free archive: "
    )
    assert "no nvidia-cuda-toolkit 12.4.* in the archive (suites trixie, sid, non-free" in str(
        error
    )
    assert not debian.debian_home(CUDA).exists()
    # Remembered: planning marks the cells unavailable with the same line, offline.
    assert debian.availability(CUDA) == str(error)
    cell = plan_cell(CellSpec(CUDA, parse_arch_list("9.0a")), "local")
    assert (cell.status, cell.reason) == (TOOLCHAIN_UNAVAILABLE, str(error))


def test_an_archive_signed_by_another_key_is_refused(
    tmp_path: Path, signing_key: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _ = signing_key
    uri = make_archive(
        tmp_path / "archive", env, {"bookworm": [], "trixie": toolkit_debs(tmp_path), "sid": []}
    )
    stranger = tmp_path / "stranger.gpg"
    stranger.write_bytes(b"")  # a keyring without the archive's key
    error = provision_from(tmp_path, uri, stranger, monkeypatch)
    assert "apt-get update" in str(error)
    assert "NO_PUBKEY" in str(error) or "not signed" in str(error) or "signature" in str(error)
