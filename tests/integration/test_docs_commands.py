"""The docs are tests: every shell block of README.md and docs/*.md (```bash,
```console) is read here, every command in it is either run *as written* (in a
scratch directory holding the repository's files, so reports/ and build/ land
there) or skipped with the reason this machine cannot run it, and a ```console
block's output must come out of the real command (times aside).

The fast part (not marked integration) checks that every documented
``kernel-matrix`` command parses with the real argument parser, every ``nox -s``
session exists, and no command is left unclassified; the integration part runs
the commands."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from vllm_wheel_cache import vllm_wheel

from orchestrator.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
WHEELS = Path.home() / ".cache" / "kernel-matrix" / "wheels"
_FENCE = re.compile(r"^```(bash|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Command:
    where: str  # README.md:36
    text: str  # the command, continuation lines joined
    expected: tuple[str, ...] = ()  # a console block's output lines

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def documented_commands() -> list[Command]:
    commands: list[Command] = []
    for doc in DOCS:
        source = doc.read_text()
        for block in _FENCE.finditer(source):
            first_line = source[: block.start()].count("\n") + 2
            commands += _commands(doc.name, first_line, block[1], block[2].splitlines())
    return commands


def _commands(doc: str, first: int, kind: str, lines: list[str]) -> list[Command]:
    found: list[Command] = []
    pending = ""  # a command being joined: "\\" continues it, an open do-loop too
    start = first
    for number, line in enumerate(lines, start=first):
        if kind == "console" and not pending:
            if not line.startswith("$ "):
                if found:  # output of the last command
                    last = found[-1]
                    found[-1] = Command(last.where, last.text, (*last.expected, line))
                continue
            line = line[2:]
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        pending += line
        if _open_loop(pending):
            pending += "\n"
            continue
        found.append(Command(f"{doc}:{start}", pending.strip()))
        pending = ""
    return found


def _open_loop(text: str) -> bool:
    return len(re.findall(r"\bdo\b", text)) > len(re.findall(r"\bdone\b", text))


# Why a command is not run here (first match wins); everything else is run.
NOT_HERE = [
    (r"nox -s (tests|lint)", "it is the test suite or the lint job itself"),
    (r"nox -s matrix", "builds the whole default matrix (minutes); test_end_to_end runs it"),
    (r"^pip download", "downloads a vLLM wheel (250-500 MB); the check after it reads "
     "the cached copy"),
    (r"sgl-kernel\.yaml", "reads a 536 MB sgl-kernel wheel that CI does not cache for this "
     "test; tests/integration/test_sgl_kernel_wheels.py runs the same check"),
    (r"^git (clone|-C)", "no access to GitHub from the test machine"),
    (r"^sudo ", "needs root and debootstrap; tests/integration/test_docker_backend.py "
     "builds the offline base image"),
    (r"base-image|offline_base", "builds a base image from debootstrap: needs root; "
     "tests/integration/test_docker_backend.py builds it"),
    (r"<hash>|<ref>", "a placeholder the reader fills in"),
    (r"--backend docker", "needs a Docker engine and a base image; "
     "tests/integration/test_docker_backend.py runs the docker backend"),
    (r"verify-on-device", "needs a GPU"),
    (r"--devices local|--confirm-with-driver|confirm_on_gpu\.sh", "asks the CUDA driver for "
     "this machine's GPUs: needs a GPU (tests/unit/judge/test_confirm.py covers the code "
     "around the driver; docs/gpu-verification.md records the H100 run)"),
    (r"run matrices/vllm-build\.yaml", "builds real vLLM (hours)"),
    (r"run matrices/vllm-configure\.yaml|vllm-configure\.yaml .*nox -s configure", "configures real vLLM for five arch lists "
     "(10+ min); tests/integration/test_vllm_configure.py configures two releases"),
    (r"plan matrices/vllm-build\.yaml", "needs the vLLM checkout the commands before it clone"),
    (r"install_members\.py", "needs the 336 MB vLLM wheel in the current folder; "
     "docs/gpu-verification.md records what it gave"),
    (r"run examples/(verify|confirm)-gpu\.yaml", "builds cells for the GPU machine; "
     "test_end_to_end builds the same sample extension"),
]  # fmt: skip


def reason_not_run(command: Command) -> str | None:
    for pattern, why in NOT_HERE:
        if re.search(pattern, command.text, re.MULTILINE):
            return why
    return None


def _nox_sessions() -> set[str]:
    tree = ast.parse((REPO / "noxfile.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    }


COMMANDS = documented_commands()


def test_the_docs_have_commands() -> None:
    assert len(COMMANDS) >= 10
    assert any(c.expected for c in COMMANDS)  # a console transcript


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_documented_command_is_valid(command: Command) -> None:
    """Every kernel-matrix verb and option exists (placeholders filled in), every
    nox session exists."""
    text = command.text.replace("<hash>", "0123abcd").replace("<ref>", "v0.19.0")
    for line in text.splitlines():
        line = line.split("#")[0]
        for part in re.split(r"&&|;|\|", line):
            words = shlex.split(part)
            while words and "=" in words[0]:  # VAR=value before the command
                words = words[1:]
            if words[:1] == ["kernel-matrix"]:
                build_parser().parse_args(words[1:])  # raises UsageError if not
            if "-s" in words and any(w.endswith("nox") for w in words):
                sessions = words[words.index("-s") + 1 :]
                sessions = sessions[: sessions.index("--")] if "--" in sessions else sessions
                assert set(sessions) <= _nox_sessions(), command


# --- running them -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files, linked into a scratch directory (reports/, build/ and
    wheels/ are its own), with the cached vLLM wheels under wheels/."""
    root = tmp_path_factory.mktemp("docs")
    for entry in REPO.iterdir():
        if entry.name not in {"reports", "build", "wheels", ".git", ".venv", ".nox"}:
            (root / entry.name).symlink_to(entry)
    (root / "wheels").mkdir()
    for wheel in WHEELS.glob("vllm-*.whl"):
        (root / "wheels" / wheel.name).symlink_to(wheel)
    return root


