"""End-to-end latency histograms: percentiles within a bucket's 2%, merging, JSON round trip."""

import json
import random

import pytest

from agent.publish.latency import RATIO, LatencyHistogram, merged


def test_percentiles_are_within_one_bucket_of_the_exact_ones():
    rng = random.Random(3)
    samples = [rng.lognormvariate(-4.0, 1.0) for _ in range(20000)]  # around 18 ms, long tail
    h = LatencyHistogram()
    for s in samples:
        h.add(s)
    ordered = sorted(samples)
    for q in (50, 90, 99):
        exact = ordered[max(0, -(-len(ordered) * q // 100) - 1)]
        got = h.percentile(q)
        assert exact <= got <= exact * RATIO * 1.0001, (q, exact, got)
    assert h.percentile(100) == max(samples) and h.count == 20000
    summary = h.summary_ms()
    assert summary["p50"] == pytest.approx(h.percentile(50) * 1000, abs=0.01)


def test_histograms_of_several_consumers_add_up_to_the_whole():
    rng = random.Random(5)
    samples = [rng.uniform(0.001, 0.5) for _ in range(3000)]
    whole, parts = LatencyHistogram(), [LatencyHistogram() for _ in range(3)]
    for i, s in enumerate(samples):
        whole.add(s)
        parts[i % 3].add(s)
    total = merged(parts)
    assert total.buckets == whole.buckets and total.count == whole.count
    assert total.percentile(99) == whole.percentile(99) and total.max == whole.max


def test_negative_latency_is_counted_not_hidden_and_json_round_trips():
    h = LatencyHistogram()
    for s in (-0.002, 0.0, 0.004, 0.01, float("nan")):
        h.add(s)
    assert h.count == 4 and h.negative == 1 and h.min == -0.002
    back = LatencyHistogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.buckets == h.buckets and back.percentile(50) == h.percentile(50)
    assert LatencyHistogram().percentile(50) is None
    with pytest.raises(ValueError, match="add up"):
        LatencyHistogram.from_dict({**h.to_dict(), "count": 9})
