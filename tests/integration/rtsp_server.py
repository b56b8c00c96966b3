"""A real RTSP camera for the tests: GStreamer's RTSP server serving live H.264.

Run by the system ``python3`` (the GStreamer bindings come from the system packages
``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``, ``gstreamer1.0-rtsp``,
``gstreamer1.0-plugins-ugly`` for x264enc; the project's venv does not have them)::

    /usr/bin/python3 rtsp_server.py --port 8554 --shape circle --width 320 --height 240 --fps 10

Each frame shows one filled shape (``--shape circle`` or ``square``, which the shipped model
detects) on grey, whose horizontal position encodes the wall-clock time the frame was made:
its centre is at ``X0 + SPEED * (t mod PERIOD)`` pixels. A test that reads a detection's box
therefore knows how old the picture was when the agent captured it, and, from the shape,
which life of the server made it: a stale frame cannot hide.

It prints ``ready rtsp://127.0.0.1:PORT/cam`` once it listens, then one ``setup TRANSPORT``
line per stream a client sets up (the client's Transport header: ``RTP/AVP/TCP;...`` for
interleaved TCP, ``RTP/AVP/UDP;...client_port=...`` for UDP). Only the standard library and
gi: no project code.
"""

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

X0, SPEED, PERIOD = 40.0, 24.0, 10.0  # pixels, pixels per second, seconds (X0 + SPEED * PERIOD = 280)
RADIUS = 30
GREY = bytes((96, 96, 96))
COLOUR = {"circle": bytes((230, 200, 40)), "square": bytes((40, 60, 200))}  # RGB


def frame(width, height, shape, now):
    """An RGB picture: the shape centred at the position that encodes ``now``."""
    row = GREY * width
    pixels = bytearray(row * height)
    cx, cy = X0 + SPEED * (now % PERIOD), height / 2.0
    colour = COLOUR[shape]
    for y in range(max(0, int(cy - RADIUS)), min(height, int(cy + RADIUS) + 1)):
        dy = y + 0.5 - cy
        if shape == "square":
            half = float(RADIUS)
        elif abs(dy) <= RADIUS:
            half = (RADIUS * RADIUS - dy * dy) ** 0.5
        else:
            continue
        x0, x1 = max(0, round(cx - half)), min(width, round(cx + half))
        start = (y * width + x0) * 3
        pixels[start:start + (x1 - x0) * 3] = colour * (x1 - x0)
    return bytes(pixels)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shape", choices=sorted(COLOUR), default="circle")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args()
    Gst.init(None)
    # Cheap for a shared CPU: small frames, few of them, the fastest x264 preset, a key frame
    # every second so a client that (re)connects decodes within a second.
    launch = (f"( appsrc name=src is-live=true format=time do-timestamp=true "
              f"caps=video/x-raw,format=RGB,width={args.width},height={args.height},framerate={args.fps}/1 ! "
              "videoconvert ! video/x-raw,format=I420 ! "
              f"x264enc tune=zerolatency speed-preset=ultrafast bitrate=256 key-int-max={args.fps} "
              "threads=1 ! "
              "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)  # one encoder for every client of this camera
    sources = []

    def configure(factory, media):
        sources.append(media.get_element().get_child_by_name("src"))
        media.connect("unprepared", lambda m: sources.clear())

    def push():
        for src in list(sources):
            data = frame(args.width, args.height, args.shape, time.time())
            src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
        return True

    factory.connect("media-configure", configure)
    GLib.timeout_add(int(1000 / args.fps), push)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory("/cam", factory)

    def on_setup(client, context):
        ok, value = context.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
        print(f"setup {value if ok == GstRtsp.RTSPResult.OK else '?'}", flush=True)

    server.connect("client-connected", lambda srv, client: client.connect("setup-request", on_setup))
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}/cam", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
