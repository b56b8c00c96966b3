"""Image width and height from the file header, without decoding the pixels.

YOLO labels are normalised, so evaluating them needs every image's size; decoding 5,000
JPEGs to learn it costs a minute on a small CPU, reading their headers well under a second.
JPEG (any SOF marker, and the EXIF orientation that makes OpenCV and ultralytics swap width
and height), PNG, GIF, BMP and WebP are read here; other formats fall back to OpenCV.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Optional, Tuple

from agent.errors import DataError

log = logging.getLogger(__name__)

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_HEAD = 64 * 1024  # EXIF and SOF segments sit near the start; read more only if needed


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) as OpenCV's ``imread`` would return the image (EXIF rotation applied)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD)
            size = _from_header(head, handle)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image: {exc.strerror or exc}") from None
    if size is None:
        size = _decode_size(path)
    width, height = size
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: image header gives an empty size {width}x{height}")
    return size


def _from_header(head: bytes, handle) -> Optional[Tuple[int, int]]:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head, handle)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return width, abs(height)  # negative height: a top-down bitmap
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    return None


def _jpeg_size(head: bytes, handle) -> Optional[Tuple[int, int]]:
    data = head
    pos = 2
    orientation = 1
    while True:
        while pos + 4 > len(data):
            more = handle.read(_HEAD)
            if not more:
                return None
            data += more
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        while pos + 2 + length > len(data):
            more = handle.read(max(_HEAD, length))
            if not more:
                return None
            data += more
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment[6:]) or orientation
        elif marker in _SOF:
            height, width = struct.unpack(">HH", segment[1:5])
            # OpenCV's imread and ultralytics' exif_size both apply orientations 5-8 (90-degree turns).
            return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        elif marker == 0xDA:  # start of scan before any SOF: not a JPEG we understand
            return None
        pos += 2 + length


def _exif_orientation(tiff: bytes) -> Optional[int]:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (entries,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for k in range(entries):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            return None
        tag, _kind, _count = struct.unpack(order + "HHI", tiff[at : at + 8])
        if tag == 0x0112:
            return struct.unpack(order + "H", tiff[at + 8 : at + 10])[0]
    return None


def _webp_size(head: bytes) -> Optional[Tuple[int, int]]:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _decode_size(path: Path) -> Tuple[int, int]:
    from agent.fileio import read_image

    log.debug("%s: unknown header, decoding to learn the size", path)
    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])
