"""Every benchmark, with the settings BENCHMARKS.md records:

    python benchmarks/run_all.py [--append] [--quick] [--note TEXT]
    nox -s bench                       # the same, figures appended to BENCHMARKS.md

1. probe: native vs ``cuobjdump --dump-elf-symbols`` on the largest library of the
   newest cached vLLM wheel, vLLM 0.19.0's ``_C.abi3.so`` (462 MB: peak memory) and
   0.33.0's ``_C_stable_libtorch.abi3.so`` (also against the cuobjdump engine, which
   yields the same inventory);
2.-4. matrix: orchestration overhead (J=1), scheduling (J=1, J=2) and the result
   cache on the default matrix;
5. configure: the configure tier against the build tier;
6. docs: every figure README.md and docs/vllm.md quote, as ranges with their load;
7. cell cache: storing and restoring a vLLM-sized cell's artifacts;
8. check: ``check`` on the vLLM 0.33.0 wheel against unzip + ``cuobjdump
   --dump-elf-symbols``, first run and repeated (issue 20);
9. vLLM configure: the configure tier on vLLM 0.33.0's source (issue 16; the first
   time, it provisions torch and the CMake-ready toolkit, about 6 GB);
10. PR compare: base vs head on the configure tier;
11. hostile inputs: a 300 000-entry PTX module, a wheel of 100 000 members (issue 34);
12. where the time goes: py-spy samples of a cold check and two probes (issue 34;
    ``py-spy`` comes with the ``bench`` extra, which ``nox -s bench`` installs).

Takes about 25 minutes on 2 cores (``--quick``: about 12), more the first time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    common = ["--append"] if args.append else []
    if args.note:
        common += ["--note", args.note]
    probe = [str(HERE / "bench_probe.py"), "--runs", "3" if args.quick else "5"]
    probe += ["--check", "_C_stable_libtorch.abi3.so"]
    matrix = [str(HERE / "bench_matrix.py"), "--repeats", "1" if args.quick else "3"]
    configure = [str(HERE / "bench_configure.py"), "--repeats", "1" if args.quick else "3"]
    docs = [str(HERE / "bench_docs.py"), "--repeats", "2" if args.quick else "3"]
    cells = [str(HERE / "bench_cell_cache.py")]
    check = [str(HERE / "bench_check.py"), "--rounds", "3" if args.quick else "5"]
    vllm = [str(HERE / "bench_vllm_configure.py")]
    pr = [str(HERE / "bench_pr_compare.py")]
    hostile = [str(HERE / "bench_hostile.py"), "--rounds", "1" if args.quick else "3"]
    floor = [str(HERE / "profile_floor.py")]  # (py-spy: the bench extra)
    for command in (probe, matrix, configure, docs, cells, check, vllm, pr, hostile, floor):
        print("$", " ".join(["python", *command, *common]), flush=True)
        subprocess.run([sys.executable, *command, *common], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
