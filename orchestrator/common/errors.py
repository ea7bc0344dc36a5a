"""Every fatal error of kernel-matrix, each carrying its own exit code.

All of them live here so that exit codes stay unique and greppable; ``cli.command``
turns any of them into one clean line on stderr and ``sys.exit(error.exit_code)``.

Exit codes (also in README):
    0    all expectations met
    1    a kernel missing, hollow, or a regression against the baseline
    2    bad usage or bad configuration (the user's input)
    3    infrastructure failure (toolchain, docker, build crash, probe tool crash,
         a file that cannot be written)
    130  interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM (what CI systems send
         on a timeout or a cancel). Either way every finished cell's result is kept,
         the others are written as not-run, and ``run --resume`` continues the run.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_KERNEL_MISSING = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class KernelMatrixError(Exception):
    """Base class: a fatal error that the CLI reports as one line."""

    exit_code: int = EXIT_INFRA

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line message would break CI log greps.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


# --- the user's input (exit 2) -------------------------------------------------


class UsageError(KernelMatrixError):
    """Bad command-line usage."""

    exit_code = EXIT_USAGE


class ConfigError(KernelMatrixError):
    """A matrix/families file that is malformed or invalid (names file:line:col)."""

    exit_code = EXIT_USAGE


class ArchSpecError(ConfigError):
    """An architecture spelling that is unknown or malformed."""


class InputFileError(KernelMatrixError):
    """A file given to probe/check that is not what it claims (truncated ELF, corrupt
    fatbin, zip-slip wheel, ...)."""

    exit_code = EXIT_USAGE


# --- infrastructure (exit 3) ---------------------------------------------------


class InfraError(KernelMatrixError):
    """Something outside the user's input failed."""

    exit_code = EXIT_INFRA


class ToolchainError(InfraError):
    """A CUDA toolchain could not be provisioned or is broken."""


class ToolError(InfraError):
    """An external tool (cuobjdump, cmake) crashed or could not be run."""


class DockerError(InfraError):
    """The container engine is unreachable or a container failed to run."""


class BuildError(InfraError):
    """A cell's build failed or timed out."""


class FileSystemError(InfraError):
    """A file or directory could not be written (disk full, permissions, read-only)."""


class OutputBusy(InfraError):
    """Another kernel-matrix process is writing the same output directory."""


class CellErrors(InfraError):
    """Cells could not be built or checked (their results say why); one line for all."""


# --- interruption (130 / 143) ----------------------------------------------------


class Interrupted(KernelMatrixError):
    """The run was stopped by a signal; finished results are kept on disk."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, *, exit_code: int = EXIT_INTERRUPTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
