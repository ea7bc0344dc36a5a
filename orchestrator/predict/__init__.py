"""The configure tier: what a build will contain, predicted from CMake configure alone.

``codemodel`` reads CMake's File API (every source's exact ``-gencode`` flags) into the
same :class:`~orchestrator.read.inventory.Inventory` the readers make, kernels named
after their sources; ``guards`` finds in the CMake trace the guard call (or generator)
that left a family without code, with its ``file:line``. The build tier uses ``guards``
too, to explain a family that a real build skipped."""

from orchestrator.predict.codemodel import predict_inventory
from orchestrator.predict.guards import generator_of, guard_of

__all__ = ["generator_of", "guard_of", "predict_inventory"]
