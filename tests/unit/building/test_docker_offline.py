"""The registry-free path of the docker backend without an engine: where the base
image's packages come from (the host's apt sources), the ``docker base-image`` verb's
errors, the mounted tools, and build directories configured by another toolchain."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import docker.errors
import pytest
from test_docker_engine import FakeEngine, write_matrix

from orchestrator import cli
from orchestrator.building.backends import offline_base
from orchestrator.building.backends.container import Engine
from orchestrator.building.backends.docker import MOUNT_ROOT, DockerBackend, HostTools
from orchestrator.building.backends.offline_base import (
    AptSource,
    BaseRecipe,
    apt_sources,
    ensure_offline_base,
    host_recipe,
    make_rootfs_tarball,
)
from orchestrator.building.recipe import TOOLCHAIN_STAMP, toolchain_changed
from orchestrator.common.errors import (
    EXIT_INFRA,
    EXIT_USAGE,
    DockerError,
    ToolchainError,
    ToolError,
)
from orchestrator.planning.matrix import load_matrix

# Written as the hosts write them; the URIs are placeholders, never a real mirror.
ONE_LINE = """\
# a comment
deb http://archive.example/debian bookworm main contrib
deb-src http://archive.example/debian bookworm main
deb [arch=amd64 signed-by={key}] http://security.example/debian-security bookworm-security main
deb file:/srv/local-debs ./
"""
DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://deb822.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {key}

Types: deb deb-src
URIs: http://other.example/ubuntu/
Suites: noble noble-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 xsFNBF...
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: trixie
"""


@pytest.fixture
def apt_root(tmp_path: Path) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    key = tmp_path / "archive-keyring.gpg"
    key.write_bytes(b"not checked here")
    (root / "sources.list.d" / "b.sources").write_text(DEB822.format(key=key))
    (root / "sources.list.d" / "a.list").write_text(ONE_LINE.format(key=key))
    (root / "sources.list.d" / "c.list.disabled").write_text("deb http://x.example/d sid main\n")
    return root


def os_release(tmp_path: Path, codename: str) -> Path:
    path = tmp_path / "os-release"
    path.write_text(f'PRETTY_NAME="Some Linux"\nVERSION_CODENAME={codename}\n')
    return path


def test_apt_sources_in_apt_order(apt_root: Path, tmp_path: Path) -> None:
    key = tmp_path / "archive-keyring.gpg"
    listed = apt_root / "sources.list.d"
    assert apt_sources(apt_root) == [
        AptSource("http://archive.example/debian", ("bookworm",), None, listed / "a.list"),
        AptSource(
            "http://security.example/debian-security",
            ("bookworm-security",),
            key,
            listed / "a.list",
        ),
        AptSource("file:/srv/local-debs", ("./",), None, listed / "a.list"),
        AptSource(
            "http://deb822.example/debian",
            ("bookworm", "bookworm-updates"),
            key,
            listed / "b.sources",
        ),
        # an inline key block is no key file
        AptSource(
            "http://other.example/ubuntu/", ("noble", "noble-updates"), None, listed / "b.sources"
        ),
    ]


def test_recipe_takes_the_first_source_of_the_hosts_release(apt_root: Path, tmp_path: Path) -> None:
    recipe = host_recipe(apt_root=apt_root, os_release=os_release(tmp_path, "bookworm"))
    assert (recipe.suite, recipe.mirror, recipe.packages) == (
        "bookworm",
        "http://archive.example/debian",
        ("g++",),
    )
    assert recipe.tag == f"kernel-matrix-base:bookworm-{recipe.digest}"
    noble = host_recipe(apt_root=apt_root, os_release=os_release(tmp_path, "noble"))
    assert noble.mirror == "http://other.example/ubuntu"  # (trailing slash dropped)
    assert noble.digest != recipe.digest


def test_recipe_options_override_the_host(apt_root: Path, tmp_path: Path) -> None:
    release = os_release(tmp_path, "bookworm")
    recipe = host_recipe(
        "trixie",
        "http://given.example/debian/",
        ("g++", "make"),
        apt_root=apt_root,
        os_release=release,
    )
    assert (recipe.suite, recipe.mirror, recipe.packages) == (
        "trixie",
        "http://given.example/debian",
        ("g++", "make"),
    )
    # a disabled source does not count
    with pytest.raises(ToolError, match=r"no enabled apt source of this host lists suite 'trixie'"):
        host_recipe("trixie", apt_root=apt_root, os_release=release)


