"""The canvas of the synthetic images: colours, backgrounds, sensor noise and blur.

Backgrounds are float32 HxWx3 BGR in 0-255; objects are painted over them (shapes_draw.py),
then ``degrade`` adds noise and blur and rounds to uint8.
"""

from __future__ import annotations

import colorsys
import math
import statistics
from typing import Tuple

import cv2
import numpy as np

Color = Tuple[float, float, float]


def hsv_color(rng: np.random.Generator, sat: Tuple[float, float], val: Tuple[float, float]) -> Color:
    """A BGR colour (0-255 floats) of random hue and saturation/value drawn from the ranges."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return b * 255.0, g * 255.0, r * 255.0


# Inverse normal CDF at 256 evenly spaced quantiles: noise from random bytes through this table
# is Gaussian to the eye and several times cheaper than drawing normal floats.
_GAUSS_TABLE = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


def gaussian_noise(rng: np.random.Generator, shape: Tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean float32 noise of standard deviation about ``sigma``."""
    return np.take(_GAUSS_TABLE * np.float32(sigma), rng.integers(0, 256, shape, dtype=np.uint8))


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """The float canvas rounded and clipped to uint8."""
    return np.clip(canvas + np.float32(0.5), 0, 255).astype(np.uint8)


def degrade(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Sensor noise (60%) and Gaussian or motion blur (30%), to uint8."""
    if rng.random() < 0.6:
        canvas = canvas + gaussian_noise(rng, canvas.shape, rng.uniform(2, 12))
    image = to_uint8(canvas)
    pick = rng.random()
    if pick < 0.2:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    elif pick < 0.3:
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        c = (length - 1) / 2.0
        dx, dy = math.cos(rng.uniform(0, math.pi)) * c, math.sin(rng.uniform(0, math.pi)) * c
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    return image


# Backgrounds: float32 HxWx3 BGR in 0-255. "default" kinds first, then the "alt" ones.
DEFAULT_BACKGROUNDS = ("gradient", "noise", "stripes", "checker", "clutter")
ALT_BACKGROUNDS = ("radial", "plasma", "rings", "grid", "speckle")


def background(rng: np.random.Generator, kind: str, width: int, height: int,
               sat: Tuple[float, float], val: Tuple[float, float]) -> np.ndarray:
    """A ``kind`` background whose colours come from the HSV ranges ``sat`` and ``val``."""
    scale = max(width, height) / 640.0
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    c0, c1 = hsv_color(rng, sat, val), hsv_color(rng, sat, val)
    theta = rng.uniform(0.0, math.pi)
    u = x * np.float32(math.cos(theta)) + y * np.float32(math.sin(theta))
    v = y * np.float32(math.cos(theta)) - x * np.float32(math.sin(theta))
    if kind == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    elif kind in ("noise", "plasma"):
        octaves = 1 if kind == "noise" else 3
        t = sum(_smooth_noise(rng, width, height, int(rng.integers(3, 12)) * 2 ** o) / 2 ** o
                for o in range(octaves))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind in ("stripes", "rings"):
        if kind == "rings":
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            u = np.sqrt((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2)
        period = rng.uniform(10.0, 80.0) * scale
        t = 0.5 + 0.5 * np.sin(u * np.float32(2.0 * math.pi / period))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(12.0, 90.0) * scale
        t = ((np.floor(u / np.float32(cell)) + np.floor(v / np.float32(cell))) % 2).astype(np.float32)
    elif kind == "radial":
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.sqrt((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2)
        t = (t / max(float(t.max()), 1.0)) ** np.float32(rng.uniform(0.5, 2.0))
    elif kind == "grid":
        cell, thick = rng.uniform(16.0, 64.0) * scale, rng.uniform(1.0, 4.0) * scale
        t = ((np.mod(u, np.float32(cell)) < thick) | (np.mod(v, np.float32(cell)) < thick)).astype(np.float32)
    elif kind == "clutter":
        return _clutter(rng, width, height, sat, val, c0, c1, u)
    elif kind == "speckle":
        t = (rng.random((height, width), dtype=np.float32) < rng.uniform(0.01, 0.08)).astype(np.float32)
        t = cv2.dilate(t, np.ones((2, 2), np.uint8))
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    out = _mix(t, c0, c1)
    if kind == "noise":
        out += gaussian_noise(rng, out.shape, rng.uniform(3.0, 20.0))
    return out


def _mix(t: np.ndarray, c0: Color, c1: Color) -> np.ndarray:
    """``c0`` where ``t`` is 0, ``c1`` where it is 1, linear between: an (H, W, 3) float32 image."""
    # cv2.transform does the per-channel affine map in one pass, far faster than broadcasting.
    m = np.array([[c1[i] - c0[i], c0[i]] for i in range(3)], np.float32)
    return cv2.transform(np.ascontiguousarray(t, np.float32)[..., None], m)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    # Upsampling a coarse random grid is a vectorised stand-in for Perlin noise.
    grid = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _clutter(rng: np.random.Generator, width: int, height: int, sat: Tuple[float, float],
             val: Tuple[float, float], c0: Color, c1: Color, u: np.ndarray) -> np.ndarray:
    """A gradient under soft blobs and thin lines: busy, but nothing that looks like a class."""
    # Blobs are drawn and blurred at quarter size: heavy blur keeps them from having the crisp
    # outline of a labelled circle, and a quarter of the pixels makes it cheap.
    sw, sh = max(1, width // 4), max(1, height // 4)
    small = cv2.resize(_mix((u - u.min()) / max(float(u.max() - u.min()), 1.0), c0, c1), (sw, sh),
                       interpolation=cv2.INTER_AREA)
    size = max(sw, sh)
    for _ in range(int(rng.integers(3, 12))):
        axes = (max(1, int(rng.uniform(0.03, 0.2) * size)), max(1, int(rng.uniform(0.03, 0.2) * size)))
        centre = (int(rng.uniform(0, sw)), int(rng.uniform(0, sh)))
        cv2.ellipse(small, centre, axes, rng.uniform(0, 180), 0, 360, hsv_color(rng, sat, val), -1)
    small = cv2.GaussianBlur(small, (0, 0), size * 0.02)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(5, 25))):
        p0 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        p1 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.line(out, p0, p1, hsv_color(rng, sat, val), int(rng.integers(1, 4)), cv2.LINE_AA)
    return out
