"""``record``: save detection messages from a broker as JSON lines (agent/publish/record.py)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from agent.publish.record import DEFAULT_TOPIC


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record", help="save detection messages from a broker as JSON lines (for eval)",
        description="Subscribe to detection topics and write each message's payload as one line, "
                    "flushed as it arrives; at the end, report seq gaps and duplicates per "
                    "(device, camera, run). `eval` reads the file as predictions.")
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="broker address, e.g. 127.0.0.1:1883")
    p.add_argument("--topic", action="append", metavar="FILTER",
                   help=f"topic filter, repeatable (default {DEFAULT_TOPIC})")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="output file, one message per line")
    p.add_argument("--append", action="store_true", help="append to FILE instead of replacing it")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="subscription QoS (default 1)")
    p.add_argument("--client-id", help="use a persistent session under this client id")
    p.add_argument("--protocol", choices=["3.1.1", "5"], help="MQTT version (default 3.1.1; 5 with --share)")
    p.add_argument("--share", metavar="GROUP",
                   help="join the shared subscription $share/GROUP/FILTER: recorders of one GROUP split "
                        "the messages (use a --client-id each, so none is lost while one restarts)")
    p.add_argument("--session-expiry", type=int, default=86400, metavar="S",
                   help="MQTT 5 with --client-id: seconds the broker keeps the session while the "
                        "recorder is away (default 86400)")
    p.add_argument("--summary", metavar="FILE.json",
                   help="also write the report as JSON: per-stream seq ranges, gaps and duplicates, "
                        "end-to-end latency histogram")
    p.add_argument("--username", help="user name; the password comes from $MQTT_PASSWORD or --password-file")
    p.add_argument("--password-file", metavar="FILE", help="file whose first line is the password")
    p.add_argument("--ca-file", metavar="PEM",
                   help="CA certificate: connect with TLS, checking the host name")
    p.add_argument("--cert-file", metavar="PEM", help="client certificate (with --key-file)")
    p.add_argument("--key-file", metavar="PEM", help="client certificate's private key")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CA certificates")
    p.set_defaults(handler=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    from agent.publish.record import RecordOptions, run_record

    fields = {field.name for field in dataclasses.fields(RecordOptions)}
    return run_record(RecordOptions(**{k: v for k, v in vars(args).items() if k in fields}))
