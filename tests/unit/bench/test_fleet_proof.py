"""The fleet bench's proof: seqs per stream in the consumers' union, gaps split by the restart window."""

import json

from agent.bench.fleet_proof import CpuSampler, spooled, union, verdict
from agent.publish.spool import Message, Spool


def write(path, messages):
    path.write_text("".join(json.dumps(m) + "\n" for m in messages) + "not json\n")
    return path


def msg(device, seq, run="r"):
    return {"device": device, "camera": "cam0", "run": run, "seq": seq}


def test_union_of_consumers_and_verdict(tmp_path):
    a = write(tmp_path / "a.jsonl", [msg("d1", 1), msg("d1", 3), msg("d2", 1)])
    b = write(tmp_path / "b.jsonl", [msg("d1", 2), msg("d1", 3), msg("d2", 3), msg("x", 1, run="old")])
    seen, other = union([a, b, tmp_path / "absent.jsonl"])
    assert other == 2 and seen[("d1", "cam0", "r")] == {1: 1, 2: 1, 3: 2}
    expected = {("d1", "cam0", "r"): 3, ("d2", "cam0", "r"): 4}
    v = verdict(expected, seen)
    assert (v["expected"], v["received"], v["unique"], v["duplicates"], v["missing"]) == (7, 6, 5, 1, 2)
    assert not v["exactly_once"] and v["missing_in_restart_gap"] is None and v["lost"] == 2
    assert v["streams_with_missing"] == [{"device": "d2", "camera": "cam0", "run": "r", "missing": 2,
                                          "first_missing": [2, 4]}]
    assert v["unexpected_streams"] == [["x", "cam0", "old"]]
    # d2 was back before the consumers (at 20.0): its seq 2, made before then, is explained by
    # the restart's gap, its seq 4, made after, is not
    created = {("d1", "cam0", "r"): [1.0, 2.0, 3.0], ("d2", "cam0", "r"): [1.0, 10.0, 11.0, 30.0]}
    gap = {("d1", "cam0", "r"): None, ("d2", "cam0", "r"): 20.0}
    v = verdict(expected, seen, created, gap)
    assert v["missing_in_restart_gap"] == 1 and v["lost"] == 1
    # an agent back after the consumers has no excuse
    v = verdict(expected, seen, created, {("d2", "cam0", "r"): None})
    assert v["missing_in_restart_gap"] == 0 and v["lost"] == 2
    # seq 4 still waits in d2's spool: not lost
    v = verdict(expected, seen, created, gap, kept={("d2", "cam0", "r"): {4, 9}})
    assert (v["missing_still_in_spools"], v["missing_in_restart_gap"], v["lost"]) == (1, 1, 0)
    assert verdict({("d1", "cam0", "r"): 3}, seen)["exactly_once"]


def test_cpu_sampler_measures_this_process(tmp_path):
    import os
    import time

    sampler = CpuSampler(interval=0.1)
    sampler.track("me", os.getpid())
    sampler.start()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    sampler.stop()
    report = sampler.report(1.0)["me"]
    assert report["cpu_s"] >= 0.25 and report["peak_cores"] > 0.05  # a busy core shared with others


def test_spooled_reads_what_a_stopped_agent_left_in_its_spool(tmp_path):
    spool = Spool(str(tmp_path / "sim-00001.db"), max_bytes=10**6, max_messages=100, max_age=3600.0,
                  memory_max_messages=10)
    spool.add([Message("detection-agent/sim-00001/cam0/detections", json.dumps(msg("sim-00001", s)).encode())
               for s in (7, 8)] + [Message("detection-agent/sim-00001/status", b"offline", key="status")])
    spool.close()
    (tmp_path / "broken.db").write_bytes(b"not a database")
    assert spooled(tmp_path) == {("sim-00001", "cam0", "r"): {7, 8}}


def test_fleet_workers_split_the_agents_evenly_in_order():
    from agent.bench.fleet_workers import split

    assert split(5, 2) == [[0, 1, 2], [3, 4]]
    assert split(200, 2) == [list(range(100)), list(range(100, 200))]
    assert split(3, 5) == [[0], [1], [2]]
    assert sum(len(s) for s in split(1001, 11)) == 1001
