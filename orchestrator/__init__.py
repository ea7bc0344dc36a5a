"""kernel-matrix: prove that every expected CUDA kernel family was really compiled
for every GPU a build asks for."""

__version__ = "0.1.0"
