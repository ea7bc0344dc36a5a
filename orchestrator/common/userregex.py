"""Regexes that come from users' files (family ``kernels``, ``exclude_kernels`` and
``log`` patterns), compiled and matched with bounds.

Python's own ``re`` backtracks: ``(a|aa)+$`` against a long kernel name runs for
ever, and some patterns raise ``OverflowError`` or ``RecursionError`` instead of
``re.error``. These are compiled by the ``regex`` module (the same syntax as ``re``,
look-behind included) and every match runs with a timeout; a pattern that has
spent its time budget is refused as the user's error (exit 2), naming the rule.
Limits (also in docs/security.md): a pattern of at most ``MAX_PATTERN_LENGTH``
characters; ``MATCH_TIMEOUT_S`` per match (plus ``PER_CHAR_S`` for each character of a
long name); and ``BUDGET_S`` in all per pattern, counting only the time a match takes
beyond that linear allowance (CPU time of the matching thread, so that waiting on a
loaded machine does not count), so that a pattern slow on every name is refused after
a few seconds while a good one is never refused however many names it meets.

>>> rule = UserRegex("nvfp4_[a-z]+", "families.nvfp4.kernels[0]")
>>> rule.search("void nvfp4_quant<float>()"), rule.search("void mla()")
(True, False)
>>> UserRegex("(a|aa)+$", "families.x.kernels[0]").search("a" * 5000 + "b")
Traceback (most recent call last):
...
orchestrator.common.errors.ConfigError: families.x.kernels[0]: regex '(a|aa)+$' took more than 1.0 s to match one name (catastrophic backtracking?); rewrite it
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.common.errors import ConfigError

MAX_PATTERN_LENGTH = 1000
MAX_COMBINED_LENGTH = 1 << 20  # an alternation of many patterns (AnyOf)
MATCH_TIMEOUT_S = 1.0
PER_CHAR_S = 2e-7  # about 5 MB/s: far slower than a linear match ever is
ALLOWANCE_S = 1e-3
BUDGET_S = 10.0
# A kernel's name recurs in each code object holding it (a cubin per arch, PTX):
# answers for the latest distinct names are kept, so each is matched once.
MEMO_SIZE = 1 << 14


class InvalidRegex(ValueError):
    """A pattern that does not compile (the caller adds where it is)."""


def compile_pattern(pattern: str, limit: int = MAX_PATTERN_LENGTH) -> Any:
    """The compiled pattern, or :class:`InvalidRegex` saying why not."""
    if len(pattern) > limit:
        raise InvalidRegex(f"longer than {limit} characters")
    import regex  # (40 ms: only when a pattern is wanted)

    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise InvalidRegex(str(exc)) from None
    except (OverflowError, RecursionError, ValueError, MemoryError) as exc:
        # e.g. a repeat count beyond the engine's, or parentheses nested thousands deep
        raise InvalidRegex(f"{type(exc).__name__}: {exc}") from None


class UserRegex:
    """One user pattern and the time it has spent matching."""

    def __init__(self, pattern: str, where: str, *, lazy: bool = False) -> None:
        self.pattern = pattern
        self.where = where
        # ``lazy``: known to compile (a families file checks its patterns as it is
        # read), so compiled on the first search: a repeated check answered from its
        # cache searches nothing. Otherwise an invalid pattern is refused here.
        self._compiled: Any = None if lazy else self._compile()
        self._spent = 0.0
        self._lock = threading.Lock()
        self._memo: dict[str, bool] = {}

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``, within the time limits."""
        return _remembered(self._memo, text, self._search)

    def _compile(self) -> Any:
        try:
            self._compiled = compile_pattern(self.pattern)
        except InvalidRegex as exc:
            raise ConfigError(
                f"{self.where}: invalid regex {_shown(self.pattern)}: {exc}"
            ) from None
        return self._compiled

    def _search(self, text: str) -> bool:
        compiled = self._compiled or self._compile()
        allowance = ALLOWANCE_S + len(text) * PER_CHAR_S
        left = BUDGET_S - self._spent
        timeout = max(ALLOWANCE_S, min(MATCH_TIMEOUT_S, left) + allowance)
        started = time.thread_time()  # CPU time: a busy machine's waits do not count
        try:
            return compiled.search(text, timeout=timeout) is not None
        except TimeoutError:
            if left < MATCH_TIMEOUT_S:
                why = f"has spent its {BUDGET_S:.0f} s budget of slow matches"
            else:
                why = f"took more than {MATCH_TIMEOUT_S} s to match one name"
            raise ConfigError(
                f"{self.where}: regex {_shown(self.pattern)} {why} "
                "(catastrophic backtracking?); rewrite it"
            ) from None
        finally:
            excess = time.thread_time() - started - allowance
            if excess > 0:
                with self._lock:
                    self._spent += excess

    def __reduce__(self) -> tuple[Any, ...]:
        # To a worker process (check's lazy read): the pattern, compiled there anew.
        return (UserRegex, (self.pattern, self.where))

    def __repr__(self) -> str:
        return f"UserRegex({self.pattern!r})"


