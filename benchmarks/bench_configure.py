"""The configure tier: the whole default matrix predicted from CMake configure alone.

    python benchmarks/bench_configure.py [--repeats N] [--append]

Cold runs (a unique source tree, so nothing comes from the cache) of
``kernel-matrix run matrix.yaml --tier configure`` with J=2, timed from outside,
next to one cold build-tier run of the same tree, whose verdicts the prediction
must equal (hollow counts as built: only compiled code shows an empty body).
Goal (issue 9): the whole default matrix predicted in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_matrix import Workspace
from common import add_output_options, append_entry, median


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="cold configure runs")
    parser.add_argument("--jobs", type=int, default=2)
    add_output_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-configure-") as tmp:
        space = Workspace(Path(tmp))
        try:
            runs = []
            for repeat in range(args.repeats):
                space.mark()
                runs.append(space.run(f"configure-{repeat}", args.jobs, tier="configure"))
            built = space.run("build", args.jobs)
        finally:
            space.forget()

    def built_there(verdicts: list[list[str]]) -> list[tuple[str, str, str]]:
        return [(f, d, "present" if s == "hollow" else s) for f, d, s in verdicts]

    predicted = runs[-1]["verdicts"]
    agree = all(
        built_there(predicted[cell]) == built_there(verdicts)
        for cell, verdicts in built["verdicts"].items()
    )
    rows = [
        f"| configure | {r['cells']} | {r['wall_s']:.1f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        for r in runs
    ]
    rows.append(
        f"| build (for comparison) | {built['cells']} | {built['wall_s']:.1f} | "
        f"{built['load'][0]:.1f}, {built['load'][1]:.1f} |"
    )
    body = [
        "| tier | cells | wall s | load before, after |",
        "| --- | ---: | ---: | --- |",
        *rows,
        "",
        f"Median configure tier: {median([r['wall_s'] for r in runs]):.1f} s for the whole "
        f"default matrix (goal: < 120 s); build tier: {built['wall_s']:.1f} s. Predicted "
        f"verdicts {'equal' if agree else 'DIFFER FROM'} the build tier's for all "
        f"{len(built['verdicts'])} cells.",
    ]
    print("\n".join(body))
    if args.append:
        append_entry(
            args,
            "configure tier: the default matrix predicted from CMake configure",
            [f"- J={args.jobs}; cold runs (unique source tree)"],
            body,
        )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
