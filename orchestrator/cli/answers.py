"""A repeated ``check`` answered from the output it printed before.

The check cache (``orchestrator.read.checkcache``) keeps a whole check's result, but
answering from it still costs the imports, the families' rules and the rendering
(about 0.3 s). A check asked again with the same command line, in the same directory,
environment and terminal, by the same code, whose inputs -- the libraries and wheels
it read, the families and matrix files it loaded, its build log -- all still have the
size, modification time and inode they had, prints the same bytes -- but for its
own time taken -- and exits with the same code: those are kept here and written
again, importing nothing but this module.

Only checks that depend on nothing else are kept (``cli.check`` decides): not
``--installed`` (an environment changes under the same command), not ``--devices
local`` or ``--confirm-with-driver`` (the GPUs do), not a directory (its files do),
not the cuobjdump engine, not ``--no-cache``. Answers live under
``<cache>/answers``, at most ``MAX_ANSWERS`` of them; a damaged one is a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.common.cachedir import cache_root

FORMAT = "1"
MAX_ANSWERS = 64
VERB = "check"
# What else decides the bytes printed: where the cache is, how rich renders.
_ENVIRONMENT = (
    "HOME", "XDG_CACHE_HOME", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM",
    "TTY_COMPATIBLE", "TTY_INTERACTIVE", "PYTHONIOENCODING", "LANG", "LC_ALL", "LC_CTYPE",
)  # fmt: skip
_PACKAGE = Path(__file__).resolve().parents[1]


def answers_dir() -> Path:
    return cache_root() / "answers"


def replay(argv: Sequence[str]) -> int | None:
    """Print the kept answer to ``argv`` and return its exit code; None when there is
    none, or an input changed since."""
    if not argv or argv[0] != VERB:
        return None
    started = time.monotonic()
    try:
        path = answers_dir() / f"{answer_key(argv)}.json"
        kept = json.loads(path.read_bytes())
        if kept["format"] != FORMAT:
            return None
        for name, stamp in kept["inputs"]:
            if _stamp(name) != stamp:
                return None
        before, after = kept["stdout"]
        template, digits = kept["elapsed"]
        elapsed = template.format(round(time.monotonic() - started, digits))
        err, code = kept["stderr"], int(kept["exit"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    sys.stdout.write(before + elapsed + after)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used
    return code


def answer_key(argv: Sequence[str]) -> str:
    """What the printed bytes depend on, besides the inputs' stamps."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name in _ENVIRONMENT or name.startswith("KERNEL_MATRIX_")
    }
    parts = [
        FORMAT,
        sys.version,
        sys.executable,  # (its environment; a library upgraded in place is not seen)
        _code_stamp(),
        os.getcwd(),
        json.dumps(list(argv)),
        json.dumps(environment, sort_keys=True),
        _stream_state(sys.stdout),
        _stream_state(sys.stderr),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _stream_state(stream: IO[str]) -> str:
    try:
        if not stream.isatty():
            return "pipe"
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return "other"
    return f"tty:{size.columns}x{size.lines}"


def _code_stamp() -> str:
    """This tool's files, by name, size and modification time (a changed file, a
    reinstall, is another stamp)."""
    stamps: list[str] = []
    pending = [str(_PACKAGE)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        pending.append(entry.path)
                else:
                    stat = entry.stat()
                    stamps.append(f"{entry.path}:{stat.st_size}:{stat.st_mtime_ns}")
    stamps.sort()
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()


def _stamp(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]


class _Recorded:
    """A text stream that keeps what is written to it and passes it on."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.text: list[str] = []

    def write(self, text: str) -> int:
        self.text.append(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, flush ...
        return getattr(self._stream, name)


class Recording:
    """A check whose printed answer is to be kept: its inputs' stamps, taken before
    they are read, and what it writes."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.key = answer_key(argv)
        self.inputs: dict[str, list[int] | None] = {}
        self.complete = True  # every input stamped
        self._printed = ("", "")  # stdout, stderr (``printing``); nothing kept without them

    def add_inputs(self, paths: Sequence[Path]) -> None:
        """Files the answer is read from (through a link: the link's target then)."""
        for path in paths:
            name = os.path.abspath(path)
            stamp = self.inputs.setdefault(name, _stamp(name))
            self.complete = self.complete and stamp is not None

    def add_absent(self, path: Path) -> None:
        """A file whose absence the answer depends on (``--families vllm`` means the
        shipped profile only while there is no file ``vllm`` here)."""
        name = os.path.abspath(path)
        self.inputs[name] = None
        self.complete = self.complete and _stamp(name) is None

    @contextlib.contextmanager
    def printing(self) -> Iterator[None]:
        """Record stdout and stderr while the answer is printed."""
        out, err = _Recorded(sys.stdout), _Recorded(sys.stderr)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
        self._printed = "".join(out.text), "".join(err.text)

    def keep(self, exit_code: int, seconds: float, template: str, digits: int) -> None:
        """Keep the answer (best effort: this is a cache), unless an input could not
        be stamped. The check's ``seconds``, rounded to ``digits`` and formatted by
        ``template``, must have been printed exactly once: a replay tells its own
        time there, not the first check's."""
        out, err = self._printed
        shown = template.format(round(seconds, digits))
        if not self.complete or out.count(shown) != 1:
            return
        before, _, after = out.partition(shown)
        answer = {
            "format": FORMAT,
            "inputs": sorted(self.inputs.items()),
            "stdout": [before, after],
            "elapsed": [template, digits],
            "stderr": err,
            "exit": exit_code,
        }
        from orchestrator.common.errors import FileSystemError
        from orchestrator.common.fsutil import prune_least_recent, write_atomic

        directory = answers_dir()
        with contextlib.suppress(OSError, FileSystemError):
            directory.mkdir(parents=True, exist_ok=True)
            write_atomic(directory / f"{self.key}.json", json.dumps(answer), durable=False)
            prune_least_recent(directory, MAX_ANSWERS)