# What keeps a pattern out of an alternation: a backreference or group reference
# (their numbers would shift), and every "(?" construct but a non-capturing group and
# the look-arounds (inline flags would apply to the whole alternation, named groups
# could clash). Such a pattern is searched on its own.
_NOT_COMBINABLE = re.compile(r"\\[1-9gk]|\(\?(?![:=!]|<[=!])")


class AnyOf:
    """Whether any of several user patterns occurs in a text, in one search of their
    alternation rather than one search per pattern (a vLLM wheel's check meets
    thousands of distinct kernel names, and a family file may hold dozens of
    patterns). The limits stay each pattern's own: an alternation that exceeds its
    time is given up for good, and the patterns are then searched one by one, so
    that a slow one is refused by its own name.

    >>> rules = AnyOf([UserRegex("nvfp4", "k[0]"), UserRegex("(?i)MLA", "k[1]")])
    >>> rules.search("void nvfp4_quant()"), rules.search("void mla_kernel()"), rules.search("x")
    (True, True, False)
    """

    def __init__(self, patterns: Sequence[UserRegex]) -> None:
        self.patterns = tuple(patterns)
        self._alone: tuple[UserRegex, ...] | None = None  # (decided on the first search)
        self._combined: Any = None
        self._memo: dict[str, bool] = {}

    def _prepare(self) -> tuple[UserRegex, ...]:
        combinable = [p for p in self.patterns if not _NOT_COMBINABLE.search(p.pattern)]
        alone = tuple(p for p in self.patterns if p not in combinable)
        if len(combinable) > 1:
            # (one that does not compile is searched one by one, as each compiled alone)
            with contextlib.suppress(InvalidRegex):
                self._combined = compile_pattern(
                    "|".join(f"(?:{p.pattern})" for p in combinable), MAX_COMBINED_LENGTH
                )
        self._alone = alone if self._combined is not None else self.patterns
        return self._alone

    def search(self, text: str) -> bool:
        return _remembered(self._memo, text, self._search)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AnyOf, (self.patterns,))

    def _search(self, text: str) -> bool:
        alone = self._alone if self._alone is not None else self._prepare()
        combined = self._combined
        if combined is not None:
            allowance = ALLOWANCE_S + len(text) * PER_CHAR_S
            try:
                if combined.search(text, timeout=MATCH_TIMEOUT_S + allowance) is not None:
                    return True
                return any(p.search(text) for p in alone)
            except TimeoutError:
                self._combined, self._alone = None, self.patterns
                alone = self.patterns
        return any(p.search(text) for p in alone)


def _remembered(memo: dict[str, bool], text: str, search: Callable[[str], bool]) -> bool:
    """``search(text)``, answered from ``memo`` for a text met before (bounded)."""
    found = memo.get(text)
    if found is None:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        found = memo[text] = search(text)
    return found


def _shown(pattern: str) -> str:
    text = repr(pattern)
    return text if len(text) <= 80 else text[:77] + "..."
