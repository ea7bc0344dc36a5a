"""``kernel-matrix probe`` (what libraries really contain) and ``verify-on-device`` (the probe's verdicts, checked by launching on the local GPU)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.archs import ComputeCapability
    from orchestrator.judge.presence import FamilyPresence

from orchestrator.cli.arguments import (
    Parser,
    add_engine,
)
from orchestrator.common import jsontext
from orchestrator.common.errors import (
    EXIT_OK,
    UsageError,
)
from orchestrator.common.words import counted

MAX_BARE_LINES = 40  # "no device code" lines printed one by one, at most


def cmd_probe(args: argparse.Namespace) -> int:
    """Inventory of shared objects/wheels/directories: rich summary or --json."""
    from rich.table import Table

    from orchestrator.cli.options import check_cuobjdump_option, check_probe_jobs
    from orchestrator.common.heap import keep_freed_memory
    from orchestrator.judge.presence import family_presence, inventory_json
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.probe import probe
    from orchestrator.reporting.console import console, say
    from orchestrator.reporting.tables import print_table

    check_cuobjdump_option(args.engine, args.cuobjdump)
    check_probe_jobs(args.engine, args.jobs)
    keep_freed_memory()
    rules = load_families_or_matrix(args.families) if args.families else ()
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    inventory = probe(args.paths, engine=args.engine, cuobjdump=args.cuobjdump, jobs=args.jobs)
    presence = family_presence(inventory, rules)
    if args.json:
        print(jsontext.dumps(inventory_json(inventory, presence)))
        return EXIT_OK
    out = console()
    bare = [library.path for library in inventory.libraries if not library.has_device_code]
    # One line each, unless there are so many that they would bury the rest (a wheel
    # can hold thousands of host-only shared objects): then the first few and a count.
    for path in bare if len(bare) <= MAX_BARE_LINES else bare[: MAX_BARE_LINES // 2]:
        say(out, f"{path}: no device code")
    if len(bare) > MAX_BARE_LINES:
        rest = len(bare) - MAX_BARE_LINES // 2
        say(out, f"... and {counted(rest, 'more shared object')} with no device code")
    for library in inventory.libraries:
        if not library.has_device_code:
            continue
        table = Table(title=library.path, title_justify="left")
        for column in ("code object", "kernels", "hollow", "sources"):
            table.add_column(column, overflow="fold")
        for code in library.code_objects():
            hollow = sum(k.hollow for k in code.kernels)
            table.add_row(
                code.arch.name,
                str(len(code.kernels)),
                str(hollow) if hollow else "",
                ", ".join(code.sources[:6]) + (" ..." if len(code.sources) > 6 else ""),
            )
        print_table(out, table)
    if presence:
        from orchestrator.reporting.tables import FamilyRow, family_device_view

        meant = {rule.name: rule.devices for rule in rules}
        devices = sorted({device for rule in rules for device in rule.devices})
        rows = [
            FamilyRow(
                name,
                "(rule does not fit: see warning)"
                if found.mismatch
                else " ".join(found.cubins + found.ptx),
                tuple(_probe_status(d, found, meant.get(name, ())) for d in devices),
            )
            for name, found in presence.items()
        ]
        family_device_view(
            out,
            "kernel families × devices (cubin or PTX the driver loads)",
            rows,
            [str(d) for d in devices],
        )
        for name, found in presence.items():
            if found.mismatch:
                say(out, f"warning: {name} not matched: {found.mismatch}")
    return EXIT_OK


def _probe_status(device: ComputeCapability, found: FamilyPresence, meant: Sequence[object]) -> str:
    """The check vocabulary for what probe found: present (present-jit: only through
    PTX JIT), hollow, missing (meant for the device, nothing loads there), not
    applicable, or not matched (the family's rule does not fit)."""
    if found.mismatch:
        return "not-matched"
    if device in found.devices:
        return "present-jit" if device in found.jit_devices else "present"
    if device in found.hollow_devices:
        return "hollow"
    return "missing" if device in meant else "not-applicable"


def cmd_verify_on_device(args: argparse.Namespace) -> int:
    from rich.table import Table

    from orchestrator.judge.verify import VERIFY_SCHEMA_VERSION, device_capability, verify
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.probe import probe
    from orchestrator.reporting.console import console, mark, say
    from orchestrator.reporting.tables import print_table

    device = device_capability()
    families = load_families_or_matrix(args.families)
    inventory = probe(args.paths, engine=args.engine)
    libraries = [Path(lib.path) for lib in inventory.libraries if lib.has_device_code]
    checks = verify(inventory, families, libraries, device)
    disagreements = [c for c in checks if not c.agrees]
    if args.json:
        document = {
            "schema_version": VERIFY_SCHEMA_VERSION,
            "device": str(device),
            "checks": [c.to_json() for c in checks],
        }
        print(jsontext.dumps(document))
    else:
        table = Table(title=f"probe verdict vs GPU {device}: {', '.join(map(str, args.paths))}")
        for column in ("family", "predicted", "loads", "observed", "ran", "what happened", ""):
            table.add_column(column, overflow="fold")
        for c in checks:
            table.add_row(
                c.family, c.predicted, c.predicted_image or "-", c.observed,
                c.observed_image or "-", c.observed_detail, "ok" if c.agrees else "DISAGREE",
            )  # fmt: skip
        print_table(console(), table)
        word = "agree" if not disagreements else f"{len(disagreements)} DISAGREE"
        say(
            console(),
            f"{mark('passed' if not disagreements else 'failed')} verify-on-device: "
            f"{counted(len(checks), 'family', 'families')} on {device}, probe and hardware {word}",
        )
    return 1 if disagreements else EXIT_OK


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser("probe", help="list the cubins, PTX and kernels really inside libraries")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".so, wheel or directory")
    p.add_argument("--families", type=Path, metavar="FILE", help="families file or matrix file")
    add_engine(p)
    p.add_argument("--cuobjdump", type=Path, metavar="PATH", help="cuobjdump to use")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        help="processes that read a large library (native engine; default: all CPUs)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable inventory")
    p.set_defaults(handler=cmd_probe)

    p = verbs.add_parser(
        "verify-on-device",
        help="launch each family's kernels on the local GPU and compare with the probe's verdict",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="LIB", help="built libraries (.so)")
    p.add_argument("--families", type=Path, required=True, help="families file (with runners)")
    add_engine(p)
    p.add_argument("--json", action="store_true", help="machine-readable checks")
    p.set_defaults(handler=cmd_verify_on_device)
