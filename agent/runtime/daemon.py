"""``detection-agent run``: config -> cameras, detector, publisher -> pipeline, until told to stop.

The main thread only supervises: it turns signals into actions (SIGTERM/SIGINT stop,
SIGHUP reloads), pings the systemd watchdog while the inference loop makes progress,
reports status, and enforces ``--duration`` / ``--max-frames``. Shutdown order matters:
cameras stop, the frame in flight finishes, results drain to the sinks, then the publisher
flushes (or spools) and says ``offline``. When the run ended because its input did (files
finished, ``--max-frames``, ``--duration``), not on a signal, the publisher first gets up to
``mqtt.drain_timeout`` seconds to have everything acknowledged; what is still unacknowledged
then stays in the spool and the exit code is ``EXIT_UNDELIVERED``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from agent.capture import Camera
from agent.config import loader as config_module
from agent.config.schema import AgentConfig, CameraConfig
from agent.errors import EXIT_UNDELIVERED, AgentError, ConfigError, DataError
from agent.inference.detector import Detector, DetectorSettings, build_detector, postprocess_settings
from agent.publish.api import Publisher
from agent.runtime.metrics import CpuMeter, system_stats
from agent.runtime.pipeline import Pipeline, Sink, Wiring
from agent.runtime.service import (
    InstanceLock,
    Notifier,
    install_signal_handlers,
    restore_signal_handlers,
    watchdog_interval,
)
from agent.runtime.settings import runtime_settings
from agent.runtime.sinks import MqttSink, VideoSink

if TYPE_CHECKING:
    from agent.runtime.prometheus import MetricsServer

log = logging.getLogger(__name__)

SUPERVISE_S = 0.2  # how often the main thread looks at flags, the watchdog and the clock
STALL_S = 30.0  # no inference-loop progress for this long: stop pinging the watchdog


def open_detector(cfg: AgentConfig) -> Detector:
    """The configured model, its config overrides applied, warmed up (``build_detector``)."""
    return build_detector(Path(cfg.model.path), DetectorSettings.from_config(cfg))


class Daemon:
    undelivered = 0  # messages left unacknowledged after the drain at the end of the input

    def __init__(self, config_path: str, overrides: Sequence[str] = (), max_frames: Optional[int] = None,
                 duration: Optional[float] = None, video_dir: Optional[Path] = None,
                 notifier: Optional[Notifier] = None) -> None:
        self.config_path = config_path
        self.overrides = list(overrides)
        self.max_frames = max_frames
        self.duration = duration
        self.video_dir = video_dir
        self.notifier = notifier or Notifier()
        self.cfg: AgentConfig = config_module.load(config_path, overrides)
        self.pipeline: Optional[Pipeline] = None
        self.publisher: Optional[Publisher] = None
        self.mqtt_sink: Optional[MqttSink] = None
        self.video_sink: Optional[VideoSink] = None
        self.preview: Optional[Sink] = None  # agent.runtime.preview.PreviewServer when enabled
        self.metrics_server: Optional[MetricsServer] = None  # when metrics.enabled
        self.class_names: List[str] = []
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._cpu = CpuMeter()
        self._camera_states: Dict[str, str] = {}

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        logging.getLogger().setLevel(self.cfg.logging.level)
        lock = InstanceLock(self.cfg.service.state_dir)
        lock.acquire(self.config_path)  # a second agent on this config stops here, having started nothing
        previous = install_signal_handlers(self._stop.set, self._reload.set)
        try:
            self._start_metrics()
            self._start_pipeline()
            return self._supervise()
        finally:
            self.notifier.stopping()
            self._shutdown()
            restore_signal_handlers(previous)
            lock.release()

    def _start_metrics(self) -> None:
        """/metrics and /healthz, up before the model loads: a scrape sees the start (503 "starting")."""
        if self.cfg.metrics.enabled:
            from agent.runtime.prometheus import MetricsServer

            options = self.cfg.metrics
            self.metrics_server = MetricsServer(lambda: self.pipeline, lambda: self.publisher, options.host,
                                                options.port, options.stall_timeout).start()

    def _start_pipeline(self) -> None:
        cfg = self.cfg
        cameras = [Camera(c) for c in cfg.enabled_cameras]
        pipeline = self.pipeline = Pipeline(cameras, lambda: open_detector(cfg), max_frames=self.max_frames,
                                            setup=self._wire)
        pipeline.start()
        log.info("running %s on %d camera(s): %s", cfg.model.path, len(cameras),
                 ", ".join(f"{c.name} ({c.spec.description})" for c in cameras))

    def _wire(self, detector: Detector) -> Wiring:
        """Once the model is loaded (its labels known): the runtime settings and the sinks."""
        self.class_names = list(detector.class_names)
        settings = runtime_settings(self.cfg, self.class_names, self.config_path)
        return Wiring(settings, self._make_sinks(detector))

    def _make_sinks(self, detector: Detector) -> List[Sink]:
        sinks: List[Sink] = []
        names = detector.class_names
        if self.cfg.mqtt.enabled:
            from agent.publish.mqtt import MqttPublisher

            mq = self.cfg.mqtt
            publisher = MqttPublisher(self.cfg, model_name=detector.info.name, class_names=names)
            self.mqtt_sink = MqttSink(publisher, names, mq.snapshot, detections=mq.detections,
                                      heartbeat_s=mq.detections_heartbeat, events=mq.events)
            self._register_commands(publisher)
            publisher.set_stats_provider(self._stats)
            publisher.start()
            self.publisher = publisher
            sinks.append(self.mqtt_sink)
        if self.video_dir is not None:
            # Zones and lines come with each result (the settings it was made with).
            self.video_sink = VideoSink(self.video_dir, names, fps=self.cfg.cameras[0].fps or 15.0)
            sinks.append(self.video_sink)
        if self.cfg.preview.enabled:
            sinks.append(self._start_preview(names))
        return sinks

    def _start_preview(self, names: Sequence[str]) -> Sink:
        from agent.runtime.preview import PreviewServer

        options = self.cfg.preview
        # Zones and lines come with each result (the settings it was made with).
        preview = PreviewServer(names, host=options.host, port=options.port, max_fps=options.max_fps,
                                jpeg_quality=options.jpeg_quality,
                                cameras=[c.name for c in self.cfg.enabled_cameras])
        preview.start()  # logs its URL; a port in use is a ConfigError naming host:port
        self.preview = preview
        return preview

    def _register_commands(self, publisher: Publisher) -> None:
        commands = publisher.commands
        pipeline, sink = self.pipeline, self.mqtt_sink
        if pipeline is None or sink is None:
            raise RuntimeError("commands are registered while the pipeline is wired")

        def for_cameras(args: Dict[str, object], action: str) -> Dict[str, object]:
            camera = args.get("camera")
            if camera is None:
                # Whole-agent pause stops inference too: on a battery or a hot device that matters.
                (pipeline.pause if action == "pause" else pipeline.resume)()
                return {"paused": pipeline.paused}
            (sink.pause if action == "pause" else sink.resume)(str(camera))
            return {"camera": camera, "action": action}

        def snapshot(args: Dict[str, object]) -> Dict[str, object]:
            every = [c.name for c in self.cfg.enabled_cameras]
            cameras = [str(args["camera"])] if args.get("camera") else every
            for name in cameras:
                sink.request_snapshot(name)
            return {"cameras": cameras}

        def set_thresholds(args: Dict[str, object]) -> Dict[str, object]:
            inference = self.cfg.inference.model_copy(update={k: v for k, v in args.items()
                                                               if k in ("conf_threshold", "iou_threshold",
                                                                        "classes")})
            self.cfg = self.cfg.model_copy(update={"inference": inference})
            settings = postprocess_settings(self.cfg)
            pipeline.apply(runtime_settings(self.cfg, self.class_names, self.config_path))
            return {"conf_threshold": settings.conf_threshold, "iou_threshold": settings.iou_threshold,
                    "classes": settings.classes}

        def reset_counts(args: Dict[str, object]) -> Dict[str, object]:
            camera = args.get("camera")
            pipeline.reset_counts(str(camera) if camera is not None else None)
            every = [c.name for c in self.cfg.enabled_cameras]
            return {"cameras": [str(camera)] if camera is not None else every}

        commands.register("pause", lambda args: for_cameras(args, "pause"))
        commands.register("resume", lambda args: for_cameras(args, "resume"))
        commands.register("snapshot", snapshot)
        commands.register("set", set_thresholds)
        commands.register("reset_counts", reset_counts)

    def _supervise(self) -> int:
        pipeline = self.pipeline
        if pipeline is None:
            raise RuntimeError("supervise() runs after the pipeline started")
        started = time.monotonic()
        ping_every = watchdog_interval() if self.cfg.service.watchdog else None
        last_ping = last_status = 0.0
        # Ready means the model is loaded and the publisher started (the pipeline is running),
        # not that a camera answered: a camera that boots slower than the device must not get
        # the service killed by TimeoutStartSec=. The watchdog follows the inference loop alone.
        self.notifier.ready(f"running {Path(self.cfg.model.path).name}")
        while not self._stop.is_set():
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                self._apply_reload()
            if pipeline.finished.is_set() or pipeline.error is not None:
                break
            if self.duration is not None and now - started >= self.duration:
                break
            self._report_camera_states()
            alive = now - pipeline.heartbeat < STALL_S
            if ping_every and now - last_ping >= ping_every and alive:
                self.notifier.watchdog()
                last_ping = now
            if now - last_status >= 5.0:
                fps = pipeline.metrics.fps.rate()
                self.notifier.status(f"{fps:.1f} fps, {pipeline.frames_processed} frames")
                last_status = now
            self._stop.wait(SUPERVISE_S)
        if isinstance(pipeline.error, AgentError):
            raise pipeline.error  # e.g. a model whose outputs cannot be decoded: one line, exit 2
        if pipeline.error is not None:
            log.error("stopping: %s", pipeline.error)
            return 1
        self._check_file_sources(pipeline)
        return 0

    @staticmethod
    def _check_file_sources(pipeline: Pipeline) -> None:
        """A video file or image folder that could not be opened is bad input, not a finished run."""
        failed = [camera for camera in pipeline.cameras
                  if not camera.spec.is_live and camera.state.startswith("failed")]
        if failed:
            raise DataError("\n".join(f"camera {camera.name!r}: {camera.last_error}" for camera in failed))

    def _report_camera_states(self) -> None:
        """Publish each camera's state (retained) when it changes."""
        if self.publisher is None or self.pipeline is None:
            return
        for camera in self.pipeline.cameras:
            if self._camera_states.get(camera.name) != camera.state:
                self._camera_states[camera.name] = camera.state
                self.publisher.publish_camera_status(camera.name, camera.state)

    def _apply_reload(self) -> None:
        """SIGHUP: re-read the config; thresholds, filters, zones, counting lines and tracking
        apply at once (one new ``RuntimeSettings``), the model stays loaded. Model, camera
        source and MQTT changes wait for a restart."""
        try:
            new: AgentConfig = config_module.load(self.config_path, self.overrides)
            runtime_settings(new, self.class_names, self.config_path)  # lines, zones, tracking: valid?
        except ConfigError as exc:
            log.error("reload refused, keeping the running config:\n%s", exc)
            return
        if new.model != self.cfg.model or _without_zones(new.cameras) != _without_zones(self.cfg.cameras):
            log.warning("reload: model or camera changes take effect at the next restart "
                        "(systemctl restart detection-agent)")
        if new.mqtt != self.cfg.mqtt:
            log.warning("reload: MQTT changes take effect at the next restart")
        # The running cameras stay; each takes the zones, lines and tracking its namesake has.
        named = {camera.name: camera for camera in new.cameras}
        cameras = [camera.model_copy(update={k: getattr(named[camera.name], k) for k in _LIVE_CAMERA_KEYS})
                   if camera.name in named else camera for camera in self.cfg.cameras]
        self.cfg = self.cfg.model_copy(update={"inference": new.inference, "logging": new.logging,
                                               "tracking": new.tracking, "cameras": cameras})
        logging.getLogger().setLevel(new.logging.level)
        settings = runtime_settings(self.cfg, self.class_names, self.config_path)
        if self.pipeline is not None:
            self.pipeline.apply(settings)  # one value, replaced whole: the sinks draw what it says
        zoned = sum(1 for c in settings.cameras.values() if c.zones is not None)
        log.info("reloaded: conf %.2f, iou %.2f, zones on %d camera(s), tracking %s",
                 settings.postprocess.conf_threshold, settings.postprocess.iou_threshold, zoned,
                 "on" if settings.tracking else "off")

    def _stats(self) -> Dict[str, object]:
        stats: Dict[str, object] = dict(self.pipeline.stats()) if self.pipeline else {}
        stats["system"] = system_stats(self._cpu)
        return stats

    def _shutdown(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop(timeout=3.0)
            self._report_camera_states()  # "finished" / "stopped", before the publisher goes
        if self.publisher is not None:
            if self._input_ended():
                self.undelivered = self.publisher.drain(self.cfg.mqtt.drain_timeout, abort=self._stop)
            self.publisher.stop(timeout=1.5)
        if self.metrics_server is not None:  # last: the drain above shows in the metrics
            self.metrics_server.close()

    def _input_ended(self) -> bool:
        """The run ended without a signal or a pipeline error: its input did (files finished,
        --max-frames, --duration). SIGTERM/SIGINT stay fast; they also cut a drain short."""
        pipeline = self.pipeline
        return not self._stop.is_set() and pipeline is not None and pipeline.error is None

    def summary(self) -> Dict[str, object]:
        return self._stats()


#: Camera keys a reload applies at once; the others wait for a restart.
_LIVE_CAMERA_KEYS = ("zones", "require_zone", "lines", "tracking")


def _without_zones(cameras: Sequence[CameraConfig]) -> List[CameraConfig]:
    """The cameras as a reload compares them: zones, lines and tracking apply live, the rest
    at a restart."""
    return [camera.model_copy(update={"zones": [], "require_zone": False, "lines": [], "tracking": None})
            for camera in cameras]


def run_daemon(config_path: str, overrides: Sequence[str] = (), max_frames: Optional[int] = None,
               duration: Optional[float] = None, video_dir: Optional[str] = None) -> int:
    daemon = Daemon(config_path, overrides, max_frames, duration, Path(video_dir) if video_dir else None)
    code = daemon.run()
    stats = daemon.summary()
    log.info("processed %s frames at %s fps", stats.get("frames"), stats.get("fps"))
    return EXIT_UNDELIVERED if code == 0 and daemon.undelivered else code
