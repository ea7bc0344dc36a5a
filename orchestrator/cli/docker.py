"""``kernel-matrix docker base-image``: the registry-free base image of the docker backend."""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli.arguments import (
    Parser,
)
from orchestrator.common.errors import (
    EXIT_OK,
    UsageError,
)


def cmd_docker_base_image(args: argparse.Namespace) -> int:
    from orchestrator.building.backends.container import Engine
    from orchestrator.building.backends.offline_base import ensure_offline_base, host_recipe

    packages = tuple(p for p in args.include.split(",") if p)
    if not packages:
        raise UsageError("--include: name at least one Debian package (e.g. g++)")
    recipe = host_recipe(suite=args.suite, mirror=args.mirror, packages=packages)

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
        'Making it needs root: sudo "$(command -v kernel-matrix)" docker base-image.',
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
        default="g++",
        metavar="PKG,...",
        help="packages to install in it (default: %(default)s)",
    )
    q.set_defaults(handler=cmd_docker_base_image)
