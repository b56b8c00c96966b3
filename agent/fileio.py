"""Files in and out: image discovery and reading, and writes that never leave half a file.

Every output file is written to a temporary name in the same folder and renamed over the
target, so a crash or a full disk leaves the previous file (or none), never a torn one.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Union

import cv2
import numpy as np

from agent.errors import DataError

log = logging.getLogger(__name__)

#: What counts as an image file everywhere (detect, image-folder cameras, data sets, calibration,
#: export checks, photo backgrounds): OpenCV reads them all.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Union[str, Path]) -> bool:
    """Whether ``path`` names an image by its suffix (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder_or_pattern: Union[str, Path], recursive: bool = False) -> List[Path]:
    """The image files in a folder (``recursive``: and below it) or matching a glob pattern, sorted.

    The one image lister of the project; empty when there are none (callers say why that is wrong).
    """
    path = Path(folder_or_pattern)
    if path.is_dir():
        candidates = path.rglob("*") if recursive else path.iterdir()
    else:
        candidates = (Path(p) for p in glob.glob(str(folder_or_pattern), recursive=recursive))
    return sorted(p for p in candidates if is_image_file(p) and p.is_file())


def list_images(inputs: Iterable[Union[str, Path]]) -> List[Path]:
    """Image files named by ``inputs``: files, folders (not recursive) or glob patterns."""
    found: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(image_files(path))
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(str(item)):
            matches = image_files(str(item))
            if not matches:
                raise DataError(f"{item}: pattern matches no image files")
            found.extend(matches)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError(f"no image files in {', '.join(str(i) for i in inputs)}")
    return found


def read_image(path: Path) -> np.ndarray:
    """An HxWx3 uint8 BGR image; ``DataError`` naming the file when it cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return image


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` all-or-nothing (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared (training, containers)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_image(path: Union[str, Path], image: np.ndarray, jpeg_quality: int = 90) -> None:
    """Encode by the file's suffix and write atomically."""
    suffix = Path(path).suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise DataError(f"{path}: cannot encode an image as {suffix}")
    atomic_write_bytes(path, encoded.tobytes())
