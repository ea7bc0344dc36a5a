"""Long work is not silent: a running cell's elapsed time and current step (from
its log) and a download's size and rate reach the console; in a CI log (no
terminal) as plain lines. The download watch reads a real pip's announcements."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from rich.console import Console

from orchestrator.common import progress
from orchestrator.reporting.progress_view import RunProgress, current_step
from orchestrator.toolchains.cuda import DownloadWatch

LOG = """\
kernel-matrix: toolchain CUDA 13.0.88 (pypi, /cache/cuda-13.0)
$ /venv/bin/cmake -S /src -B /build -G Ninja
-- Configuring done
$ /venv/bin/cmake --build /build -j 2
[1/9] Building CXX object CMakeFiles/_C.dir/entry.cpp.o
[3/9] Building CUDA object CMakeFiles/_C.dir/nvfp4_quant_kernels.cu.o
"""


def test_current_step_is_the_last_command_and_ninja_line(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(LOG)
    assert current_step(log) == (
        "cmake --build",
        "[3/9] Building CUDA object CMakeFiles/_C.dir/nvfp4_quant_kernels.cu.o",
    )
    assert current_step(tmp_path / "none.log") == ("", "")


def test_during_a_configure_the_detail_is_cmakes_last_status_line(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(
        "$ cmake -S src -B build\n-- The CXX compiler identification is GNU 12.2.0\n"
        "-- Building libc++ with zig for torch's CMake\nsome other output\n"
    )
    assert current_step(log) == ("cmake configure", "-- Building libc++ with zig for torch's CMake")


def test_plain_progress_names_the_cell_its_time_its_step_and_downloads(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    stream = io.StringIO()
    out = Console(file=stream, width=120, force_terminal=False)
    with RunProgress(out, tmp_path / "logs", live=False, interval=0.2) as watching:
        watching.started("cu13.0-12.1a")
        worker = threading.Thread(
            target=lambda: (progress.bind("cu13.0-12.1a"), progress.report("downloading x: 3 MB"))
        )
        worker.start()
        worker.join()
        time.sleep(0.5)
        (tmp_path / "logs" / "cu13.0-12.1a.log").write_text(LOG)  # the build begins
        time.sleep(2.5)  # the plain view looks every 2 s at most
        watching.finished("cu13.0-12.1a")
    text = stream.getvalue()
    assert "… cu13.0-12.1a: downloading x: 3 MB" in text
    assert "… cu13.0-12.1a: " in text and "s, cmake --build [3/9] Building CUDA object" in text
    assert "\x1b[" not in text  # plain lines in CI
    progress.report("after the run: nobody listens")  # no sink: nothing happens


def test_plain_progress_says_a_repeated_report_once_per_interval(tmp_path: Path) -> None:
    """A download reports every 2 s; a CI log gets its line every 30 s (the interval),
    and a new step (the words before the colon) at once."""
    (tmp_path / "logs").mkdir()
    stream = io.StringIO()
    out = Console(file=stream, width=120, force_terminal=False)
    with RunProgress(out, tmp_path / "logs", live=False) as watching:
        assert watching.interval == 30
        watching.started("cu13.0-12.1a")
        for mb in range(1, 6):
            progress.bind("cu13.0-12.1a")
            progress.report(f"downloading CUDA 13.0 toolchain: 1 file, {mb} of 9 MB")
        progress.report("installing CUDA 13.0 toolchain: 1 file, 9 MB downloaded in 4 s")
        progress.report("installing CUDA 13.0 toolchain: 1 file, 9 MB downloaded in 4 s")
        progress.bind(None)
        progress.report("downloading cuobjdump: 1 of 2 MB")  # for no cell
        progress.report("downloading cuobjdump: 2 of 2 MB")
        watching.finished("cu13.0-12.1a")
    assert stream.getvalue().splitlines() == [
        "… cu13.0-12.1a: downloading CUDA 13.0 toolchain: 1 file, 1 of 9 MB",
        "… cu13.0-12.1a: installing CUDA 13.0 toolchain: 1 file, 9 MB downloaded in 4 s",
        "… kernel-matrix: downloading cuobjdump: 1 of 2 MB",
    ]


def test_a_finished_download_is_reported_once_with_its_final_rate(tmp_path: Path) -> None:
    heard: list[str] = []
    progress.set_sink(lambda cell, message: heard.append(message))
    try:
        watch = DownloadWatch(tmp_path, "CUDA 13.0 toolchain", interval=0.05)
        watch.saw("  Downloading nvidia_cuda_nvcc-13.0.88-py3-none-manylinux.whl (2.0 MB)\n")
        (tmp_path / "pip-unpack-1").mkdir()
        (tmp_path / "pip-unpack-1" / "a.whl").write_bytes(bytes(2_000_000))
        watch.start()
        time.sleep(0.3)
        watch.saw("Installing collected packages: nvidia-cuda-nvcc\n")
        (tmp_path / "pip-unpack-1" / "a.whl").unlink()  # installed: pip deletes it
        final = watch.line()
        time.sleep(1.1)  # the install goes on: seconds pass, nothing more is said
        assert watch.line() == final
        watch.stop()
    finally:
        progress.set_sink(None)
    assert final.startswith("installing CUDA 13.0 toolchain: 1 file, 2.0 MB downloaded in ")
    assert heard[0].startswith("downloading CUDA 13.0 toolchain: 1 file, 2.0 of 2.0 MB, ")
    assert heard.count(final) == 1 and heard[-1] == final
    assert all(line.startswith("downloading") for line in heard[:-1])


def test_download_watch_counts_announced_and_received_bytes(tmp_path: Path) -> None:
    watch = DownloadWatch(tmp_path, "CUDA 13.0 toolchain")
    watch.saw("Collecting cuda-toolkit[nvcc]==13.0.*\n")
    watch.saw("  Downloading nvidia_cuda_nvcc-13.0.88-py3-none-manylinux.whl (53.2 MB)\n")
    watch.saw("  Downloading nvidia_nvvm-13.0.88-py3-none-manylinux.whl (700 kB)\n")
    (tmp_path / "pip-unpack-1").mkdir()
    (tmp_path / "pip-unpack-1" / "a.whl").write_bytes(bytes(2_000_000))
    line = watch.line()
    assert line.startswith("downloading CUDA 13.0 toolchain: 2 files, 2.0 of 54 MB, ")
    assert "MB/s" in line
    (tmp_path / "pip-unpack-1" / "a.whl").unlink()  # installed and deleted: still counted
    assert watch.received() == 2_000_000


def test_live_progress_on_a_terminal_shows_the_running_cell(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "cu13.0-9.0a.log").write_text(LOG)
    stream = io.StringIO()
    out = Console(file=stream, width=100, force_terminal=True, highlight=False)
    with RunProgress(out, tmp_path / "logs", interval=0.1) as watching:
        assert watching.live
        watching.started("cu13.0-9.0a")
        time.sleep(1.0)
        out.print("✅ cu13.0-9.0a passed in 1.0 s")  # printed above the live display
        watching.finished("cu13.0-9.0a")
    text = stream.getvalue()
    assert "⏳ cu13.0-9.0a" in text and "cmake --build" in text
    assert "✅ cu13.0-9.0a passed in 1.0 s" in text
