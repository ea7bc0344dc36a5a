"""common.jsontext: its once-made C encoder writes what json's standard encoder
writes, and the whole text reads back as the value it was made from."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.common import jsontext

STANDARD = json.JSONEncoder(separators=(", ", ": ")).encode
PLAIN = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from([math.inf, -math.inf])
)
VALUES = st.recursive(
    PLAIN,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_the_c_encoder_is_used_on_cpython() -> None:
    assert jsontext._ONE_LINE.__name__ == "once_made"


@given(st.dictionaries(st.text(), PLAIN, max_size=6))
def test_a_record_is_written_as_the_standard_encoder_writes_it(record: dict[str, Any]) -> None:
    assert jsontext._ONE_LINE(record) == STANDARD(record)


@given(VALUES)
def test_the_text_reads_back(value: Any) -> None:
    assert json.loads(jsontext.dumps(value)) == value


def test_what_json_cannot_write_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})

    class Text(str):
        pass

    assert jsontext.dumps({"k": Text("v"), "n": 1}) == '{"k": "v", "n": 1}'
