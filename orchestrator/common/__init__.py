"""Shared helpers, below every stage: every fatal error with its exit code (``errors``),
atomic writes and bounded reads (``fsutil``), where the cache lives (``cachedir``), YAML
read with positions and checked by a JSON Schema (``yamlfile``), users' regexes matched
with bounds (``userregex``), the progress lines of long work (``progress``) and counts
in sentences (``words``). Nothing here knows about CUDA, and importing the package
imports none of them (a repeated check needs only ``cachedir``)."""
