"""The soak test's pure logic: fault schedule, seq losses, resource growth, verdict, table.

Kept apart from the live harness (soak.py) so it can be unit-tested without a broker.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the agent process: seconds since its start, RSS (kB), open fds, threads."""

    t: float
    rss_kb: int
    fds: int
    threads: int


def seq_report(records: Iterable[Tuple[str, str, int]]) -> Dict[str, Any]:
    """Losses and duplicates of detections messages, from their (camera, run, seq).

    ``seq`` starts at 1 for each (camera, run) and grows by 1 per message, so every number
    between 1 and the highest seen that never arrived is a lost message (the subscriber's
    session exists before the agent starts, so seq 1 must arrive too). Duplicates (at least
    once delivery after a reconnect) are counted, not failures.
    """
    streams: Dict[Tuple[str, str], List[int]] = {}
    received = 0
    for camera, run, seq in records:
        streams.setdefault((camera, run), []).append(int(seq))
        received += 1
    lost = duplicates = 0
    per_stream: List[Dict[str, Any]] = []
    for (camera, run), seqs in sorted(streams.items()):
        unique = set(seqs)
        top = max(unique)
        missing = sorted(set(range(1, top + 1)) - unique)
        lost += len(missing)
        duplicates += len(seqs) - len(unique)
        per_stream.append({"camera": camera, "run": run, "received": len(seqs), "unique": len(unique),
                           "last_seq": top, "lost": len(missing), "duplicates": len(seqs) - len(unique),
                           "missing_sample": missing[:20]})
    return {"received": received, "unique": received - duplicates, "lost": lost, "duplicates": duplicates,
            "streams": per_stream}


def growth_verdicts(start: Sample, end: Sample, rss_limit_pct: float = 5.0) -> Dict[str, Any]:
    """RSS growth in percent (must stay under ``rss_limit_pct``); fds and threads must not grow."""
    growth = 100.0 * (end.rss_kb - start.rss_kb) / start.rss_kb if start.rss_kb else 0.0
    return {
        "rss_start_kb": start.rss_kb, "rss_end_kb": end.rss_kb, "rss_growth_pct": round(growth, 2),
        "rss_ok": growth < rss_limit_pct,
        "fds_start": start.fds, "fds_end": end.fds, "fds_ok": end.fds <= start.fds,
        "threads_start": start.threads, "threads_end": end.threads,
        "threads_ok": end.threads <= start.threads,
    }


def end_sample(samples: Sequence[Sample], last: int = 3) -> Sample:
    """The end state from the last ``last`` samples: RSS of the newest, fewest fds and threads.

    A reconnect attempt holds a socket or a thread for a moment; a leak shows in every sample,
    so the minimum over a few samples keeps transients out of the verdict, not leaks.
    """
    tail = list(samples[-last:])
    return Sample(tail[-1].t, tail[-1].rss_kb, min(s.fds for s in tail), min(s.threads for s in tail))


@dataclasses.dataclass(frozen=True)
class Fault:
    """A fault injected every ``every`` seconds for ``length`` seconds (``every`` 0: never).

    ``name`` is one of ``FAULTS``; the soak turns ``{name}_start`` / ``{name}_end`` into actions.
    """

    name: str
    every: float
    length: float
    once: bool = False  # only the first occurrence (the measurement scenarios)


#: What each fault does, for the report and the docs.
FAULTS = {
    "broker_restart": "the broker stopped gracefully (SIGTERM) and started again on the same port and files",
    "camera_cut": "the live camera's server drops its clients and refuses connections",
    "broker_stall": "the broker hung with SIGSTOP, connections open, then resumed with SIGCONT",
    "network_freeze": "the TCP relay between agent and broker hung with SIGSTOP, then resumed",
}


def schedule(duration: float, warmup: float, tail: float, faults: Sequence[Fault]) -> List[Tuple[float, str]]:
    """(seconds since the agent started, action) in time order.

    Actions: ``{fault}_start`` and ``{fault}_end`` at every multiple of the fault's period
    that starts after the warm-up and ends before the quiet tail.
    """
    events: List[Tuple[float, str]] = []
    for fault in faults:
        if fault.every <= 0:
            continue
        t = fault.every
        while t + fault.length <= duration - tail:
            if t >= warmup:
                events += [(t, f"{fault.name}_start"), (t + fault.length, f"{fault.name}_end")]
                if fault.once:
                    break
            t += fault.every
    return sorted(events)


