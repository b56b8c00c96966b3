import numpy as np

from agent.runtime.metrics import (
    CpuMeter,
    LatencyWindow,
    RateMeter,
    StageMetrics,
    resident_memory_mb,
    system_stats,
    thermal_zones,
)


def test_latency_window_reports_percentiles_of_the_last_samples_only():
    window = LatencyWindow(size=100)
    for value in range(1000):  # only 900..999 remain
        window.add(value)
    stats = window.percentiles()
    assert stats["count"] == 100
    assert stats["p50"] == float(np.percentile(np.arange(900, 1000), 50))
    assert stats["p99"] == round(float(np.percentile(np.arange(900, 1000), 99)), 2)
    assert LatencyWindow().percentiles() == {"p50": 0.0, "p99": 0.0, "count": 0}


def test_rate_meter_counts_events_in_its_horizon():
    meter = RateMeter(horizon=10)
    for i in range(21):
        meter.tick(now=100 + i * 0.5)  # 2 per second for 10 s
    assert meter.rate(now=110) == 2.0
    assert meter.rate(now=125) == 0.0  # all of them aged out


def test_stage_metrics_snapshot():
    metrics = StageMetrics()
    metrics.observe("inference", 10)
    metrics.observe("inference", 30)
    metrics.count("frames", 2)
    snap = metrics.snapshot()
    assert snap["latency_ms"]["inference"]["p50"] == 20.0 and snap["counters"] == {"frames": 2}
    assert metrics.counter("frames") == 2 and metrics.counter("missing") == 0


def test_thermal_zones_read_jetson_style_sysfs(tmp_path):
    for i, (name, milli) in enumerate([("CPU-therm", "41500"), ("GPU-therm", "39000")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(name + "\n")
        (zone / "temp").write_text(milli + "\n")
    (tmp_path / "thermal_zone9").mkdir()  # unreadable zone: skipped
    assert thermal_zones(tmp_path) == {"CPU-therm": 41.5, "GPU-therm": 39.0}


def test_system_stats_has_memory_and_threads():
    stats = system_stats(CpuMeter())
    assert abs(stats["rss_mb"] - resident_memory_mb()) < 50  # read from /proc, in MB
    assert stats["rss_mb"] > 10 and stats["threads"] >= 1 and stats["cpu_percent"] >= 0
