"""Hand truth for one vLLM wheel, from cuobjdump/nvdisasm output only (no orchestrator code).

usage: python matrices/truth/vllm_by_hand.py UNPACKED_WHEEL_DIR matrices/vllm.yaml > out.md
(UNPACKED_WHEEL_DIR: `unzip vllm-X-*.whl '*.so'` done there; scratch files go to
$TRUTH_WORK, default ~/.cache/kernel-matrix/truth; CUO / NVDISASM_DIR: cuobjdump and
the folder of nvdisasm, default the copies kernel-matrix caches from PyPI.)
Other projects: TRUTH_LIBS is the glob of the libraries read, relative to
UNPACKED_WHEEL_DIR (default `vllm/**/*.so`; sgl-kernel: `sgl_kernel/**/*.so`).
Where two of them share a file name (sgl-kernel's sm90/ and sm100/common_ops) the
library column gives the path inside the wheel instead of the file name.

It re-implements, independently of the tool, the family-matching semantics documented
in README.md and the loading rules of DESIGN.md, so the tables it prints can be
compared with `kernel-matrix check`.
Reads every $TRUTH_LIBS (vllm/**/*.so), `cuobjdump --dump-elf-symbols` for cubins (arch from the ELF
header, ENTRY symbols, _INTERNAL_ source names), `cuobjdump -xptx all` for PTX
(.entry names, .target), `cuobjdump -xelf all` + readelf + `cuobjdump -sass` to count
working instructions of small family kernels.
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cxxfilt
import yaml

TOOLS = Path.home() / ".cache/kernel-matrix/tools"
CUO = os.environ.get("CUO", str(TOOLS / "cuobjdump/nvidia/cu13/bin/cuobjdump"))
NVDIS = os.environ.get("NVDISASM_DIR", str(TOOLS / "nvdisasm/nvidia/cu13/bin"))
WORK = Path(os.environ.get("TRUTH_WORK", Path.home() / ".cache/kernel-matrix/truth"))
os.environ["PATH"] = NVDIS + ":" + os.environ["PATH"]
SRC = re.compile(r"_(?:INTERNAL|GLOBAL__N_)_[0-9a-f]{8}_(\d+)_(\w+)")
# The device columns (TRUTH_DEVICES=8.7,9.0,... for the aarch64 tables).
DEVICES = os.environ.get("TRUTH_DEVICES", "9.0,10.0,10.3,12.0,12.1").split(",")
# The libraries read, relative to the unpacked wheel (TRUTH_LIBS=sgl_kernel/**/*.so).
LIBS = os.environ.get("TRUTH_LIBS", "vllm/**/*.so")
# TRUTH_SASS=function: nvdisasm only the kernels counted (-fun), not cuobjdump -sass of
# their whole cubin (sgl-kernel's cubins hold up to 360 kernels: hours otherwise).
BY_FUNCTION = os.environ.get("TRUTH_SASS", "cubin") == "function"
SMALL_TEXT = 4096  # bytes: kernels above this have > 256 instructions; disassembled below


def sources_of(names):
    out = set()
    for n in names:
        for m in SRC.finditer(n):
            length, rest = int(m[1]), m[2]
            base = rest[:length]
            if base.endswith("_cu"):
                out.add(base[:-3] + ".cu")
    return out


def demangle(m):
    if not m.startswith("_Z"):
        return m
    try:
        return cxxfilt.demangle(m, external_only=False)
    except Exception:
        return m


def parse_elf_symbols(lib):
    text = subprocess.run([CUO, "--dump-elf-symbols", lib], capture_output=True, text=True).stdout
    blocks = []  # (kind, arch, entries, all symbol names)
    cur = None
    for line in text.splitlines():
        if line.startswith("Fatbin elf code") or line.startswith("Fatbin ptx code"):
            cur = {
                "kind": "elf" if "elf" in line else "ptx",
                "arch": None,
                "entries": [],
                "names": [],
            }
            blocks.append(cur)
        elif cur is not None and line.startswith("arch = ") and cur["arch"] is None:
            cur["arch"] = line.split("=")[1].strip()
        elif cur is not None and cur["kind"] == "elf":
            parts = line.split()
            if len(parts) >= 4 and parts[0] in ("FUNC", "OBJECT", "NOTYPE", "SECTION", "FILE"):
                name = parts[-1]
                cur["names"].append(name)
                if parts[0] == "FUNC" and "ENTRY" in parts:
                    cur["entries"].append(name)
    return [b for b in blocks if b["kind"] == "elf"]


def parse_ptx(lib, workdir):
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([CUO, "-xptx", "all", os.path.abspath(lib)], cwd=d, capture_output=True)
    out = []
    for f in sorted(d.glob("*.ptx"), key=lambda p: int(p.name.split(".")[-3])):
        t = f.read_text(errors="replace")
        target = re.search(r"^\.target\s+(\w+)", t, re.M)[1]
        entries = re.findall(r"\.entry\s+([\w$]+)\s*\(", t)
        out.append(
            {
                "arch": target.replace("sm_", "compute_"),
                "entries": entries,
                "sources": sources_of(re.findall(r"[\w$]+", t))
                if "_INTERNAL_" in t or "_GLOBAL__N_" in t
                else set(),
            }
        )
    return out


CACHE = {}
CACHE_FILE = WORK / "sass-cache.pkl"
if CACHE_FILE.exists():
    CACHE = pickle.loads(CACHE_FILE.read_bytes())  # noqa: S301 (our own cache)


def instr_counts(cubin, names):
    key = (cubin, os.path.getsize(cubin)) + ((tuple(sorted(names)),) if BY_FUNCTION else ())
    if key not in CACHE:
        CACHE[key] = _instr_counts(cubin, names)
        CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
        CACHE_FILE.write_bytes(pickle.dumps(CACHE))
    counts = CACHE[key]
    missing = [n for n in names if n not in counts]
    if missing:
        print(f"WARNING {cubin}: no SASS for {missing[:2]}", file=sys.stderr)
    return {n: counts.get(n) for n in names}


def _instr_counts(cubin, names=()):
    """working instructions per kernel of cubin (TRUTH_SASS=function: of `names` only)"""
    if BY_FUNCTION and names:
        return _instr_counts_of(cubin, names)
    sass = subprocess.run([CUO, "-sass", cubin], capture_output=True, text=True).stdout
    return _count(sass, r"\s+Function : (\S+)")


def _instr_counts_of(cubin, names):
    """nvdisasm of the named kernels only (-fun: their symbol indices from readelf)"""
    syms = subprocess.run(["readelf", "-s", "-W", cubin], capture_output=True, text=True).stdout
    want = set(names)
    index = [
        parts[0].rstrip(":")
        for parts in (line.split() for line in syms.splitlines())
        if len(parts) >= 8 and parts[3] == "FUNC" and parts[-1] in want
    ]
    sass = subprocess.run(
        ["nvdisasm", "-c", "-fun", ",".join(index), cubin], capture_output=True, text=True
    ).stdout
    return _count(sass, r"\.text\.(\S+):$")


def _count(sass, header):
    counts = {}
    cur = None
    for line in sass.splitlines():
        m = re.match(header, line)
        if m:
            cur = m[1]
            counts[cur] = 0
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m and cur:
            ins = m[1].strip()
            ins = re.sub(r"^@!?U?P[T0-9]+\s+", "", ins)
            op = ins.split()[0].split(".")[0] if ins else ""
            if op in ("NOP", "EXIT", "BRA", "RET") or ins.startswith("BPT.TRAP"):
                continue
            counts[cur] += 1
    return counts


def text_sizes(cubin):
    out = subprocess.run(["readelf", "-S", "-W", cubin], capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        m = re.search(r"\.text\.(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m:
            sizes[m[1]] = int(m[2], 16)
    return sizes


class Rule:
    def __init__(self, name, spec):
        self.name = name
        self.spec = spec
        self.kernels = [re.compile(k) for k in spec.get("kernels", [])]
        self.exk = [re.compile(k) for k in spec.get("exclude_kernels", [])]
        self.sources = spec.get("sources", [])
        self.exs = spec.get("exclude_sources", [])
        self.libs = spec.get("libraries", [])
        self.hmax = spec.get("hollow_max_instructions", 8)

    def lib_ok(self, rel):
        for g in self.libs:
            target = rel if "/" in g else os.path.basename(rel)
            if fnmatch.fnmatch(target, g):
                return True
        return not self.libs

    def match(self, dem, srcs):
        if any(fnmatch.fnmatch(s, g) for s in srcs for g in self.exs):
            return False
        if any(p.search(dem) for p in self.exk):
            return False
        name_ok = any(p.search(dem) for p in self.kernels)
        src_ok = any(fnmatch.fnmatch(s, g) for s in srcs for g in self.sources)
        if self.kernels and self.sources:
            return name_ok and (src_ok or not srcs)
        return name_ok if self.kernels else src_ok


def tparse(t):
    m = re.match(r"(sm|compute)_(\d+?)(\d)([af]?)$", t)
    return m[1], int(m[2]), int(m[3]), m[4]


def select(targets, dev):
    dmaj, dmin = map(int, dev.split("."))
    cub = []
    for t in targets:
        kind, maj, mi, var = tparse(t)
        if kind != "sm" or maj != dmaj:
            continue
        if var == "a" and mi != dmin:
            continue
        if mi > dmin:
            continue
        cub.append(((mi, {"a": 2, "f": 1, "": 0}[var]), t))
    if cub:
        return max(cub)[1]
    ptx = []
    for t in targets:
        kind, maj, mi, var = tparse(t)
        if kind != "compute":
            continue
        if var == "a" and (maj, mi) != (dmaj, dmin):
            continue
        if var == "f" and (maj != dmaj or mi > dmin):
            continue
        if (maj, mi) > (dmaj, dmin):
            continue
        ptx.append(((maj, mi), t))
    return max(ptx)[1] if ptx else None


def order(t):
    kind, maj, mi, var = tparse(t)
    return (maj * 10 + mi, {"": 0, "f": 1, "a": 2}[var], kind == "sm")


def main():
    root, profile = Path(sys.argv[1]), sys.argv[2]
    rules = [Rule(n, s) for n, s in yaml.safe_load(Path(profile).read_text())["families"].items()]
    libs = sorted(root.glob(LIBS))
    names = [lib.name for lib in libs]
    # a library is named by its file name, or by its path where file names repeat
    shown = {
        str(lib.relative_to(root)): lib.name
        if names.count(lib.name) == 1
        else str(lib.relative_to(root))
        for lib in libs
    }
    lib_rows = []
    per_family = {
        r.name: defaultdict(dict) for r in rules
    }  # family -> (lib, mangled) -> target -> instr or None
    examples = defaultdict(set)
    for lib in libs:
        rel = str(lib.relative_to(root))
        tag = shown[rel].replace("/", "+")  # sm90/common_ops and sm100/common_ops apart
        pk = WORK / f"parsed/{root.name}/{tag}.pkl"
        if pk.exists():
            blocks, ptx = pickle.loads(pk.read_bytes())  # noqa: S301
        else:
            blocks = parse_elf_symbols(str(lib))
            ptx = parse_ptx(str(lib), WORK / f"ptx/{root.name}/{tag}")
            pk.parent.mkdir(parents=True, exist_ok=True)
            pk.write_bytes(pickle.dumps((blocks, ptx)))
        by_arch = defaultdict(int)
        for b in blocks:
            by_arch[b["arch"]] += 1
        pby = defaultdict(int)
        for p in ptx:
            pby[p["arch"]] += 1
        lib_rows.append((rel, lib.stat().st_size, dict(by_arch), dict(pby)))
        relevant = [r for r in rules if r.lib_ok(rel)]
        if not relevant:
            continue
        need_sass = defaultdict(list)  # block index -> kernel names
        cubdir = WORK / f"elf/{root.name}/{tag}"
        for i, b in enumerate(blocks):
            srcs = sources_of(b["names"])
            for e in b["entries"]:
                dem = demangle(e)
                for r in relevant:
                    if r.match(dem, srcs):
                        per_family[r.name][(rel, e)].setdefault(b["arch"], [])
                        per_family[r.name][(rel, e)][b["arch"]].append((i, e))
                        need_sass[i].append(e)
                        examples[r.name].update(srcs)
        for p in ptx:
            for e in p["entries"]:
                dem = demangle(e)
                for r in relevant:
                    if r.match(dem, p["sources"]):
                        per_family[r.name][(rel, e)].setdefault(p["arch"], []).append((None, e))
        if need_sass:
            cubdir.mkdir(parents=True, exist_ok=True)
            if not any(cubdir.iterdir()):
                subprocess.run(
                    [CUO, "-xelf", "all", os.path.abspath(lib)], cwd=cubdir, capture_output=True
                )
            files = sorted(cubdir.glob("*.cubin"), key=lambda p: int(p.name.split(".")[-3]))
            assert len(files) == len(blocks), (rel, len(files), len(blocks))
            ins = {}
            for i, names in need_sass.items():
                sizes = text_sizes(str(files[i]))
                small = [n for n in names if sizes.get(n, 0) <= SMALL_TEXT]
                counted = instr_counts(str(files[i]), small) if small else {}
                for n in names:
                    if n not in counted:
                        ins[(i, n)] = 10**6  # > SMALL_TEXT bytes: > 256 instructions
                    elif counted[n] is None:
                        # no SASS (nvdisasm 13 cannot read sm_70): total instructions
                        # (.text / 16) bound the working ones from above
                        total = sizes.get(n, 0) // 16
                        ins[(i, n)] = total if total <= 16 else 10**6
                        print(f"NOTE no SASS, {n[:60]} .text {sizes.get(n)} bytes", file=sys.stderr)
                    else:
                        ins[(i, n)] = counted[n]
            for fam in per_family.values():
                for key, copies in fam.items():
                    if key[0] != rel:
                        continue
                    for t, lst in copies.items():
                        if isinstance(lst, list):
                            vals = [
                                ins.get((i, n), 10**6) if i is not None else 10**6 for i, n in lst
                            ]
                            copies[t] = max(vals)
        else:
            for fam in per_family.values():
                for key, copies in fam.items():
                    if key[0] == rel:
                        for t, lst in copies.items():
                            if isinstance(lst, list):
                                copies[t] = 10**6
    print("| library | size (bytes) | cubins by ELF arch (count) | PTX (arch @ count) |")
    print("| --- | ---: | --- | --- |")
    for rel, size, ba, pb in sorted(lib_rows, key=lambda r: -r[1]):
        c = ", ".join(f"{a} ({n})" for a, n in sorted(ba.items(), key=lambda x: order(x[0]))) or "—"
        p = ", ".join(f"{a} ({n})" for a, n in sorted(pb.items(), key=lambda x: order(x[0]))) or "—"
        print(f"| `{rel}` | {size} | {c} | {p} |")
    print()
    print("| family | library | kernels per cubin arch (hollow) | " + " | ".join(DEVICES) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in DEVICES) + " |")
    for r in rules:
        fam = per_family[r.name]
        libsn = sorted({shown[k[0]] for k in fam})
        arch = defaultdict(lambda: [0, 0])
        for copies in fam.values():
            for t, n in copies.items():
                arch[t][0] += 1
                arch[t][1] += n <= r.hmax
        parts = []
        for t in sorted(arch):
            n, h = arch[t]
            pre = "PTX " if t.startswith("compute") else ""
            parts.append(f"{pre}{t}: {n}" + (f" ({h} hollow)" if h else ""))
        cells = []
        for d in DEVICES:
            served = []
            for copies in fam.values():
                s = select(copies, d)
                if s:
                    served.append((s, copies[s] <= r.hmax))
            if not served:
                cells.append("missing")
                continue
            h = sum(x for _, x in served)
            via = " + ".join(
                t + (" PTX" if t.startswith("compute") else "")
                for t in sorted({t for t, _ in served}, key=order)
            )
            if h == len(served):
                cells.append(f"**hollow** {len(served)} via {via}")
            elif h:
                cells.append(f"present ({h} hollow) {len(served)} via {via}")
            else:
                cells.append(f"present {len(served)} via {via}")
        lib = ", ".join(f"`{x}`" for x in libsn) or "—"
        print(f"<!-- {r.name}: {len(fam)} distinct kernels -->", file=sys.stderr)
        print(f"| {r.name} | {lib} | {', '.join(parts) or '—'} | " + " | ".join(cells) + " |")
    print()
    for r in rules:
        print(f"<!-- {r.name} sources: {sorted(examples[r.name])[:12]} -->")


main()
