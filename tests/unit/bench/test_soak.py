"""The soak test's pure report logic: seq gaps, growth verdicts, schedule, pass/fail."""

from agent.bench.soak import (
    Sample,
    agent_counters,
    end_sample,
    format_table,
    growth_verdicts,
    schedule,
    seq_report,
    verdict,
)


def test_a_complete_stream_has_no_loss_and_no_duplicates():
    report = seq_report([("live", "r1", s) for s in range(1, 6)])
    assert (report["received"], report["unique"], report["lost"], report["duplicates"]) == (5, 5, 0, 0)


def test_gaps_count_per_camera_and_run_from_seq_one():
    records = [("live", "r1", 2), ("live", "r1", 3), ("live", "r1", 5),  # 1 and 4 missing
               ("live", "r2", 1), ("live", "r2", 2),                     # a new run starts at 1
               ("file", "r1", 1), ("file", "r1", 1), ("file", "r1", 2)]  # one duplicate
    report = seq_report(records)
    assert report["lost"] == 2 and report["duplicates"] == 1 and report["received"] == 8
    live_r1 = next(s for s in report["streams"] if (s["camera"], s["run"]) == ("live", "r1"))
    assert live_r1["missing_sample"] == [1, 4]


def test_duplicates_out_of_order_are_not_losses():
    report = seq_report([("c", "r", s) for s in (1, 2, 3, 2, 3, 4)])
    assert report["lost"] == 0 and report["duplicates"] == 2


def test_growth_verdicts():
    start = Sample(60, 200_000, 40, 20)
    assert growth_verdicts(start, Sample(1800, 209_000, 40, 20)) == {
        "rss_start_kb": 200_000, "rss_end_kb": 209_000, "rss_growth_pct": 4.5, "rss_ok": True,
        "fds_start": 40, "fds_end": 40, "fds_ok": True, "threads_start": 20, "threads_end": 20,
        "threads_ok": True}
    grown = growth_verdicts(start, Sample(1800, 210_000, 41, 21))
    assert not grown["rss_ok"] and not grown["fds_ok"] and not grown["threads_ok"]
    assert growth_verdicts(start, Sample(1800, 150_000, 30, 18))["rss_ok"]  # shrinking is fine


def test_end_sample_ignores_a_transient_but_not_a_leak():
    samples = [Sample(1, 100, 40, 20), Sample(2, 101, 41, 21), Sample(3, 102, 40, 20)]
    assert end_sample(samples) == Sample(3, 102, 40, 20)
    leaking = [Sample(1, 100, 41, 20), Sample(2, 101, 42, 20), Sample(3, 102, 43, 20)]
    assert end_sample(leaking).fds == 41


def test_schedule_keeps_the_warmup_and_the_tail_quiet():
    events = schedule(300, warmup=30, tail=30, broker_every=60, broker_down=5, cut_every=90, cut_seconds=10)
    assert [e for e in events if e[1].startswith("broker")] == [
        (60, "broker_stop"), (65, "broker_start"), (120, "broker_stop"), (125, "broker_start"),
        (180, "broker_stop"), (185, "broker_start"), (240, "broker_stop"), (245, "broker_start")]
    assert [t for t, a in events if a == "camera_cut"] == [90, 180]  # 270 + 10 runs into the tail
    assert schedule(300, 30, 30, 0, 5, 0, 10) == []
    assert schedule(300, 100, 30, 60, 5, 0, 10)[0] == (120, "broker_stop")


def _report(**changes):
    report = {"messages": {"lost": 0}, "agent": {"mqtt_dropped": 0}, "agent_exit": 0,
              "rss_growth_limit_pct": 5.0,
              "growth": growth_verdicts(Sample(0, 100, 10, 5), Sample(1, 101, 10, 5))}
    report.update(changes)
    return report


def test_verdict():
    assert verdict(_report()) == []
    assert verdict(_report(messages={"lost": 3})) == ["3 messages lost"]
    assert verdict(_report(agent_exit=1)) == ["the agent exited with 1"]
    assert verdict(_report(growth=None)) == ["no resource samples (the agent ended before the warm-up did)"]
    failed = verdict(_report(growth=growth_verdicts(Sample(0, 100, 10, 5), Sample(1, 110, 12, 5))))
    assert failed == ["RSS grew 10.0% (limit 5.0%)", "open fds grew 10 -> 12"]


def test_agent_counters_from_a_stats_payload():
    stats = {"frames": 900, "cameras": {"live": {"reconnects": 2, "state": "online"}},
             "mqtt": {"reconnects": 3, "connects": 4, "dropped": 0, "replayed": 12, "backlog": 0}}
    counters = agent_counters(stats)
    assert counters["frames"] == 900 and counters["camera_reconnects"] == {"live": 2}
    assert counters["mqtt_reconnects"] == 3 and counters["mqtt_dropped"] == 0
    assert agent_counters(None)["frames"] is None


def test_format_table_names_every_figure_and_the_verdict():
    report = _report(requested_duration_s=300.0, duration_s=301.2, model="m.onnx",
                     messages=seq_report([("live", "r", 1), ("live", "r", 2)]),
                     agent=agent_counters({"frames": 2, "mqtt": {"reconnects": 1, "dropped": 0},
                                           "cameras": {"live": {"reconnects": 1}}}),
                     left_in_spool=0, frames_without_message=0, broker_restarts=4, camera_cuts=2,
                     subscriber_reconnects=4)
    report["failed"] = verdict(report)
    table = format_table(report)
    for text in ("frames processed", "messages lost (seq gaps)   0", "RSS start -> end",
                 "broker restarts done", "camera reconnects", "MQTT reconnects (agent)", "PASSED"):
        assert text in table
