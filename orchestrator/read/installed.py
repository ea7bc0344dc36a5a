"""``check --installed DIST``: the shared objects of an installed distribution, found
through its installed metadata (the ``RECORD`` file pip writes), with no path to type.

The distribution is looked up by the Python that has it: this tool's own by default,
else the first ``python3`` on PATH (the tool often lives in its own environment, as
nox or pipx install it), or the one ``--python`` names. That interpreter answers with
``importlib.metadata``, so its own ``sys.path`` (site-packages, user site, a venv)
decides, exactly as it does when it imports the package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.errors import InfraError, UsageError
from orchestrator.probe import is_shared_object_name

_ASK = """
import importlib.metadata as m, json, sys
try:
    d = m.distribution(sys.argv[1])
except m.PackageNotFoundError:
    print(json.dumps(None)); raise SystemExit
files = [str(d.locate_file(f)) for f in (d.files or [])]
print(json.dumps({"name": d.metadata["Name"], "version": d.version, "files": files}))
"""
ASK_TIMEOUT_S = 60


@dataclass(frozen=True)
class InstalledDistribution:
    name: str
    version: str
    python: str  # the interpreter it was found with
    libraries: tuple[Path, ...]  # its shared objects, as installed


def find_installed(dist: str, python: str | None = None) -> InstalledDistribution:
    """The installed distribution ``dist`` and its shared objects. UsageError (exit 2)
    when no interpreter asked has it, or it has no shared object."""
    candidates = [python] if python else _default_pythons()
    for interpreter in candidates:
        answer = _ask(interpreter, dist)
        if answer is None:
            continue
        files = [Path(f) for f in answer["files"]]
        libraries = tuple(f for f in files if is_shared_object_name(f.name) and f.is_file())
        if not libraries:
            raise UsageError(
                f"--installed {dist}: {answer['name']} {answer['version']} (in {interpreter}) "
                "lists no shared object in its RECORD: nothing to check"
            )
        return InstalledDistribution(answer["name"], answer["version"], interpreter, libraries)
    where = " or ".join(candidates)
    raise UsageError(
        f"--installed {dist}: not installed for {where}; pass --python with the "
        "interpreter of the environment that has it"
    )


def _default_pythons() -> list[str]:
    found = [sys.executable]
    on_path = shutil.which("python3")
    if on_path and Path(on_path).resolve() != Path(sys.executable).resolve():
        found.append(on_path)
    return found


def _ask(python: str, dist: str) -> dict[str, Any] | None:
    try:
        done = subprocess.run(
            [python, "-c", _ASK, dist],
            capture_output=True,
            text=True,
            timeout=ASK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise UsageError(f"--python {python}: no such interpreter") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"{python}: could not ask it for {dist}: {e}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UsageError(f"--python {python}: not a working Python ({last})")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise InfraError(f"{python}: no readable answer about {dist}") from None
    return answer if isinstance(answer, dict) else None
