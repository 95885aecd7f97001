"""The JSON shape check the API runs on every body before parsing it (api/body.py)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.api.body import json_problem, structure


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _receipts_body(n: int) -> bytes:
    r = {
        "kind": "view",
        "sessionId": "0x" + os.urandom(32).hex(),
        "viewer": "0x" + os.urandom(20).hex(),
        "startedAt": 1767225500,
        "signature": "0x" + os.urandom(65).hex(),
    }
    return json.dumps({"receipts": [r] * n}, separators=(",", ":")).encode()


def test_a_full_receipts_batch_passes_the_default_limits() -> None:
    assert json_problem(_receipts_body(10_000), 16, 300_000) is None


def test_depth_and_elements_are_refused_with_the_limit_named() -> None:
    deep = b"[" * 17 + b"]" * 17
    assert json_problem(b"[" * 16 + b"]" * 16, 16, 1000) is None
    problem = json_problem(deep, 16, 1000)
    assert problem is not None and "deeper than 16" in problem
    wide = b"[" + b"0," * 1000 + b"0]"  # 1 + 1000 commas
    assert json_problem(wide, 16, 1001) is None
    problem = json_problem(wide, 16, 1000)
    assert problem is not None and "1001 elements" in problem and "1000" in problem


def test_brackets_inside_strings_count_for_nothing() -> None:
    # Fast path (no backslash) and regular-expression path (an escape) alike.
    for text in ('"[[[[[[[[[[,,,,,{{{{{"', '"\\"[[[[[[[[[[,,,,{{{{\\\\"'):
        body = f'{{"label": {text}, "n": [1, 2]}}'.encode()
        assert json.loads(body)  # valid JSON
        assert structure(body) == b"{,[,]}"
        assert json_problem(body, 2, 4) is None


def test_quoted_brackets_cannot_hide_real_depth() -> None:
    # "]" before and "[" after each level would flatten a naive bracket count.
    deep = "1"
    for _ in range(40):
        deep = f'["]", {deep}, "["]'
    assert _depth(json.loads(deep)) == 40
    problem = json_problem(deep.encode(), 16, 10_000)
    assert problem is not None and "deeper than 16" in problem


def test_unbalanced_brackets_are_left_to_the_parser() -> None:
    assert json_problem(b"[" * 40, 16, 1000) is None  # not JSON: the parser says so


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{},"\\ab:'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{},"\\ab', max_size=4), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=8))
def test_the_depth_verdict_matches_the_parsed_value(value: object, limit: int) -> None:
    body = json.dumps(value).encode()
    problem = json_problem(body, limit, 10**9)
    assert (problem is not None) == (_depth(value) > limit), (body, problem)


@pytest.mark.parametrize("escaped", [False, True])
def test_structure_is_the_same_on_both_paths(escaped: bool) -> None:
    body = b'{"a": ["x,y", "[]", {"b": "}{"}], "c": ' + (b'"\\u0041"' if escaped else b'"A"') + b"}"
    assert structure(body) == b"{[,,{}],}"
