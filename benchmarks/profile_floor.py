"""Where each tenth of a second of a cold ``check`` and a full ``probe`` goes (issue 34).

    python benchmarks/profile_floor.py [--wheel WHEEL] [--rate HZ] [--append]

Needs ``py-spy`` (``pip install py-spy``; a sampling profiler that reads the process
from outside, so the program runs at its own speed, C code included). Three runs,
each a fresh interpreter exactly as a user runs it, sampled ``--rate`` times a second
(``--nonblocking``: the program is never paused), every thread, idle samples
included:

* ``check WHEEL --families matrices/vllm.yaml --devices 9.0,10.0,10.3,12.0,12.1
  --json`` with an empty cache (the cold check of ``bench_check.py``);
* ``probe`` of the wheel's ``vllm/_C_stable_libtorch.abi3.so`` (extracted once;
  ``--jobs 1``: one process, so that every sample is seen);
* ``probe`` of the 300 000-entry PTX module of ``bench_hostile.py``.

Each sample is put in the category of the innermost frame that names one (a table
below: module and function); a sample of the main thread waiting for the reading
thread is "waiting". The table gives seconds per category: the main thread's (its
sum is the wall time) and the other threads' (the reading thread decompressing
ahead).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_check import DEVICES, FAMILIES, newest_wheel
from bench_hostile import ptx_library
from common import ROOT, add_output_options, append_entry

# (pattern on a frame "function (file:line)", category), innermost frame first.
CATEGORIES = [
    (r"_find_and_load|exec_module|<frozen importlib", "imports"),
    (r"\(orchestrator/common/jsontext|json/|to_json \(", "JSON output"),
    (r"\(orchestrator/read/checkcache", "check cache (keys, records)"),
    (r"demangle|native \(orchestrator/symbols", "demangling"),
    (
        r"orchestrator/common/userregex|matches_|judge/expect|check_inventory",
        "family rules, judging",
    ),
    (r"\(orchestrator/read/ptx", "PTX: headers and instruction counts"),
    (r"\(orchestrator/read/sass", "SASS: instruction counts, traps"),
    (r"\(orchestrator/read/kernelcode", "sources (file names in a cubin or PTX)"),
    (r"decompress|zstd|lz4", "fatbin entries: zstd/lz4"),
    (r"_inflated|zipfile\.py", "wheel members: zip directory, inflating"),
    (r"\(orchestrator/read/elf|cubin_object|read_cubin", "cubins: ELF sections, symbols"),
    (r"\(orchestrator/read/fatbin|\(orchestrator/read/library", "fatbins: headers, entries"),
    (r"rich/|print_", "rendering"),
    (r"acquire|wait \([^)]*threading\.py|get \([^)]*queue\.py|result \(", "waiting"),
    # (a substring search counts for its caller: PTX headers, sources)
    (r"orchestrator/(?!common/bytesearch)", "other orchestrator code"),
]
COMPILED = [(re.compile(pattern), name) for pattern, name in CATEGORIES]


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for pattern, name in COMPILED:
            if pattern.search(frame):
                return name
    return "interpreter start-up, other"


def profile(argv: list[str], rate: int, env: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """Seconds per category: main thread, other threads."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        subprocess.run(
            [spy, "record", "--rate", str(rate), "--format", "raw", "--output", raw.name,
             "--threads", "--idle", "--nonblocking", "--", *argv],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
        )  # fmt: skip
        lines = Path(raw.name).read_text().splitlines()
    samples = []
    main_thread = None
    for line in lines:
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        thread_id = thread.split(")")[0]
        if any("_run_module_as_main" in frame for frame in frames):
            main_thread = thread_id
        samples.append((thread_id, category(frames), int(count) / rate))
    main: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for thread_id, name, seconds in samples:
        (main if thread_id == main_thread else others)[name] += seconds
    return main, others


def table(title: str, main: Counter[str], others: Counter[str]) -> list[str]:
    rows = [
        f"**{title}** (main thread {sum(main.values()):.2f} s = the wall time; other threads "
        f"{sum(others.values()):.2f} s, their idle samples included)",
        "",
        "| where | main thread, s | other threads, s |",
        "| --- | ---: | ---: |",
    ]
    for name in sorted(set(main) | set(others), key=lambda n: -(main[n] + others[n] / 100)):
        rows.append(f"| {name} | {main[name]:.2f} | {others[name]:.2f} |")
    return [*rows, ""]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, help="a vLLM wheel (default: the cached 0.33.0)")
    parser.add_argument("--rate", type=int, default=200, help="samples a second (default 200)")
    add_output_options(parser)
    args = parser.parse_args()
    wheel = args.wheel or newest_wheel()
    python = sys.executable
    body: list[str] = []
    with tempfile.TemporaryDirectory(prefix="profile-floor-") as scratch:
        env = {**os.environ, "KERNEL_MATRIX_CACHE": f"{scratch}/cache"}
        check = [python, "-m", "orchestrator", "check", str(wheel), "--families",
                 str(FAMILIES), "--devices", DEVICES, "--json"]  # fmt: skip
        body += table(f"cold check of {wheel.name}", *profile(check, args.rate, env))
        with zipfile.ZipFile(wheel) as archive:
            library = Path(archive.extract("vllm/_C_stable_libtorch.abi3.so", scratch))
        probe = [python, "-m", "orchestrator", "probe", str(library), "--jobs", "1"]
        body += table(f"probe of {library.name} (--jobs 1)", *profile(probe, args.rate, env))
        module = Path(scratch) / "ptx300k.so"
        ptx_library(module)
        probe = [python, "-m", "orchestrator", "probe", str(module)]
        body += table("probe of the 300 000-entry PTX module", *profile(probe, args.rate, env))
    print("\n".join(body))
    if args.append:
        append_entry(
            args,
            "where each tenth goes: py-spy samples of a cold check and two probes (issue 34)",
            [f"- wheel: {wheel.name}; {args.rate} samples a second, every thread, idle included"],
            body,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