def agent_counters(stats: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Frames and reconnect counters from one of the agent's ``stats/1`` payloads."""
    stats = stats or {}
    mqtt = stats.get("mqtt") or {}
    cameras = stats.get("cameras") or {}
    return {
        "frames": stats.get("frames"),
        "camera_reconnects": {name: c.get("reconnects") for name, c in cameras.items()},
        "camera_states": {name: c.get("state") for name, c in cameras.items()},
        "mqtt_reconnects": mqtt.get("reconnects"),
        "mqtt_connects": mqtt.get("connects"),
        "mqtt_dropped": mqtt.get("dropped"),
        "mqtt_replayed": mqtt.get("replayed"),
        "mqtt_backlog": mqtt.get("backlog"),
        "mqtt_internal_errors": mqtt.get("internal_errors"),
    }


def sender_errors(log_text: str, counters: Dict[str, Any]) -> int:
    """Errors inside the agent's MQTT sender: the most of its own count (last stats message)
    and the error lines in its log (the count can be newer than the last stats received)."""
    lines = sum(1 for line in log_text.splitlines()
                if "MQTT sender internal error" in line or "MQTT sender step failed" in line)
    return max(lines, int(counters.get("mqtt_internal_errors") or 0))


def verdict(report: Dict[str, Any]) -> List[str]:
    """The goals that failed (empty: the soak passed)."""
    failed = []
    if report["messages"]["lost"]:
        failed.append(f"{report['messages']['lost']} messages lost")
    if report["agent"].get("mqtt_dropped"):
        failed.append(f"the agent dropped {report['agent']['mqtt_dropped']} messages")
    if report.get("sender_errors"):
        failed.append(f"{report['sender_errors']} MQTT sender internal error(s)")
    if report.get("ended_by_input") and report.get("frames_without_message"):
        # The agent ended by itself (its --duration) and drained its spool: every frame it
        # processed must have reached the subscriber.
        failed.append(f"{report['frames_without_message']} processed frames never delivered")
    if report["agent_exit"] != 0:
        failed.append(f"the agent exited with {report['agent_exit']}")
    growth = report.get("growth")
    if not report.get("growth_checked", True):
        pass  # a short measurement: its first sample may fall into the agent's start-up
    elif not growth:
        failed.append("no resource samples (the agent ended before the warm-up did)")
    else:
        if not growth["rss_ok"]:
            failed.append(f"RSS grew {growth['rss_growth_pct']}% (limit {report['rss_growth_limit_pct']}%)")
        if not growth["fds_ok"]:
            failed.append(f"open fds grew {growth['fds_start']} -> {growth['fds_end']}")
        if not growth["threads_ok"]:
            failed.append(f"threads grew {growth['threads_start']} -> {growth['threads_end']}")
    return failed


def format_table(report: Dict[str, Any]) -> str:
    """A plain-text summary, one figure per line, with the goal where there is one."""
    m, a, g = report["messages"], report["agent"], report.get("growth") or {}

    def row(name: str, value: object, goal: str = "") -> str:
        return f"  {name:<26} {value!s:<30} {goal}"

    def ok(flag: Optional[bool]) -> str:
        return "" if flag is None else ("ok" if flag else "FAILED")

    lines = [f"soak: {report['duration_s']:.0f} s (asked {report['requested_duration_s']:.0f} s), "
             f"model {report['model']}",
             row("frames processed", a.get("frames")),
             row("messages received", m["received"]),
             row("messages lost (seq gaps)", m["lost"], f"goal 0: {ok(m['lost'] == 0)}"),
             row("duplicates", m["duplicates"], "(at least once: allowed)"),
             row("left in the agent's spool", report.get("left_in_spool"), "(replayed at next start)"),
             row("frames without a message", report.get("frames_without_message"),
                 f"goal 0: {ok(not report.get('frames_without_message'))}" if report.get("ended_by_input")
                 else "(informational: stopped by SIGTERM)"),
             row("dropped by the agent", a.get("mqtt_dropped"), f"goal 0: {ok(not a.get('mqtt_dropped'))}"),
             row("sender internal errors", report.get("sender_errors"),
                 f"goal 0: {ok(not report.get('sender_errors'))}")]
    if g:
        lines += [
            row("RSS start -> end (MB)", f"{g['rss_start_kb'] / 1024:.1f} -> "
                f"{g['rss_end_kb'] / 1024:.1f} ({g['rss_growth_pct']:+.2f}%)",
                f"goal < {report['rss_growth_limit_pct']}%: {ok(g['rss_ok'])}"),
            row("open fds start -> end", f"{g['fds_start']} -> {g['fds_end']}",
                f"no growth: {ok(g['fds_ok'])}"),
            row("threads start -> end", f"{g['threads_start']} -> {g['threads_end']}",
                f"no growth: {ok(g['threads_ok'])}"),
        ]
    done = report.get("faults_done") or {}
    lines += [row(f"{name.replace('_', ' ')}s done", done.get(name, 0)) for name in FAULTS]
    lines += [
        row("camera reconnects", a.get("camera_reconnects")),
        row("MQTT reconnects (agent)", a.get("mqtt_reconnects")),
        row("subscriber reconnects", report["subscriber_reconnects"]),
        row("agent exit status", report["agent_exit"], f"goal 0: {ok(report['agent_exit'] == 0)}"),
    ]
    failed = report["failed"]
    lines.append("PASSED" if not failed else "FAILED: " + "; ".join(failed))
    return "\n".join(lines)


__all__ = ["FAULTS", "Fault", "Sample", "agent_counters", "end_sample", "format_table", "growth_verdicts",
           "schedule", "sender_errors", "seq_report", "verdict"]