def test_recipe_without_any_apt_configuration(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"pass --mirror URI \(and --suite\)"):
        host_recipe(apt_root=tmp_path / "none", os_release=tmp_path / "none")
    with pytest.raises(ToolError, match=r"names no release codename: pass --suite"):
        host_recipe(mirror="http://given.example/debian", os_release=tmp_path / "none")


def test_base_image_verb_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["docker", "base-image", "--include", "G++"]) == EXIT_USAGE
    assert cli.main(["docker"]) == EXIT_USAGE
    assert cli.main(["docker", "base-image", "--suite", "no-such-release-x"]) == EXIT_INFRA
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("kernel-matrix: error: ") for line in lines)
    assert "no enabled apt source of this host lists suite 'no-such-release-x'" in lines[2]


class ImageEngine(Engine):
    """The image calls of an engine, recorded: which images it has, what was imported
    and removed; ``fail`` makes an import fail (after tagging, when ``tag_anyway``)."""

    def __init__(self, fail: bool = False, tag_anyway: bool = False) -> None:
        self.images: set[str] = set()
        self.fail, self.tag_anyway = fail, tag_anyway
        self.removed: list[str] = []

    def image_id(self, ref: str) -> str | None:
        return "sha256:1" if ref in self.images else None

    def import_rootfs(self, tarball: Path, *, tag: str, changes: Sequence[str] = ()) -> str:
        assert tarball.is_file()
        if self.tag_anyway:
            self.images.add(tag)
        if self.fail:
            raise DockerError(f"importing {tarball} as {tag} failed: no space left on device")
        self.images.add(tag)
        return "sha256:1"

    def remove_image(self, ref: str) -> None:
        self.removed.append(ref)
        self.images.discard(ref)


MIRROR = ["--suite", "bookworm", "--mirror", "http://archive.example/debian"]


def test_include_adds_packages_to_the_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = ImageEngine()
    with_less = BaseRecipe("bookworm", "http://archive.example/debian", packages=("g++", "less"))
    engine.images.add(with_less.tag)  # made already: the verb prints its tag
    monkeypatch.setattr(Engine, "connect", classmethod(lambda cls: engine))
    assert cli.main(["docker", "base-image", *MIRROR, "--include", "less"]) == 0
    assert capsys.readouterr().out == f"{with_less.tag}\n"
    assert cli.main(["docker", "base-image", *MIRROR, "--include", "less,g++"]) == 0
    assert cli.main(["docker", "base-image", *MIRROR, "--include", "g++", "--include", "less"]) == 0
    assert capsys.readouterr().out == f"{with_less.tag}\n" * 2


@pytest.fixture
def fake_debootstrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[BaseRecipe]:
    """make_rootfs_tarball writes its tarball without debootstrap (which needs root;
    the real one runs in tests/integration/test_docker_backend.py)."""
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    made: list[BaseRecipe] = []

    def make(recipe: BaseRecipe) -> Path:
        made.append(recipe)
        recipe.tarball.write_bytes(b"rootfs")
        return recipe.tarball

    monkeypatch.setattr(offline_base, "make_rootfs_tarball", make)
    return made


@pytest.mark.parametrize("tag_anyway", [False, True])
def test_a_failed_import_leaves_no_image_and_no_tarball(
    fake_debootstrap: list[BaseRecipe], tag_anyway: bool
) -> None:
    recipe = BaseRecipe("bookworm", "http://archive.example/debian")
    engine = ImageEngine(fail=True, tag_anyway=tag_anyway)
    with pytest.raises(DockerError, match="no space left on device"):
        ensure_offline_base(engine, recipe)
    assert fake_debootstrap == [recipe]
    assert not recipe.tarball.exists()
    assert engine.images == set() and engine.removed == [recipe.tag]
    assert ensure_offline_base(ImageEngine(), recipe) == recipe.tag  # a retry starts afresh
    assert fake_debootstrap == [recipe, recipe] and recipe.tarball.is_file()


