"""Fit camera frames to the network input, and map boxes back to the frames.

Two ways to fit a frame: ``letterbox`` (keep the aspect ratio, centre, pad with grey 114;
pixel-for-pixel the same as ultralytics' ``LetterBox(auto=False)``, which trained the
shipped models) and ``resize`` (stretch to the input size, as darknet trains and infers).

The network tensor (NCHW, RGB, [0, 1], float32 or float16) is written into one buffer
allocated at start-up and reused for every batch: a Jetson shares its memory between CPU
and GPU, and a fresh multi-megabyte array per frame costs both time and fragmentation.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from agent.types import RESIZE_MODES, FitTransform

log = logging.getLogger(__name__)

PAD_VALUE = 114


def fit_transform(source_size: Tuple[int, int], input_size: Tuple[int, int], mode: str) -> FitTransform:
    """Where a source image of ``source_size`` (h, w) lands in an input of ``input_size`` (h, w)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    src_h, src_w = source_size
    dst_h, dst_w = input_size
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"source image has no pixels: {source_size}")
    if mode == "resize":
        return FitTransform((src_h, src_w), (dst_h, dst_w), (0, 0))
    ratio = min(dst_h / src_h, dst_w / src_w)
    new_w, new_h = max(round(src_w * ratio), 1), max(round(src_h * ratio), 1)
    # Same rounding as ultralytics: an odd padding puts the extra pixel bottom/right.
    left = round((dst_w - new_w) / 2 - 0.1)
    top = round((dst_h - new_h) / 2 - 0.1)
    return FitTransform((src_h, src_w), (new_h, new_w), (left, top))


def fit_image(image: np.ndarray, transform: FitTransform, input_size: Tuple[int, int],
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """The HxWx3 uint8 network-sized image for ``transform`` (into ``out`` when given)."""
    dst_h, dst_w = input_size
    if out is None:
        out = np.empty((dst_h, dst_w, 3), np.uint8)
    new_h, new_w = transform.resized_size
    left, top = transform.pad
    if image.shape[:2] != (new_h, new_w):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image
    # Paint only the borders grey; the centre is overwritten by the image.
    out[:top] = PAD_VALUE
    out[top + new_h:] = PAD_VALUE
    out[top:top + new_h, :left] = PAD_VALUE
    out[top:top + new_h, left + new_w:] = PAD_VALUE
    out[top:top + new_h, left:left + new_w] = resized
    return out


class Preprocessor:
    """Turns a batch of BGR frames into the network's NCHW tensor, reusing one buffer.

    The returned array is a view of the internal buffer: it is valid until the next call,
    which is what an inference loop needs (the backend copies it to the device first).
    """

    def __init__(self, input_size: Tuple[int, int], mode: str = "letterbox", batch_size: int = 1,
                 dtype: Union[np.dtype, type] = np.float32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mode = mode
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"network input must be float32 or float16, got {self.dtype}")
        h, w = self.input_size
        self._tensor = np.zeros((batch_size, 3, h, w), self.dtype)
        self._canvas = np.empty((h, w, 3), np.uint8)
        fit_transform((1, 1), self.input_size, mode)  # validate the mode once, up front

    @property
    def batch_size(self) -> int:
        return int(self._tensor.shape[0])

    def buffer(self, count: int) -> np.ndarray:
        """The first ``count`` slots of the reused input buffer, to be filled by the caller."""
        if not 1 <= count <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} images, got {count}")
        return self._tensor[:count]

    def __call__(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[FitTransform]]:
        """Fill the buffer with ``images`` (at most ``batch_size``); returns the filled part."""
        if not 1 <= len(images) <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} images, got {len(images)}")
        transforms = [self._fill(image, self._tensor[slot], self._canvas)
                      for slot, image in enumerate(images)]
        return self._tensor[: len(images)], transforms

    def prepare(self, image: np.ndarray) -> Tuple[np.ndarray, FitTransform]:
        """One image as its own (1, 3, H, W) tensor, in fresh memory; safe from any thread.

        The pipeline calls this in each camera's capture thread, so fitting and scaling a
        frame overlaps the inference of the previous one instead of delaying it.
        """
        h, w = self.input_size
        tensor = np.empty((1, 3, h, w), self.dtype)
        transform = self._fill(image, tensor[0], np.empty((h, w, 3), np.uint8))
        return tensor, transform

    def _fill(self, image: np.ndarray, out: np.ndarray, canvas: np.ndarray) -> FitTransform:
        """Write ``image`` fitted, RGB, CHW and scaled to [0, 1] into ``out`` (3, H, W)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")
        transform = fit_transform(image.shape[:2], self.input_size, self.mode)
        fit_image(image, transform, self.input_size, out=canvas)
        chw_rgb = canvas.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB: a view, no copy
        np.multiply(chw_rgb, np.float32(1.0 / 255.0), out=out, casting="unsafe")
        return transform
