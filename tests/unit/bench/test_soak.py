"""The soak test's pure report logic: seq gaps, growth verdicts, schedule, pass/fail."""

from agent.bench.soak import SCENARIOS, parse_args
from agent.bench.soak_report import (
    Fault,
    Sample,
    agent_counters,
    end_sample,
    format_table,
    growth_verdicts,
    schedule,
    sender_errors,
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
    faults = [Fault("broker_restart", 60, 5), Fault("camera_cut", 90, 10)]
    events = schedule(300, warmup=30, tail=30, faults=faults)
    assert [e for e in events if e[1].startswith("broker")] == [
        (60, "broker_restart_start"), (65, "broker_restart_end"), (120, "broker_restart_start"),
        (125, "broker_restart_end"), (180, "broker_restart_start"), (185, "broker_restart_end"),
        (240, "broker_restart_start"), (245, "broker_restart_end")]
    assert [t for t, a in events if a == "camera_cut_start"] == [90, 180]  # 270 + 10 runs into the tail
    assert schedule(300, 30, 30, [Fault("broker_restart", 0, 5), Fault("camera_cut", 0, 10)]) == []
    assert schedule(300, 100, 30, faults)[0] == (120, "broker_restart_start")


def test_schedule_of_the_new_faults_and_of_a_one_off():
    faults = [Fault("broker_stall", 250, 8), Fault("network_freeze", 330, 25)]
    events = schedule(1800, 60, 30, faults)
    assert [t for t, a in events if a == "broker_stall_start"] == [250, 500, 750, 1000, 1250, 1500, 1750]
    assert [(t, a) for t, a in events if a.startswith("network")][:2] == [
        (330, "network_freeze_start"), (355, "network_freeze_end")]
    assert schedule(45, 5, 12, [Fault("network_freeze", 5, 25, once=True)]) == [
        (5, "network_freeze_start"), (30, "network_freeze_end")]


def test_scenarios_are_the_issues_measurements():
    stall = parse_args(["--scenario", "stall", "--runs", "5"])
    settings = (stall.stats_interval, stall.mqtt_defaults, stall.live_camera, stall.file_fps)
    assert settings == (2, True, False, 15.0)
    assert SCENARIOS["stall"]["fault"] == ("broker_stall", 5, 8) and stall.runs == 5
    freeze = parse_args(["--scenario", "freeze"])
    assert freeze.stats_interval == 10 and SCENARIOS["freeze"]["fault"] == ("network_freeze", 5, 25)
    once = [Fault("network_freeze", 5, 25, once=True)]
    events = schedule(freeze.duration, freeze.warmup, freeze.tail, once)
    assert events[-1][0] <= freeze.duration - freeze.tail  # the fault ends before the quiet tail


def test_sender_errors_from_the_log_and_the_stats():
    log = "x ERROR agent.publish.sender: MQTT sender step failed; continuing\n" * 3 + "INFO fine\n"
    assert sender_errors(log, {"mqtt_internal_errors": 0}) == 3
    assert sender_errors("", {"mqtt_internal_errors": 2}) == 2
    assert sender_errors("", agent_counters(None)) == 0


def _report(**changes):
    report = {"messages": {"lost": 0}, "agent": {"mqtt_dropped": 0}, "agent_exit": 0,
              "rss_growth_limit_pct": 5.0,
              "growth": growth_verdicts(Sample(0, 100, 10, 5), Sample(1, 101, 10, 5))}
    report.update(changes)
    return report


def test_verdict():
    assert verdict(_report()) == []
    assert verdict(_report(sender_errors=2)) == ["2 MQTT sender internal error(s)"]
    # Processed frames never delivered count only when the agent ended by itself (drained).
    assert verdict(_report(frames_without_message=4, ended_by_input=True)) == [
        "4 processed frames never delivered"]
    assert verdict(_report(frames_without_message=4, ended_by_input=False)) == []
    grown = growth_verdicts(Sample(0, 100, 7, 7), Sample(1, 135, 13, 14))  # a sample during start-up
    assert verdict(_report(growth=None, growth_checked=False)) == []
    assert verdict(_report(growth=grown, growth_checked=False)) == []
    assert len(verdict(_report(growth=grown))) == 3
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
                     left_in_spool=0, frames_without_message=0, ended_by_input=True, sender_errors=0,
                     faults_done={"broker_restart": 4, "camera_cut": 2, "broker_stall": 3},
                     subscriber_reconnects=4)
    report["failed"] = verdict(report)
    table = format_table(report)
    for text in ("frames processed", "messages lost (seq gaps)   0", "RSS start -> end",
                 "broker restarts done", "broker stalls done", "network freezes done",
                 "sender internal errors", "camera reconnects", "MQTT reconnects (agent)", "PASSED"):
        assert text in table
    assert "broker stalls done         3" in table and "network freezes done       0" in table
