"""Counting-line geometry: sides and directions, the segment's ends, points on the line,
and the line entries as a config gives them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.tracking.lines import IN, OUT, CountingLine, advance, crossing, side

A, B = (100.0, 200.0), (300.0, 200.0)  # a horizontal door line, drawn left to right
NAMES = ["person", "car"]


def test_moving_down_across_a_left_to_right_line_is_in_and_up_is_out():
    # (B - A) x (P - A) > 0 below this line in image coordinates (y down).
    assert side(A, B, (200.0, 250.0)) > 0 > side(A, B, (200.0, 150.0))
    assert crossing(A, B, (200.0, 150.0), (200.0, 250.0)) == IN
    assert crossing(A, B, (200.0, 250.0), (200.0, 150.0)) == OUT


def test_swapping_the_ends_swaps_the_directions():
    assert crossing(B, A, (200.0, 150.0), (200.0, 250.0)) == OUT
    assert crossing(B, A, (200.0, 250.0), (200.0, 150.0)) == IN


def test_a_move_that_stays_on_one_side_or_crosses_only_the_extension_does_not_count():
    assert crossing(A, B, (150.0, 150.0), (250.0, 190.0)) is None
    assert crossing(A, B, (350.0, 150.0), (350.0, 250.0)) is None  # beyond B
    assert crossing(A, B, (50.0, 150.0), (99.0, 250.0)) is None  # beyond A
    assert crossing(A, B, (0.0, 150.0), (400.0, 250.0)) == IN  # long and slanted, through the middle


def test_the_segment_is_closed_a_path_through_an_end_point_counts_one_just_past_it_does_not():
    assert crossing(A, B, (100.0, 150.0), (100.0, 250.0)) == IN  # through A exactly
    assert crossing(A, B, (300.0, 250.0), (300.0, 150.0)) == OUT  # through B exactly
    assert crossing(A, B, (50.0, 150.0), (150.0, 250.0)) == IN  # diagonal through A
    assert crossing(A, B, (99.999, 150.0), (99.999, 250.0)) is None
    assert crossing(A, B, (300.001, 150.0), (300.001, 250.0)) is None


def test_a_point_that_stops_on_the_line_and_goes_on_counts_once_and_one_that_turns_back_never():
    ref = None
    directions = []
    for p in [(200.0, 150.0), (200.0, 200.0), (200.0, 200.0), (200.0, 260.0), (200.0, 270.0)]:
        ref, d = advance(ref, p, A, B)
        directions.append(d)
    assert directions == [None, None, None, IN, None]
    ref = None
    for p in [(200.0, 150.0), (200.0, 200.0), (200.0, 140.0)]:
        ref, d = advance(ref, p, A, B)
        assert d is None
    assert crossing(A, B, (200.0, 200.0), (200.0, 250.0)) is None  # starts on the line: no side to leave


def test_going_round_the_end_does_not_count_and_leaves_the_point_on_its_new_side():
    ref = None
    for p in [(200.0, 150.0), (350.0, 150.0), (350.0, 250.0), (200.0, 250.0)]:
        ref, d = advance(ref, p, A, B)
        assert d is None
    ref, d = advance(ref, (200.0, 150.0), A, B)  # back across the segment itself
    assert d == OUT


# Eighths of a pixel: every product in the geometry is exact, so a path through an end point
# is decided the same way in both directions (with arbitrary floats, rounding decides ties).
coord = st.integers(-8000, 8000).map(lambda v: v / 8)
point = st.tuples(coord, coord)


@given(point, point, point, point)
def test_reversing_a_move_or_the_line_reverses_the_direction(a, b, p0, p1):
    forward = crossing(a, b, p0, p1)
    flipped = {IN: OUT, OUT: IN, None: None}[forward]
    assert crossing(a, b, p1, p0) == flipped
    assert crossing(b, a, p0, p1) == flipped


def test_lines_from_config_entries_in_pixels_and_fractions():
    entry = {"name": "door", "points": [[0.5, 0], [0.5, 1]], "units": "fraction", "anchor": "center",
             "classes": ["person"]}
    line = CountingLine.from_mapping(entry, NAMES, "agent.yaml: lines.0")
    assert line.endpoints(640, 480) == ((320.0, 0.0), (320.0, 480.0))
    assert line.counts_class(0) and not line.counts_class(1)
    assert line.to_dict(NAMES) == {"name": "door", "points": [[0.5, 0.0], [0.5, 1.0]], "units": "fraction",
                                   "anchor": "center", "classes": ["person"]}
    plain = CountingLine.from_mapping({"name": "gate", "points": [[10, 20], [30, 40]]}, NAMES, "x")
    assert plain.endpoints(640, 480) == ((10.0, 20.0), (30.0, 40.0)) and plain.counts_class(1)
    assert plain.anchor == "bottom_center"


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "points": [[1, 1], [1, 1]]}, "lines.0.points: the two points are the same"),
    ({"name": "a", "points": [[0, 0], [2, 1]], "units": "fraction"}, "within 0..1"),
    ({"name": "a", "points": [[0, 0]]}, "lines.0.points: must be two points"),
    ({"name": "a b", "points": [[0, 0], [1, 1]]}, "lines.0.name:"),
    ({"name": "a", "points": [[0, 0], [1, 1]], "anchor": "top"}, "lines.0.anchor:"),
    ({"name": "a", "points": [[0, 0], [1, 1]], "classes": ["dog"]}, "'dog' not in the model's labels"),
    ({"name": "a", "points": [[0, 0], [1, 1]], "colour": "red"}, "unknown key(s) colour"),
    (["a"], "a line must be a mapping"),
])
def test_bad_line_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError) as err:
        CountingLine.from_mapping(entry, NAMES, "f.yaml: lines.0")
    assert message in str(err.value) and "f.yaml: lines.0" in str(err.value)
