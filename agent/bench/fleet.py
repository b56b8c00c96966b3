"""``detection-agent bench --fleet``: a fleet on one machine, through one broker, with a restart.

N simulated agents (fleet_agents.py: each the real publisher with its own spool, run, seq
and status / last will; fleet_workers.py: 100 to a worker process) publish at ``--rate``
messages/s for ``--duration`` seconds to a private Mosquitto, while ``--consumers`` K
``detection-agent record --share fleet`` processes split the traffic. Half way
(``--restart-at``) the broker is stopped gracefully and started again ``--restart-down``
seconds later. Then the bench waits until every agent's spool is empty and the consumers
hold what was published, stops everything, and proves per ``(device, camera, run)`` that
each seq is in the consumers' union exactly once (duplicates from QoS 1 redelivery counted
apart; missing ones told apart: still in a spool, created in the restart's gap, lost;
fleet_proof.py).

It reports published and delivered messages/s, end-to-end latency p50/p99 (the consumers'
histograms added up), CPU of the agents' processes per simulated agent and of the broker and
each consumer (mean and busiest second, in cores), bytes the agents wrote (mostly spools), the
restart's timeline (when each agent and consumer was back) and the status topics seen.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from agent.errors import BadInputError

if TYPE_CHECKING:  # the CLI builds its parser from this module: nothing heavy at import
    from agent.bench.broker import Mosquitto
    from agent.bench.fleet_consumers import Consumers
    from agent.bench.fleet_proof import CpuSampler
    from agent.bench.fleet_workers import WorkerPool

log = logging.getLogger(__name__)

GROUP = "fleet"
GAP_GRACE_S = 0.5


def run_fleet_bench(args: argparse.Namespace) -> Dict[str, Any]:
    if args.agents < 1 or args.rate <= 0 or args.duration <= 0 or args.consumers < 1:
        raise BadInputError("bench --fleet: --agents and --consumers at least 1, --rate and --duration "
                            "above 0")
    restart_at = args.duration / 2 if args.restart_at is None else args.restart_at
    if restart_at < 0 or restart_at >= args.duration or args.restart_down < 0:
        raise BadInputError("bench --fleet: --restart-at within [0, --duration), --restart-down >= 0")
    hold = args.fleet_hold_unrouted
    if hold < 0 or (hold > 0 and args.fleet_protocol != "5"):
        raise BadInputError("bench --fleet: --fleet-hold-unrouted takes seconds >= 0 (--fleet-protocol 5)")
    _raise_open_files_limit(4 * args.agents + 256)
    if args.fleet_dir:
        workdir = Path(args.fleet_dir)
        if workdir.exists() and any(workdir.iterdir()):
            raise BadInputError(f"--fleet-dir {workdir}: not empty (spools of an earlier run would be "
                                "resent)")
        workdir.mkdir(parents=True, exist_ok=True)
        return _run(args, workdir, restart_at)
    with tempfile.TemporaryDirectory(prefix="da-fleet-") as tmp:
        return _run(args, Path(tmp), restart_at)


def _run(args: argparse.Namespace, workdir: Path, restart_at: float) -> Dict[str, Any]:
    from agent.bench.broker import Mosquitto
    from agent.bench.fleet_agents import FleetSettings
    from agent.bench.fleet_consumers import Consumers, StatusWatch
    from agent.bench.fleet_proof import CpuSampler, spooled, union, verdict
    from agent.bench.fleet_workers import AGENTS_PER_WORKER, WorkerPool

    broker = Mosquitto(workdir / "broker")
    sampler = CpuSampler().start()
    consumers: Optional[Consumers] = None
    watch: Optional[StatusWatch] = None
    pool: Optional[WorkerPool] = None
    try:
        broker.start()
        sampler.track("broker", broker.pid)
        watch = StatusWatch(broker.host, broker.port)
        consumers = Consumers(broker.address, GROUP, args.consumers, workdir / "consumers")
        for name, pid in consumers.pids().items():
            sampler.track(name, pid)
        settings = FleetSettings(agents=args.agents, rate=args.rate, host=broker.host, port=broker.port,
                                 workdir=workdir, protocol=args.fleet_protocol,
                                 hold_unrouted_s=args.fleet_hold_unrouted)
        workers = args.processes or math.ceil(args.agents / AGENTS_PER_WORKER)
        pool = WorkerPool(settings, min(workers, args.agents))
        for name, pid in pool.pids().items():
            sampler.track(name, pid)
        connect_s = pool.start()
        print(f"fleet: {args.agents} agents in {len(pool.procs)} process(es) connected in {connect_s:.1f} s; "
              f"publishing {args.rate:g} msg/s each for {args.duration:g} s to {broker.version()}, "
              f"{args.consumers} consumers", file=sys.stderr)
        start_wall = time.time() + 0.5
        wall0 = time.monotonic() + 0.5
        pool.publish(args.duration, start_wall)
        restart = _restart(broker, sampler, restart_at, args.restart_down, wall0) if restart_at > 0 else None
        time.sleep(max(0.0, wall0 + args.duration - time.monotonic()))
        drained_s, calls = _drain(pool, consumers, args.drain_timeout, wall0)
        published_s = args.duration
        figures = pool.report()
        wall = time.monotonic() - wall0
        unclean = pool.stop()  # what the agents sent while stopping reaches the consumers now:
        runs = figures["runs"]
        watch.wait_offline(set(runs), 10.0)
        _quiet(consumers, 3.0, args.drain_timeout)
        summaries = consumers.stop()
        seen, other = union(consumers.files())
        keys = [(device, "cam0", run) for device, run in runs.items()]
        expected = {key: figures["calls"][i] for i, key in enumerate(keys)}
        if restart is not None:
            restart.update(_comeback(figures["up_since"], consumers, restart))
        proof = verdict(expected, seen, {key: figures["created"][i] for i, key in enumerate(keys)},
                        _gap(restart, keys, figures["up_since"]), spooled(workdir / "spools"))
        latency = Consumers.latency(summaries)
        sampler.stop()
        cpu, writes = figures["cpu_s"], figures["disk_write_bytes"]
        report: Dict[str, Any] = {
            "agents": args.agents, "rate_per_agent": args.rate, "duration_s": args.duration,
            "consumers": args.consumers, "protocol": args.fleet_protocol, "broker": broker.version(),
            "hold_unrouted_s": args.fleet_hold_unrouted,
            "agent_processes": len(pool.procs), "connect_s": round(connect_s, 2),
            "published": calls, "published_per_s": round(calls / published_s, 1),
            "delivered_per_s": round(proof["unique"] / drained_s, 1) if drained_s else None,
            "drain_s": round(drained_s - published_s, 2) if drained_s else None,
            "driver_lag_max_s": round(figures["lag_max"], 3), "driver_late_messages": figures["lag_late"],
            "latency_ms": latency, "proof": proof, "non_detection_lines": other,
            "per_consumer": [s.get("recorded") for s in summaries],
            "publisher": figures["totals"], "publishers_not_stopped_cleanly": unclean,
            "cpu": sampler.report(wall),
            "agents_cpu_per_agent_pct_of_core": round(100.0 * cpu / wall / args.agents, 3),
            "agents_processes_cpu_cores": round(cpu / wall, 3),
            "disk_write_mb": round(writes / 1e6, 1) if writes is not None else None,
            "restart": restart,
            "status": watch.summary(set(runs)),
            "workdir": str(workdir),
        }
        for line in report_lines(report):
            print(line)
        return report
    finally:
        if pool is not None:
            pool.kill()
        if consumers is not None:
            consumers.kill()
        if watch is not None:
            watch.close()
        sampler.stop()
        broker.kill()


def _restart(broker: Mosquitto, sampler: CpuSampler, at: float, down: float, t0: float) -> Dict[str, Any]:
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    stopped = time.time()
    broker.stop()  # graceful: mosquitto saves sessions and queued messages
    time.sleep(down)
    broker.start()
    sampler.track("broker", broker.pid)
    up = time.time()
    print(f"fleet: broker restarted ({up - stopped:.1f} s down)", file=sys.stderr)
    return {"at_s": at, "stopped": stopped, "up": up, "down_s": round(up - stopped, 2)}


def _drain(pool: WorkerPool, consumers: Consumers, timeout: float, t0: float,
           quiet: float = 3.0) -> Tuple[Optional[float], int]:
    """Wait until every agent is done and fully acknowledged and the consumers hold every message
    (or, the agents done, nothing more arrives for ``quiet`` seconds: what is missing will not
    come). Returns (seconds since t0 when the last line arrived, or None on timeout; the number
    of messages published)."""
    deadline = time.monotonic() + timeout
    lines, last_change = consumers.lines(), time.monotonic()
    calls = 0
    while time.monotonic() < deadline:
        done, calls = pool.status()
        now_lines = consumers.lines()
        if now_lines != lines:
            lines, last_change = now_lines, time.monotonic()
        if done and (lines >= calls or time.monotonic() - last_change >= quiet):
            return (last_change if lines < calls else time.monotonic()) - t0, calls
        time.sleep(0.25)
    log.warning("fleet: not drained within %.0f s (%d of %d lines recorded)", timeout, consumers.lines(),
                calls)
    return None, calls


def _quiet(consumers: Consumers, quiet: float, timeout: float) -> None:
    """Wait until the consumers have written nothing new for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    lines, last_change = consumers.lines(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < quiet:
        time.sleep(0.25)
        now_lines = consumers.lines()
        if now_lines != lines:
            lines, last_change = now_lines, time.monotonic()


def _gap(restart: Optional[Dict[str, Any]], keys: List[Tuple[str, str, str]],
         up_since: List[Optional[float]]) -> Optional[Dict[Tuple[str, str, str], Optional[float]]]:
    """Per stream, until when its agent's messages could reach nobody after a restart: set for
    the agents back before the last consumer subscribed again (Mosquitto 2.0 does not restore
    $share subscriptions), None for the others."""
    if restart is None:
        return None
    resubscribed = restart.get("consumers_resubscribed_s") or []
    # A consumer says "subscribed" on its CONNACK, a round trip before its SUBSCRIBE counts, and
    # agents' reconnects are sampled every 50 ms in busy processes: half a second of grace.
    back = restart["up"] + (max(resubscribed) if resubscribed else 0.0) + GAP_GRACE_S
    return {key: back if t is not None and restart["stopped"] <= t < back else None
            for key, t in zip(keys, up_since)}


def _comeback(up_since: List[Optional[float]], consumers: Consumers,
              restart: Dict[str, Any]) -> Dict[str, Any]:
    """When agents and consumers were back after the broker returned (seconds after ``up``)."""
    up = restart["up"]
    agents = sorted(t - up for t in up_since if t is not None and t >= restart["stopped"])
    resub = sorted(t - up for t in consumers.subscribed_after(restart["stopped"]))
    last_consumer = resub[-1] if len(resub) == consumers.count else None
    early = sum(1 for t in agents if last_consumer is None or t < last_consumer)
    return {"agents_back": len(agents),
            "agents_back_s": {"first": _r(agents[0]) if agents else None,
                              "median": _r(agents[len(agents) // 2]) if agents else None,
                              "last": _r(agents[-1]) if agents else None},
            "consumers_resubscribed_s": [_r(t) for t in resub],
            # Mosquitto 2.0 does not restore $share subscriptions from its persistence file:
            # what an agent resends before the group is back reaches nobody (docs/deployment.md).
            "agents_back_before_last_consumer": early}


def _r(value: float) -> float:
    return round(value, 2)


def _raise_open_files_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            log.warning("open files limited to %d; %d agents need about %d", target, need // 4, need)


def report_lines(r: Dict[str, Any]) -> List[str]:
    p, lat, cpu = r["proof"], r["latency_ms"], r["cpu"]
    lines = [
        f"fleet: {r['agents']} agents x {r['rate_per_agent']:g} msg/s for {r['duration_s']:g} s, "
        f"{r['consumers']} consumers ({r['broker']}, agents on MQTT {r['protocol']})",
        f"  published {r['published']} ({r['published_per_s']} msg/s), delivered {p['unique']} unique "
        f"({r['delivered_per_s']} msg/s incl. drain {r['drain_s']} s), per consumer {r['per_consumer']}",
        f"  proof: {p['missing']} missing, {p['duplicates']} duplicate(s) over {p['streams']} streams -> "
        + ("every seq exactly once (duplicates aside)" if p["exactly_once"] else
           f"FAILED: {p['missing_still_in_spools']} still in the agents' spools, "
           f"{p['missing_in_restart_gap']} created in the restart gap (between the stop and the "
           f"consumers' return), {p['lost']} lost"),
        f"  agents' mqtt.hold_unrouted_s {r.get('hold_unrouted_s', 0):g}: "
        f"{r['publisher'].get('unrouted', 0)} PUBACK(s) said no subscriber matched, "
        f"{r['publisher'].get('unrouted_resent', 0)} resend(s) of held messages",
        f"  latency publish->consumer: p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, "
        f"max {lat.get('max')} ms",
        f"  CPU: {r['agent_processes']} agent process(es) {r['agents_processes_cpu_cores']} cores = "
        f"{r['agents_cpu_per_agent_pct_of_core']}% of a core per agent; "
        + ", ".join(f"{name} {v['mean_cores']} (peak {v['peak_cores']})" for name, v in cpu.items()
                    if not name.startswith("agents")),
        f"  disk written by the agents' processes: {r['disk_write_mb']} MB; driver lag max "
        f"{r['driver_lag_max_s']} s ({r['driver_late_messages']} late)",
    ]
    restart = r.get("restart")
    if restart:
        lines.append(f"  restart at {restart['at_s']:g} s, {restart['down_s']} s down; agents back "
                     f"{restart.get('agents_back_s')}, consumers resubscribed "
                     f"{restart.get('consumers_resubscribed_s')} s after; "
                     f"{restart.get('agents_back_before_last_consumer')} agent(s) back before the last "
                     "consumer")
    status = r["status"]
    lines.append(f"  status topics: {status['online_seen']} agents seen online, "
                 f"{status['offline_at_end']} offline at the end")
    return lines


__all__ = ["report_lines", "run_fleet_bench"]
