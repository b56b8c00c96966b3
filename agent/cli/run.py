"""``run`` (the daemon) and ``check-config``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from agent.cli.arguments import positive_int, positive_seconds

log = logging.getLogger("agent")

#: After ``run`` has stopped, how long a camera reader still inside its driver (an FFmpeg read
#: on a stalled stream) is waited for before the process ends without interpreter teardown.
CAPTURE_EXIT_WAIT_S = 2.0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="the daemon: cameras -> model -> MQTT")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set cameras.0.source=clip.mp4 (repeatable)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames (tests, demos)")
    p.add_argument("--duration", type=positive_seconds, help="stop after this many seconds")
    p.add_argument("--save-video", metavar="DIR", help="also write an annotated video per camera here")
    p.add_argument("--preview", type=int, metavar="PORT",
                   help="serve a live MJPEG view of the cameras on http://127.0.0.1:PORT/ (0: any free port)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set mqtt.port=18830 (repeatable)")
    p.add_argument("--print", action="store_true", help="print the resolved config (secrets masked)")
    p.set_defaults(handler=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import loader as config

    cfg = config.load(args.file, args.set)
    if args.print:
        sys.stdout.write(config.resolved_yaml(cfg))
    else:
        print(f"{args.file}: ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.runtime.daemon import run_daemon

    overrides = list(args.set)
    if args.preview is not None:
        overrides += ["preview.enabled=true", f"preview.port={args.preview}"]
    return run_daemon(args.config, overrides, max_frames=args.max_frames, duration=args.duration,
                      video_dir=args.save_video)


def leave_after_run(code: int) -> None:
    """End ``run``'s process at once if a camera reader is still inside its driver.

    Tearing the interpreter down while a thread sits in an OpenCV call aborts the process
    when that call returns (SIGABRT, a core dump, a "failed" unit). Everything worth keeping
    is flushed and closed by now (spool, broker, logs), so ``os._exit`` loses nothing.
    """
    if "agent.capture.camera" not in sys.modules:
        return  # no camera was ever opened
    from agent.capture import join_readers

    stuck = join_readers(CAPTURE_EXIT_WAIT_S)
    if not stuck:
        return
    log.warning("%s still inside the camera driver %.0f s after stopping; exiting without waiting "
                "for it", ", ".join(stuck), CAPTURE_EXIT_WAIT_S)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
