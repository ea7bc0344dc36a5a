"""Running a matrix: every runnable cell built (or configured) in parallel, read, judged
and its result written atomically as soon as it is known (``runner``); a cell built
before with the same inputs is answered from the cache (``cellcache``), and a
configure-tier cell also from the configure of another tree whose configure inputs it
has unchanged (``configinputs``). Contract: nothing finished is lost; Ctrl-C or SIGTERM
keeps every finished cell and a run resumes."""

from orchestrator.run.runner import RunOptions, run_cells

__all__ = ["RunOptions", "run_cells"]