def test_a_failed_import_keeps_a_tarball_it_did_not_make(
    fake_debootstrap: list[BaseRecipe],
) -> None:
    recipe = BaseRecipe("bookworm", "http://archive.example/debian")
    recipe.tarball.parent.mkdir(parents=True)
    recipe.tarball.write_bytes(b"rootfs of an earlier run")
    with pytest.raises(DockerError):
        ensure_offline_base(ImageEngine(fail=True), recipe)
    assert fake_debootstrap == [] and recipe.tarball.read_bytes() == b"rootfs of an earlier run"


def test_an_import_the_engine_did_not_tag_leaves_no_dangling_image(tmp_path: Path) -> None:
    """The engine answers an import it could not tag with success and an untagged
    image (the SDK itself runs in tests/integration/test_docker_backend.py)."""
    removed: list[str] = []

    def no_image(ref: str) -> None:
        raise docker.errors.ImageNotFound(ref)

    api = SimpleNamespace(
        import_image_from_file=lambda *a, **k: '{"status":"sha256:dangling"}\r\n',
        remove_image=lambda ref, force: removed.append(ref),
    )
    control = SimpleNamespace(api=api, images=SimpleNamespace(get=no_image))
    engine = Engine(control, control)  # type: ignore[arg-type]
    (tmp_path / "rootfs.tar").write_bytes(b"")
    with pytest.raises(DockerError, match="left no image"):
        engine.import_rootfs(tmp_path / "rootfs.tar", tag="kernel-matrix-base:x")
    assert removed == ["sha256:dangling"]


# --- the tools mounted into the container ------------------------------------------------


def test_host_tools_are_the_shipped_binaries_not_the_shims() -> None:
    tools = HostTools.find()
    for binary in (tools.cmake_root / "bin" / "cmake", tools.ninja):
        with binary.open("rb") as handle:
            assert handle.read(4) == b"\x7fELF", binary
    assert any(tools.cmake_root.glob("share/cmake-*/Modules/CMakeDetermineCUDACompiler.cmake"))


def test_tools_the_image_cannot_run_stop_before_any_cell(tmp_path: Path) -> None:
    matrix = load_matrix(write_matrix(tmp_path, "docker: {toolchain: mount}\n"))
    backend = DockerBackend(matrix, engine=FakeEngine(exit_code=127))
    with pytest.raises(ToolchainError) as caught:
        backend._check_mounted_tools("img:1", "/usr/bin", (), MOUNT_ROOT / "cuda-13.0")
    assert str(caught.value) == (
        "docker image img:1 cannot run the mounted CMake (/opt/kernel-matrix/cmake/bin/cmake, "
        "from the host's Python environment): exit 127: hello"
    )
    assert caught.value.exit_code == EXIT_INFRA
    DockerBackend(matrix, engine=FakeEngine())._check_mounted_tools(
        "img:1", "/usr/bin", (), PurePosixPath("/opt/kernel-matrix/cuda-13.0")
    )


# --- a build directory configured by another toolchain -----------------------------------


def test_build_dir_of_another_toolchain_is_configured_afresh(tmp_path: Path) -> None:
    build = tmp_path / "build" / "cu13.0-12.1a"
    assert toolchain_changed(build, "local: CUDA 13.0.88") is False  # nothing there yet
    (build / "CMakeCache.txt").write_text("CMAKE_MAKE_PROGRAM:FILEPATH=/host/venv/bin/ninja\n")
    assert toolchain_changed(build, "local: CUDA 13.0.88") is False  # the same one
    assert toolchain_changed(build, "docker: CUDA 13.0.88 mounted in img:1") is True
    assert (build / TOOLCHAIN_STAMP).read_text() == "docker: CUDA 13.0.88 mounted in img:1"
    assert toolchain_changed(build, "docker: CUDA 13.0.88 mounted in img:1") is False
    os.remove(build / TOOLCHAIN_STAMP)  # a cache of unknown origin
    assert toolchain_changed(build, "docker: CUDA 13.0.88 mounted in img:1") is True


def test_making_the_base_image_says_how_to_run_it_as_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path))
    recipe = BaseRecipe(suite="bookworm", mirror="http://archive.example/debian")
    with pytest.raises(ToolError) as caught:
        make_rootfs_tarball(recipe)
    assert str(caught.value) == (
        f"making the base image {recipe.tag} needs root (debootstrap), once per machine: "
        'sudo "$(command -v kernel-matrix)" docker base-image (with the same options), '
        "or that command without sudo as root; afterwards it needs no root"
    )
    assert not recipe.tarball.exists()