def _needs_missing_wheel(command: Command, scratch: Path) -> str | None:
    """Why a command that reads a vLLM wheel cannot run (the wheel cannot be had),
    or None; a wheel missing from the cache is downloaded first (the docs' own pip
    download is not run here)."""
    for pattern in re.findall(r"(\S*wheels/(?:aarch64/)?vllm-[\w.*-]+\.whl)", command.text):
        expanded = os.path.expanduser(pattern)
        base = Path(expanded) if expanded.startswith("/") else scratch / expanded
        if list(base.parent.glob(base.name)):
            continue
        release = re.match(r"vllm-([0-9.]+)-", base.name)
        machine = "aarch64" if base.parent.name == "aarch64" else ""
        wheel, why = (
            vllm_wheel(release[1], machine) if release else (None, f"{pattern}: no release")
        )
        if wheel is None:
            return why
        if list(base.parent.glob(base.name)):
            continue  # the docs name the cache itself (~/.cache/kernel-matrix/wheels/...)
        link = base.parent / wheel.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(wheel)
    return None


_TIME = re.compile(r"\b\d+(\.\d+)? s\b")


def _shape(line: str) -> str:
    """A line with its timings blanked: ``passed in 5.9 s`` and ``in 0.0 s (cached: not
    rebuilt, artifacts restored into DIR)`` agree (a second run answers from the
    result cache)."""
    return _TIME.sub("N s", re.sub(r" \(cached[^)]*\)", "", line.strip()))


@pytest.mark.integration
@pytest.mark.parametrize("command", [c for c in COMMANDS if reason_not_run(c) is None], ids=str)
def test_documented_command_runs_as_written(command: Command, scratch: Path) -> None:
    missing = _needs_missing_wheel(command, scratch)
    if missing:
        pytest.skip(missing)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("COLUMNS", None)
    done = subprocess.run(
        ["bash", "-c", command.text],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = done.stdout + done.stderr
    expected = [line for line in command.expected if line.strip() not in ("...", "…")]
    assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
    exit_code = re.search(r"\(exit (\d+)\)\s*$", expected[-1]) if expected else None
    if exit_code:  # a transcript: its exit code
        assert done.returncode == int(exit_code[1]), f"{command}\n{output[-3000:]}"
    else:  # a verdict (0 or 1) is what the docs show; never a usage or infrastructure error
        assert done.returncode in (0, 1), f"{command}\n{output[-3000:]}"
    shapes = [_shape(line) for line in output.splitlines()]
    for line in expected:  # times aside; cells in parallel finish in any order
        assert _shape(line) in shapes, f"{command}: missing {line!r}\n{output[-3000:]}"
    if expected:  # the verdict line is the last
        assert shapes[-1] == _shape(expected[-1]), output[-3000:]


def test_every_skipped_command_says_why() -> None:
    for command in COMMANDS:
        why = reason_not_run(command)
        assert why is None or len(why) > 10
    assert shutil.which("bash")
