"""CUDA toolchains: where a CUDA version's compiler comes from on this machine (PyPI
wheels for 13.x, a system toolkit given with ``--cuda-home``), provisioned once into the
cache and laid out as a CUDA_HOME; also the binary tools (cuobjdump, nvdisasm) and the
cache's root. Contract: :func:`resolve` gives a :class:`Toolchain` or raises
``ToolchainError``; :func:`local_availability` says, without installing anything, why a
version cannot be had here (None when it can)."""

from orchestrator.toolchains.cuda import Toolchain, cache_root, local_availability, resolve

__all__ = ["Toolchain", "cache_root", "local_availability", "resolve"]
