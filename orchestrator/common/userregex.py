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


# A pattern's leading characters that stand for themselves: every match contains them,
# so a text without them is answered without the regex engine (``required_text``).
_LITERAL = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_<>,:;=!@#%&'\"~/ -"
)
_QUANTIFIERS = frozenset("?*{")
MIN_REQUIRED = 3  # shorter prefixes are in most names: not worth a substring search
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-Z^-]")
# "^" and look-arounds of literal text at the start (no nesting, no escapes).
_LEADING_ASSERTIONS = re.compile(r"(?:\^|\(\?<?[=!][\w<>:,]*\))*")


def required_text(pattern: str) -> str | None:
    r"""A text that every match of ``pattern`` contains: its leading literal characters
    (up to the first one that is special, less one that a quantifier makes optional),
    when the pattern has no ``|`` outside parentheses; None when there is no such
    prefix of at least MIN_REQUIRED characters.

    >>> required_text(r"marlin(::|\d+)Marlin"), required_text("Sm100Fmha"), required_text("(?i)mla")
    ('marlin', 'Sm100Fmha', None)
    >>> required_text("(?<!mxfp4_)cvt_fp16"), required_text("^void marlin")
    ('cvt_fp16', 'void marlin')
    >>> required_text("cutlass_3x_gemm?_x"), required_text("abc|xyz"), required_text("abc(?i)")
    ('cutlass_3x_gem', None, None)
    """
    if _INLINE_FLAGS.search(pattern):
        return None  # (the regex module applies a flag met later to the whole pattern)
    depth = 0
    escaped = False
    for char in pattern:  # a "|" at depth 0 makes the prefix one alternative's
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth <= 0:
            return None
    start = _LEADING_ASSERTIONS.match(pattern)
    begin = end = start.end() if start else 0  # ("^", look-arounds: they match no text)
    while end < len(pattern) and pattern[end] in _LITERAL:
        end += 1
    if end < len(pattern) and pattern[end] in _QUANTIFIERS:
        end -= 1  # "ab?" requires "a" only
    return pattern[begin:end] if end - begin >= MIN_REQUIRED else None


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
        self.required = required_text(pattern)

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``, within the time limits."""
        if self.required is not None and self.required not in text:
            return False  # (no match can lack it: the engine is not asked)
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
    """Whether any of several user patterns occurs in a text (a vLLM wheel's check
    meets thousands of distinct kernel names, and a families file may hold dozens of
    patterns). A pattern that requires a text (``required_text``: most do) is searched
    on its own, and only in a text that holds it; the others in one search of their
    alternation. The limits stay each pattern's own: an alternation that exceeds its
    time is given up for good, and its patterns are then searched one by one, so
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
        # A pattern that requires a text is searched on its own, after a substring
        # test that most texts fail; the others in one alternation.
        self._needled = tuple(p for p in self.patterns if p.required is not None)
        self._rest = tuple(p for p in self.patterns if p.required is None)

    def _prepare(self) -> tuple[UserRegex, ...]:
        combinable = [p for p in self._rest if not _NOT_COMBINABLE.search(p.pattern)]
        alone = tuple(p for p in self._rest if p not in combinable)
        if len(combinable) > 1:
            # (one that does not compile is searched one by one, as each compiled alone)
            with contextlib.suppress(InvalidRegex):
                self._combined = compile_pattern(
                    "|".join(f"(?:{p.pattern})" for p in combinable), MAX_COMBINED_LENGTH
                )
        self._alone = alone if self._combined is not None else self._rest
        return self._alone

    def search(self, text: str) -> bool:
        if any(p.search(text) for p in self._needled):
            return True
        return bool(self._rest) and _remembered(self._memo, text, self._search)

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
                self._combined = None
                self._alone = alone = self._rest
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
