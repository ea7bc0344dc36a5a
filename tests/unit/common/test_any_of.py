"""AnyOf: one search of several user patterns gives what searching each gives."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.common.errors import ConfigError
from orchestrator.common.userregex import AnyOf, UserRegex

# Patterns of every kind a families file may hold: plain, anchored, with classes and
# look-arounds (combined), and with inline flags, backreferences, named groups
# (searched alone: combined, they would change meaning).
PATTERNS = [
    "nvfp4",
    "^void marlin",
    r"scaled_mm_c[23]x",
    "(?<!un)fused",
    "mla(?=_sm100)",
    "(?i)MACHETE",
    r"(ab)\1",
    "(?P<x>grouped)_mm",
    "q(?#comment)uant",
    "(?:sm|compute)_1[02]0[af]?$",
]
NAMES = st.text(alphabet="abcdefgilmnoqrstuvxyz_0123456789ACEHIM^ ", max_size=40) | st.sampled_from(
    [
        "void nvfp4_quant<float>()",
        "void marlin::Marlin<4>()",
        "scaled_mm_c3x_sm90",
        "unfused",
        "fused",
        "mla_sm100",
        "mla_sm90",
        "machete_mm",
        "abab",
        "abba",
        "grouped_mm",
        "quant",
        "x sm_120a",
        "compute_100",
    ]
)


@settings(max_examples=300, deadline=None)
@given(chosen=st.lists(st.sampled_from(PATTERNS), min_size=0, max_size=6, unique=True), name=NAMES)
def test_one_search_equals_each_pattern_searched(chosen: list[str], name: str) -> None:
    patterns = [UserRegex(p, f"k[{i}]") for i, p in enumerate(chosen)]
    assert AnyOf(patterns).search(name) == any(p.search(name) for p in patterns)


def test_a_pattern_with_inline_flags_does_not_make_the_others_case_blind() -> None:
    rules = AnyOf([UserRegex("(?i)machete", "k[0]"), UserRegex("nvfp4", "k[1]")])
    assert rules.search("MACHETE")
    assert not rules.search("NVFP4")


def test_a_slow_pattern_is_still_refused_by_its_own_name() -> None:
    rules = AnyOf([UserRegex("nvfp4", "k[0]"), UserRegex("(a|aa)+$", "families.x.kernels[1]")])
    with pytest.raises(ConfigError, match=r"families\.x\.kernels\[1\]: regex '\(a\|aa\)\+\$'"):
        rules.search("a" * 5000 + "b")


def test_it_travels_to_a_worker_process() -> None:
    rules = AnyOf([UserRegex("nvfp4", "k[0]"), UserRegex("mla", "k[1]")])
    again = pickle.loads(pickle.dumps(rules))  # noqa: S301 (our own bytes)
    assert again.search("mla_sm100") and not again.search("marlin")


# Pieces of patterns: literal runs, quantifiers, groups, alternations, classes, flags.
PIECES = st.sampled_from(
    ["mar", "lin", "Mar", "<", "::", "_", "sm9", "0", "a", "?", "*", "+", "{0,2}", "(", ")",
     "|", "[0-9]", r"\d", ".", "(?i)", "(?:", "(?<!x)", "(?=mar)", "^", "$", r"\|", " ", "-"]
)  # fmt: skip
TEXTS = st.lists(
    st.sampled_from(
        ["mar", "lin", "MAR", "Lin", "<", "::", "_", "sm9", "0", "1", "a", "A", "x", "|"]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, min_size=1, max_size=8).map("".join), TEXTS)
def test_a_text_without_the_required_text_never_matches(pattern: str, text: str) -> None:
    """``required_text`` lets a search skip the engine; it must never skip a match."""
    import regex

    from orchestrator.common.userregex import required_text

    try:
        compiled = regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError, ValueError):
        return
    required = required_text(pattern)
    if required is not None and compiled.search(text) is not None:
        assert required in text
    rule = UserRegex(pattern, "k[0]")
    assert rule.search(text) == (compiled.search(text) is not None)
    assert AnyOf([rule, UserRegex("lin", "k[1]")]).search(text) == (
        compiled.search(text) is not None or "lin" in text
    )
