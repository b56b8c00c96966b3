"""A fleet on one machine (``bench --fleet``, short): 50 simulated agents with the real publisher
and spool in two worker processes, 3 shared-subscription ``record`` consumers, the broker
restarted half way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_short_fleet_run_with_a_broker_restart(tmp_path):
    out = tmp_path / "fleet.json"
    proc = subprocess.run([sys.executable, "-m", "agent", "bench", "--fleet", "--agents", "50", "--rate", "5",
                           "--duration", "30", "--consumers", "3", "--restart-down", "2", "--processes", "2",
                           "--fleet-dir", str(tmp_path / "run"), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stderr[-3000:]
    r = json.loads(out.read_text())
    proof, restart = r["proof"], r["restart"]
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("fleet", "  "))))
    # The command's verdict is the proof's.
    assert (proc.returncode == 0) == proof["exactly_once"], proc.stderr[-2000:]
    assert proof["streams"] == 50 and not proof["unexpected_streams"]
    assert r["published"] == proof["expected"] >= 50 * 5 * 30 * 0.95
    # Nothing is lost except, on a broker that forgets shared subscriptions over a restart
    # (Mosquitto 2.0), what was created between the stop and the consumers' return; and that
    # only when agents were back before the consumers (docs/deployment.md).
    assert proof["lost"] == 0 and proof["missing_still_in_spools"] == 0, proof
    if proof["missing"]:
        assert restart["agents_back_before_last_consumer"] > 0
    # Every agent reconnected and emptied its spool; nothing dropped; statuses held.
    assert restart["agents_back"] == 50 and len(restart["consumers_resubscribed_s"]) == 3
    assert r["publisher"]["backlog"] == 0 and r["publisher"]["dropped"] == 0
    assert r["publisher"]["reconnects"] >= 50
    assert r["status"] == {"online_seen": 50, "offline_at_end": 50}
    # The group split the load, and the figures the bench reports are there.
    assert len(r["per_consumer"]) == 3 and all(n > 0 for n in r["per_consumer"])
    assert 0 < r["latency_ms"]["p50"] < 1000 and r["latency_ms"]["count"] == proof["received"]
    assert r["agents_cpu_per_agent_pct_of_core"] > 0 and "broker" in r["cpu"]


def test_with_hold_unrouted_nothing_made_in_the_restart_gap_is_lost(tmp_path):
    # The same restart, the agents on mqtt.hold_unrouted_s 1: what they sent between their return
    # and the consumers' (acknowledged with "no matching subscribers") is resent, not lost.
    out = tmp_path / "fleet.json"
    proc = subprocess.run([sys.executable, "-m", "agent", "bench", "--fleet", "--agents", "20", "--rate", "5",
                           "--duration", "16", "--consumers", "2", "--restart-down", "2", "--processes", "1",
                           "--fleet-hold-unrouted", "1", "--fleet-dir", str(tmp_path / "run"),
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.exists(), proc.stderr[-3000:]
    r = json.loads(out.read_text())
    proof, restart = r["proof"], r["restart"]
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("fleet", "  "))))
    assert proc.returncode == 0 and proof["exactly_once"] and proof["missing"] == 0, proof
    assert proof["streams"] == 20 and r["hold_unrouted_s"] == 1
    # The gap was there (agents back before the consumers, code 16 answered), and was covered.
    if restart["agents_back_before_last_consumer"]:
        assert r["publisher"]["unrouted"] > 0 and r["publisher"]["unrouted_resent"] > 0
    assert r["publisher"]["backlog"] == 0 and r["publisher"]["dropped"] == 0


def test_hold_unrouted_needs_mqtt_5(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agent", "bench", "--fleet", "--fleet-protocol", "3.1.1",
                           "--fleet-hold-unrouted", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: bench --fleet: --fleet-hold-unrouted takes seconds >= 0 (--fleet-protocol 5)"), proc.stderr
