"""Building one cell: the source tree (``sources``: a directory, an sdist or a release
on the package index), the commands (``recipe``: CMake or pip, run with a full log),
what the log says (``buildlog``: the "Not building ..." lines, why a step failed), the
environment a ``build: pip`` project's configure imports
(``configure_env``), and where the commands run (``backends``: this machine or a
container). Contract: a build either leaves its artifacts and log in the cell's build
directory or raises ``BuildError``/``ToolchainError``; it never judges what it built."""

from orchestrator.building.recipe import BuildRecipe, run_recipe

__all__ = ["BuildRecipe", "run_recipe"]
