"""Ctrl-C while a configure environment is being provisioned (issue 35, item 2).

A real ``kernel-matrix run --tier configure`` of a ``build: pip`` project with two
cells, in a subprocess of its own process group; its one Python package comes, by
real pip, from a package index on 127.0.0.1 that sends it slowly (16 kB every
0.5 s: about 30 s in all). Once pip has started the download, the run is stopped:

* by SIGINT to the process group (Ctrl-C in a terminal: pip gets it too), and
* by SIGINT to kernel-matrix alone (``kill -INT``: pip does not).

Either way the run must exit 130 within seconds, the second cell -- which waited
for the first cell's install -- must not start an install of its own (the index
is asked for the file once), and the cache must hold no environment that a later
run would take for complete (nor the half-downloaded staging folder).

Nothing is compiled: the CUDA home's nvcc only answers ``--version``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from package_index import publish, serving

from orchestrator.building.configure_env import COMPLETE_MARK

REPO = Path(__file__).resolve().parents[3]
MATRIX = """\
project:
  source: src
  build: pip
  configure:
    python:
      requirements: [requirements.txt]
      packages: [slowpkg]
cuda: ["13.0"]
archs: ["9.0a", "12.1a"]
families:
  nvfp4:
    sources: [nvfp4_*.cu]
    devices: ["9.0", "12.1"]
"""
DELAY_S = 0.5  # per 16 kB chunk: the 1 MB wheel takes ~32 s to download
STOPPED_WITHIN_S = 8.0


def slow_wheel() -> bytes:
    """A valid wheel of ``slowpkg`` 1.0 with 1 MB that does not compress."""
    buffer = io.BytesIO()
    info = "slowpkg-1.0.dist-info"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr("slowpkg/__init__.py", "")
        wheel.writestr("slowpkg/blob.bin", os.urandom(1 << 20))
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: slowpkg\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    return buffer.getvalue()


def project(tmp: Path) -> None:
    (tmp / "m.yaml").write_text(MATRIX)
    (tmp / "src").mkdir()
    (tmp / "src" / "CMakeLists.txt").write_text("project(p)\n")
    (tmp / "src" / "requirements.txt").write_text("slowpkg==1.0\n")
    nvcc = tmp / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n')
    nvcc.chmod(0o755)
    publish(tmp / "index", "slowpkg", "slowpkg-1.0-py3-none-any.whl", slow_wheel())


@pytest.mark.parametrize("whom", ["process group", "kernel-matrix alone"])
def test_ctrl_c_stops_provisioning_and_the_cell_waiting_for_it(tmp_path: Path, whom: str) -> None:
    project(tmp_path)
    asked: list[str] = []
    with serving(tmp_path / "index", delay=DELAY_S, files_asked=asked) as url:
        env = {
            **os.environ,
            "KERNEL_MATRIX_CACHE": str(tmp_path / "cache"),
            "PIP_INDEX_URL": url,
            "PIP_FIND_LINKS": "",
            "PIP_NO_CACHE_DIR": "1",
            "PIP_RETRIES": "0",
            "no_proxy": "127.0.0.1",
            "NO_COLOR": "1",
        }
        argv = [
            sys.executable, "-m", "orchestrator", "run", str(tmp_path / "m.yaml"),
            "--tier", "configure", "--cuda-home", str(tmp_path / "cuda"), "--jobs", "2",
            "--no-cache", "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"),
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
        try:
            deadline = time.monotonic() + 60
            while not asked and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert asked, f"pip never asked for the wheel: {proc.communicate(timeout=60)}"
            time.sleep(1.0)  # well into the download (~2 of 64 chunks)
            interrupted = time.monotonic()
            if whom == "process group":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            took = time.monotonic() - interrupted
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    print(f"{whom}: exit {proc.returncode} {took:.1f} s after the SIGINT")
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert took < STOPPED_WITHIN_S, f"exited {took:.1f} s after the SIGINT: {err}"
    # The second cell waited for the first one's install and gave up with the run.
    assert asked == ["/files/slowpkg-1.0-py3-none-any.whl"], asked
    python = tmp_path / "cache" / "python"
    assert not list(python.glob(f"*/{COMPLETE_MARK}"))
    left = sorted(p.name for p in python.iterdir() if not p.name.endswith(".lock"))
    assert left == [], f"left in the cache: {left}"
