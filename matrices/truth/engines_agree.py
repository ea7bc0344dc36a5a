"""Cross-check of the two probe engines, library by library: the native reader's
inventory against the one parsed from NVIDIA's cuobjdump, for every shared object
of the given wheels (or .so files).

usage: python matrices/truth/engines_agree.py WHEEL_OR_SO... [--only SUBSTRING]

Prints one line per library (agree / DISAGREE with the first difference, and both
engines' seconds) and exits 1 on any disagreement. The cuobjdump engine runs
cuobjdump twice per library and disassembles trapping kernels: minutes for the
large libraries.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from orchestrator.probe import probe


def libraries(path: Path, only: str) -> list[tuple[str, Path | None]]:
    if path.suffix != ".whl":
        return [(str(path), path)]
    with zipfile.ZipFile(path) as archive:
        return [
            (name, None)
            for name in archive.namelist()
            if (name.endswith(".so") or ".so." in name) and only in name
        ]


def first_difference(a: object, b: object, where: str = "") -> str:
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'cuobjdump' if key in b else 'native'}"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return ""
    return "" if a == b else f"{where}: {a!r} vs {b!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--only", default="", help="libraries whose path holds this")
    args = parser.parse_args()
    disagreements = 0
    for path in args.paths:
        for name, file in libraries(path, args.only):
            with tempfile.TemporaryDirectory() as tmp:
                if file is None:
                    with zipfile.ZipFile(path) as archive:
                        file = Path(archive.extract(name, tmp))
                start = time.monotonic()
                native = probe([file]).to_json()
                middle = time.monotonic()
                real = probe([file], engine="cuobjdump").to_json()
                end = time.monotonic()
            difference = first_difference(native, real)
            disagreements += bool(difference)
            word = f"DISAGREE {difference}" if difference else "agree"
            print(
                f"{path.name}!{name}: {word} (native {middle - start:.1f} s, "
                f"cuobjdump {end - middle:.1f} s)",
                flush=True,
            )
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
