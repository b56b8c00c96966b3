"""``make-dataset`` and ``make-video``: synthetic data with ground truth (agent/datasets/)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("make-dataset", help="write a synthetic shapes data set (YOLO layout)")
    p.add_argument("kind", choices=["shapes"], help="data set kind")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--imgsz", type=int, default=640, help="image size in pixels (default 640)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--style", default="default", choices=["default", "alt"],
                   help="background and colour distribution (alt: drawn differently)")
    p.add_argument("--backgrounds", metavar="DIR",
                   help="folder of photos: draw a share of the images on crops of them (e.g. coco128/images)")
    p.add_argument("--background-ratio", type=float, default=0.5, metavar="R",
                   help="share of the images on photo backgrounds with --backgrounds (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace images and labels already there")
    p.set_defaults(handler=cmd_make_dataset)

    p = sub.add_parser("make-video", help="write a video of moving shapes with COCO and MOT ground truth")
    p.add_argument("--out", required=True,
                   help="output .mp4 (ground truth beside it: .json boxes, .mot.txt identities)")
    p.add_argument("--frames", type=int, default=300, help="frame count (default 300)")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--lines", metavar="FILE",
                   help="counting lines, YAML or JSON: a list of {name, points: [[x1, y1], [x2, y2]], units, "
                        "anchor, classes} as in a camera's lines:; writes the true crossings as .lines.json")
    p.set_defaults(handler=cmd_make_video)


def cmd_make_dataset(args: argparse.Namespace) -> int:
    from agent.datasets.synthetic import make_dataset

    data_yaml = make_dataset(args.out, train=args.train, val=args.val, imgsz=args.imgsz, seed=args.seed,
                             style=args.style, overwrite=args.overwrite, backgrounds=args.backgrounds,
                             background_ratio=args.background_ratio)
    print(f"data set written: {data_yaml}")
    return 0


def cmd_make_video(args: argparse.Namespace) -> int:
    from agent.datasets.video import make_video
    from agent.datasets.video_truth import load_lines

    lines = load_lines(args.lines) if args.lines else []  # a bad file fails before any frame is drawn
    truth = make_video(args.out, frames=args.frames, fps=args.fps, seed=args.seed, width=args.width,
                       height=args.height, lines=lines)
    extra = f", crossings: {truth.with_suffix('.lines.json')}" if lines else ""
    print(f"video written: {args.out} (ground truth: {truth}, identities: {truth.with_suffix('.mot.txt')}"
          f"{extra})")
    return 0
