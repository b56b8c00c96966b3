"""``make demo`` end to end, on a private broker the demo starts itself."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.bench.demo import seq_gaps

SHIPPED = Path("models/shapes-yolov3-tiny.onnx")
#: mAP@0.5 the demo must reach on what arrived over MQTT (the issue's target is 0.90).
DEMO_AP50_FLOOR = 0.90


def test_seq_gaps_counts_missing_and_duplicates_per_stream():
    msgs = [{"camera": "a", "run": "r1", "seq": s} for s in (1, 2, 2, 5)]
    msgs += [{"camera": "b", "run": "r1", "seq": s} for s in (7, 8)]
    assert seq_gaps(msgs) == (2, 1)  # a: 3 and 4 missing, 2 twice; b: complete


@pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped model is missing")
def test_demo_runs_end_to_end_and_scores_what_arrived(tmp_path):
    from mosquitto import free_port

    config = yaml.safe_load(Path("configs/demo.yaml").read_text())
    config["mqtt"]["port"] = free_port()  # nothing listens there: the demo must start its own broker
    config["spool"]["path"] = str(tmp_path / "spool.db")
    config["service"]["state_dir"] = str(tmp_path / "state")
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "agent.bench.demo", "--config", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "started a private mosquitto" in proc.stdout
    assert "frames published        150 of 150" in proc.stdout and "0 missing, 0 duplicates" in proc.stdout
    lines = (out / "received.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(150))
    stats = json.loads((out / "eval.json").read_text())["stats"]
    # The shipped model scores AP50 0.983 / AP50:95 0.690 here (models/README.md); guarded with margin.
    assert DEMO_AP50_FLOOR <= stats["AP50"] <= 1.0, stats
    assert (out / "annotated" / "sample.mp4").stat().st_size > 100_000
    assert (out / "plots" / "pr_curves.png").exists()
    # Tracking: the counting line's totals equal the generator's true crossings, and the
    # tracks are scored against the clip's identities.
    counted = re.search(r"line middle +in (\d+) \(true (\d+)\), out (\d+) \(true (\d+)\)", proc.stdout)
    assert counted, proc.stdout[-1500:]
    assert counted.group(1) == counted.group(2) and counted.group(3) == counted.group(4)
    idf1 = re.search(r"tracks vs ground truth +IDF1 ([0-9.]+), MOTA ([-0-9.]+)", proc.stdout)
    assert idf1 and float(idf1.group(1)) >= 0.8, proc.stdout[-1500:]
    tracked = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert any(m.get("schema") == "events/1" and m["type"] == "line_cross" for m in tracked)
