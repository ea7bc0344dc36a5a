"""The README's first command, literally, with the system's own ``python3`` of Debian or
Ubuntu, which refuses ``pip install`` into itself (PEP 668, "externally managed"):
it must still set up nox. Only its last word differs here: ``nox --list`` instead of
``nox -s matrix`` (test_end_to_end runs the matrix itself)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_docker_install import fresh_copy

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def externally_managed(python: Path) -> bool:
    if not python.exists():
        return False
    stdlib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


def first_readme_command() -> str:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README.md has no bash block"
    line = block[1].splitlines()[0]
    return line.split("#")[0].strip()


@pytest.mark.integration
def test_the_first_command_works_with_a_pep_668_python(tmp_path: Path) -> None:
    if not externally_managed(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is not an externally managed (PEP 668) interpreter here")
    command = first_readme_command()
    assert command.endswith(".venv/bin/nox -s matrix"), command
    command = command.removesuffix("-s matrix") + "--list"
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").symlink_to(SYSTEM_PYTHON)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{shim}{os.pathsep}/usr/bin{os.pathsep}/bin"
    clone = fresh_copy(tmp_path / "clone")
    # The interpreter really refuses: what the README's first command must get around.
    refused = subprocess.run(
        ["python3", "-m", "pip", "install", "--dry-run", "nox"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sessions = done.stdout + done.stderr
    assert "matrix" in sessions and "tests" in sessions
    assert (clone / ".venv" / "bin" / "nox").exists()
