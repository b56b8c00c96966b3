"""fastjson reads exactly what json reads, or declines; never anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evaluate.fastjson import parse_uniform_list

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
# Built from a tuple so every object has the same key order, as a program writes them.
detection = st.tuples(
    st.integers(0, 2**40), st.integers(0, 90), st.lists(finite, min_size=4, max_size=4), finite
).map(lambda t: {"image_id": t[0], "category_id": t[1], "bbox": t[2], "score": t[3]})


def reference(items):
    return {
        "image_id": np.array([d["image_id"] for d in items], float),
        "category_id": np.array([d["category_id"] for d in items], float),
        "bbox": np.array([d["bbox"] for d in items], float).reshape(-1, 4),
        "score": np.array([d["score"] for d in items], float),
    }


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(detection, min_size=1, max_size=30),
    indent=st.sampled_from([None, 1, 2]),
    compact=st.booleans(),
)
def test_uniform_lists_parse_bit_identical_to_json(items, indent, compact):
    text = json.dumps(items, indent=indent, separators=(",", ":") if compact and indent is None else None)
    got = parse_uniform_list(text.encode())
    if got is None:
        # Declining is allowed only for spellings left to json on purpose (an exponent with '+').
        assert "+" in text
        return
    want = reference(json.loads(text))
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape
        assert np.array_equal(got[key], want[key]), key


@pytest.mark.parametrize(
    "text",
    [
        '[{"image_id": "a", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # string id
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, '
        '{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]',  # short box
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, '
        '{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": null}]',  # null
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, '
        '{"image_id2": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # key differs by a digit
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, '
        '{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}',  # truncated
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, '
        '{"category_id": 1, "image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # other key order
        # a nested object
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "extra": {"a": 1}}]',
        '{"annotations": []}',
        "[]",
    ],
)
def test_anything_unusual_is_left_to_json(text):
    assert parse_uniform_list(text.encode()) is None


def test_large_ids_beyond_float_precision_are_left_to_json():
    text = json.dumps([{"image_id": 2**53 + 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}])
    assert parse_uniform_list(text.encode()) is None
