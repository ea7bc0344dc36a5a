"""Judging: each kernel family on each requested device, by the code object the driver
would really load there (``expect``); the ``check`` of something already built; what
``probe`` says per family (``presence``); the GPU's own answer (``verify``); a cell's
result (``results``); and baselines and regressions (``baseline``). Contract: a family
is present, hollow, missing (with its cause) or not applicable, never "some compatible
cubin exists"; a cell that did not build is an error, never a pass."""

from orchestrator.judge.expect import Verdict, judge
from orchestrator.judge.results import CellResult, exit_code

__all__ = ["CellResult", "Verdict", "exit_code", "judge"]
