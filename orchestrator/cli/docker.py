"""``kernel-matrix docker base-image``: the registry-free base image of the docker backend."""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli.arguments import (
    Parser,
)
from orchestrator.common.errors import EXIT_OK


def cmd_docker_base_image(args: argparse.Namespace) -> int:
    from orchestrator.building.backends.container import Engine
    from orchestrator.building.backends.offline_base import (
        base_packages,
        ensure_offline_base,
        host_recipe,
    )

    extra = [name for given in args.include for name in given.split(",") if name]
    recipe = host_recipe(suite=args.suite, mirror=args.mirror, packages=base_packages(extra))

    def say(line: str) -> None:
        print(f"kernel-matrix: {line}", file=sys.stderr, flush=True)

    print(ensure_offline_base(Engine.connect(), recipe, say=say))
    return EXIT_OK


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser("docker", help="images of the docker backend")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    q = actions.add_parser(
        "base-image",
        help="make (once per machine; needs root, for debootstrap) a Debian/Ubuntu base "
        "image without any image registry, and print its tag (no root needed once made)",
        description="Print the tag of a minimal base image for docker.toolchain 'mount', "
        "made once with debootstrap from the package mirror of this host's apt sources. "
        'Making it needs root: sudo "$(command -v kernel-matrix)" docker base-image, or '
        "the same command without sudo where you are root already (a root shell, a "
        "container).",
    )
    q.add_argument(
        "--suite", help="Debian/Ubuntu release (default: this host's, from /etc/os-release)"
    )
    q.add_argument(
        "--mirror",
        metavar="URI",
        help="package archive (default: the apt source of this host that lists the suite)",
    )
    q.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PKG,...",
        help="Debian packages to add to those the image always has (its C++ compiler); "
        "comma-separated, repeatable",
    )
    q.set_defaults(handler=cmd_docker_base_image)
