"""Real photographs as backgrounds for synthetic shapes (``make-dataset --backgrounds DIR``).

A data set drawn only on procedural backgrounds teaches a detector those backgrounds; cameras
see rooms, streets and clutter. Each photo background is a random crop of one photo in DIR
(a side of 35-100% of the photo's shorter side, aspect ratio of the output, random position),
rescaled to the image size, randomly mirrored and with its brightness scaled by 0.7-1.3.
The photos are read once; which photo and which crop follow the image's own generator, so a
data set stays reproducible from its seed (given the same photos).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple, Union

import cv2
import numpy as np

from agent.errors import DataError
from agent.fileio import IMAGE_SUFFIXES, image_files

log = logging.getLogger(__name__)

#: Photos are kept at most this large (longer side) in memory: backgrounds are rescaled anyway.
_MAX_SIDE = 1024


class PhotoBackgrounds:
    """The photos of a folder, ready to crop into backgrounds."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise DataError(f"--backgrounds: {folder}: no such folder")
        files = image_files(self.folder, recursive=True)
        self.names: List[str] = []
        self.images: List[np.ndarray] = []
        for path in files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or min(image.shape[:2]) < 16:
                log.warning("%s: not a readable photo of at least 16 px; skipped", path)
                continue
            scale = _MAX_SIDE / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self.names.append(str(path.relative_to(self.folder)))
            self.images.append(image)
        if not self.images:
            raise DataError(f"--backgrounds: {folder}: holds no readable images "
                            f"({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, rng: np.random.Generator, width: int, height: int) -> Tuple[np.ndarray, str]:
        """(float32 BGR background in 0-255 of ``width`` x ``height``, the photo's name)."""
        k = int(rng.integers(0, len(self.images)))
        photo = self.images[k]
        ph, pw = photo.shape[:2]
        aspect = width / height
        side = rng.uniform(0.35, 1.0) * min(ph, pw)
        cw, ch = side * aspect, side
        if cw > pw:  # keep the output's aspect ratio inside the photo
            cw, ch = pw, pw / aspect
        if ch > ph:
            cw, ch = ph * aspect, ph
        cw, ch = max(2, int(cw)), max(2, int(ch))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        region = photo[y0:y0 + ch, x0:x0 + cw]
        shrinking = cw > width
        out = cv2.resize(region, (width, height),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR).astype(np.float32)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        out *= np.float32(rng.uniform(0.7, 1.3))
        return np.ascontiguousarray(np.clip(out, 0, 255)), self.names[k]
