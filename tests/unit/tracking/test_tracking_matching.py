"""IoU and the thresholded optimal assignment."""

import itertools

import numpy as np

from agent.tracking.matching import iou_matrix, match


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    iou = iou_matrix(a, b)
    np.testing.assert_allclose(iou[0], [50 / 150, 0.0, 1.0])
    np.testing.assert_array_equal(iou[1], [0.0, 0.0, 0.0])  # an empty box overlaps nothing
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_the_assignment_is_the_global_optimum_not_the_greedy_one():
    # Greedy takes (0,0) at 0.9 and leaves row 1 with 0.1 (total 1.0); the optimum is 0.8 + 0.8.
    iou = np.array([[0.9, 0.8], [0.8, 0.1]])
    pairs, rows, cols = match(iou, 0.05)
    assert sorted(pairs) == [(0, 1), (1, 0)] and rows == [] and cols == []


def test_pairs_under_the_threshold_are_never_matched_and_the_threshold_itself_is():
    iou = np.array([[0.3, 0.0], [0.0, 0.29999]])
    pairs, rows, cols = match(iou, 0.3)
    assert pairs == [(0, 0)] and rows == [1] and cols == [1]
    assert match(np.zeros((0, 3)), 0.3) == ([], [], [0, 1, 2])
    assert match(np.zeros((2, 0)), 0.3) == ([], [0, 1], [])


def test_the_assignment_maximises_total_iou_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, m = rng.integers(1, 5, 2)
        iou = rng.uniform(0, 1, (n, m)) * (rng.uniform(0, 1, (n, m)) > 0.3)
        pairs, _, _ = match(iou, 0.25)
        best = 0.0
        # Brute force over every set of allowed pairs that is one-to-one.
        for perm in itertools.permutations(range(max(n, m))):
            total = sum(iou[r, c] for r, c in zip(range(n), perm) if c < m and iou[r, c] >= 0.25)
            best = max(best, total)
        assert abs(sum(iou[r, c] for r, c in pairs) - best) < 1e-9
        assert all(iou[r, c] >= 0.25 for r, c in pairs)
