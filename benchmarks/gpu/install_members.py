"""Install part of a wheel: the members matching some globs and its ``.dist-info``,
with ``RECORD`` listing just those members, so that ``check --installed`` finds them
through the installed metadata as it finds a full install. For the GPU run, where a
whole vLLM wheel (336 MB) does not fit the transfer limit.

    python benchmarks/gpu/install_members.py WHEEL SITE 'vllm/_moe_C*.so'
"""

from __future__ import annotations

import fnmatch
import sys
import zipfile
from pathlib import Path


def install_members(wheel: Path, site: Path, globs: list[str]) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        chosen = [n for n in names if any(fnmatch.fnmatch(n, g) for g in globs)]
        if not chosen:
            raise SystemExit(f"{wheel}: no member matches {globs}")
        for name in [*chosen, *(n for n in names if n.startswith(f"{info}/"))]:
            archive.extract(name, site)
        record = site / info / "RECORD"
        kept = [
            line
            for line in record.read_text().splitlines()
            if line.split(",")[0] in chosen or line.startswith(f"{info}/")
        ]
        record.write_text("\n".join(kept) + "\n")
    return chosen


if __name__ == "__main__":
    wheel, site, *globs = sys.argv[1:]
    print("\n".join(install_members(Path(wheel), Path(site), globs)))
