"""What the result cache costs for a vLLM-sized cell: disk, and the time to store
the cell's artifacts and to restore them into a new build directory on a hit.

The "cell" is a real vLLM release's libraries: every ``.so`` of the wheel (as a
CMake build would leave them in its build directory), unpacked from the wheel that
tests/integration/test_vllm_wheels.py caches under ``<cache>/wheels``. The cache is
a private temporary one on the same file system as the build directories. Medians
of ``--repeat`` runs; the page cache is not dropped (a hit right after a build, as
in CI, reads warm files too).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import ROOT, add_output_options, append_entry, median

sys.path.insert(0, str(ROOT))
from orchestrator.judge.results import PASSED, CellResult
from orchestrator.run import cellcache
from orchestrator.toolchains.cuda import cache_root


def unpack_libraries(wheel: Path, build_dir: Path) -> list[str]:
    """Every shared object of the wheel, at its member path below ``build_dir``."""
    names = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if ".so" in Path(info.filename).name and not info.is_dir():
                target = build_dir / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                names.append(info.filename)
    return sorted(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", action="append", help="vLLM release (default 0.33.0)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory")
    add_output_options(parser)
    args = parser.parse_args()
    rows = []
    wheel_dir = cache_root() / "wheels"  # (before KERNEL_MATRIX_CACHE points elsewhere)
    for release in args.release or ["0.33.0"]:
        wheels = sorted(wheel_dir.glob(f"vllm-{release}-*.whl"))
        if not wheels:
            print(f"no cached wheel of vLLM {release} under {wheel_dir}")
            return 2
        with tempfile.TemporaryDirectory(dir=args.work) as scratch:
            work = Path(scratch)
            os.environ["KERNEL_MATRIX_CACHE"] = str(work / "cache")
            built = work / "build" / "cell"
            artifacts = unpack_libraries(wheels[0], built)
            size = sum((built / a).stat().st_size for a in artifacts)
            log = work / "build.log"
            log.write_text("the build's log\n")
            result = CellResult(cell={"id": "cell"}, status=PASSED, artifacts=artifacts)
            store_s, restore_s = [], []
            for i in range(args.repeat):
                shutil.rmtree(work / "cache", ignore_errors=True)
                started = time.perf_counter()
                cellcache.store(f"k{i}", "build", result, built, log, 1 << 40)
                store_s.append(time.perf_counter() - started)
                stored = cellcache.load(f"k{i}", "build")
                assert stored is not None
                target = work / f"restored{i}" / "cell"
                started = time.perf_counter()
                cellcache.restore(stored, target, work / f"restored{i}.log")
                restore_s.append(time.perf_counter() - started)
                restored = sum((target / a).stat().st_size for a in artifacts)
                assert restored == size, (restored, size)
                shutil.rmtree(target.parent)
            rows.append(
                f"| vLLM {release} | {len(artifacts)} | {size / 1e6:.0f} MB | "
                f"{median(store_s):.2f} | {median(restore_s):.2f} | "
                f"{size / 1e6 / median(restore_s):.0f} MB/s |"
            )
            print(rows[-1], flush=True)
    body = [
        "| libraries of | .so files | disk per cache entry | store s | restore s | restore rate |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    if args.append:
        append_entry(
            args,
            "result cache: storing and restoring a vLLM-sized cell's artifacts",
            [
                f"- every .so of the release's wheel, unpacked; median of {args.repeat}; "
                "cache and build dirs on one file system; page cache warm"
            ],
            body,
        )
    else:
        print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
