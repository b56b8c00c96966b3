"""Constant-velocity Kalman filter for boxes, batched over tracks, with time in seconds.

State per track: ``[cx, cy, w, h, vx, vy, vw, vh]`` (pixels and pixels per second);
measurement: ``[cx, cy, w, h]``. Width and height are filtered on their own rather than
as an aspect ratio (ByteTrack's ``xyah``): shapes that rotate and people who turn change
their aspect ratio quickly, and x/w noise scaled by width, y/h noise by height, fits that.

Noise is proportional to the box size, as in SORT and ByteTrack, so one setting suits
near and far objects. ByteTrack's per-frame figures (position 1/20, velocity 1/160 of the
height, at 30 frames a second) are turned into rates per second: process noise grows with
the time step, so a 5 FPS camera's prediction spreads six times as much per step as a
30 FPS camera's, as it should. Every operation works on stacked arrays ``(T, 8)`` and
``(T, 8, 8)``: 50 tracks cost a few numpy calls, not 50 Python loops of small matrix maths.
"""

from __future__ import annotations

import logging
from typing import Tuple

import numpy as np

log = logging.getLogger(__name__)

#: ByteTrack's per-frame standard deviations, as fractions of the box size.
_POS_PER_FRAME = 1.0 / 20.0
_VEL_PER_FRAME = 1.0 / 160.0
#: The frame rate those figures were tuned at (MOT17), to convert them to per-second rates.
_REFERENCE_FPS = 30.0
#: Process noise variance per second of the position (fraction of size, squared).
POSITION_VAR_PER_S = _REFERENCE_FPS * _POS_PER_FRAME ** 2
#: Process noise variance per second of the velocity ((size / s) ** 2 per s).
VELOCITY_VAR_PER_S = _REFERENCE_FPS * (_VEL_PER_FRAME * _REFERENCE_FPS) ** 2
#: Measurement noise: a detected box's centre and size are good to about 1/20 of its size.
MEASUREMENT_STD = _POS_PER_FRAME
#: A new track's uncertainty: twice the measurement noise on position, a wide velocity.
INITIAL_POS_STD = 2.0 * _POS_PER_FRAME
INITIAL_VEL_STD = 10.0 * _VEL_PER_FRAME * _REFERENCE_FPS

_MIN_SIZE = 1.0  # px: noise scales with size, and a degenerate box must not make it zero


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """(N,4) corner boxes to centre and size."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.concatenate([xyxy[:, :2] + wh / 2.0, wh], axis=1)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(N,4) centre and size to corner boxes (negative sizes clipped to 0)."""
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    half = np.clip(xywh[:, 2:], 0.0, None) / 2.0
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def _scale(sizes: np.ndarray) -> np.ndarray:
    """(N,4) per-coordinate noise scale: width for x and w, height for y and h."""
    w = np.maximum(sizes[:, 0], _MIN_SIZE)
    h = np.maximum(sizes[:, 1], _MIN_SIZE)
    return np.stack([w, h, w, h], axis=1)


def initiate(measurements: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """New tracks at ``measurements`` (N,4 xywh), at rest: (mean (N,8), covariance (N,8,8))."""
    z = np.asarray(measurements, np.float64).reshape(-1, 4)
    mean = np.concatenate([z, np.zeros_like(z)], axis=1)
    scale = _scale(z[:, 2:])
    std = np.concatenate([INITIAL_POS_STD * scale, INITIAL_VEL_STD * scale], axis=1)
    cov = np.zeros((len(z), 8, 8))
    idx = np.arange(8)
    cov[:, idx, idx] = std ** 2
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each track moved on by its own ``dt`` seconds (T,): new (mean, covariance) arrays."""
    dt = np.clip(np.asarray(dt, np.float64).reshape(-1), 0.0, None)
    if len(mean) == 0:
        return mean.copy(), cov.copy()
    d = dt[:, None]
    new_mean = mean.copy()
    new_mean[:, :4] += d * mean[:, 4:]
    # F P F^T for F = [[I, dt I], [0, I]], written blockwise: P = [[A, B], [B^T, C]].
    a, b, c = cov[:, :4, :4], cov[:, :4, 4:], cov[:, 4:, 4:]
    d3 = dt[:, None, None]
    new_b = b + d3 * c
    new_cov = np.empty_like(cov)
    new_cov[:, :4, :4] = a + d3 * (b + np.swapaxes(b, 1, 2)) + d3 * d3 * c
    new_cov[:, :4, 4:] = new_b
    new_cov[:, 4:, :4] = np.swapaxes(new_b, 1, 2)
    new_cov[:, 4:, 4:] = c
    scale = _scale(mean[:, 2:4])
    idx = np.arange(4)
    new_cov[:, idx, idx] += POSITION_VAR_PER_S * scale ** 2 * d
    new_cov[:, idx + 4, idx + 4] += VELOCITY_VAR_PER_S * scale ** 2 * d
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, measurements: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Tracks (M,8)/(M,8,8) corrected by one measurement each (M,4 xywh)."""
    z = np.asarray(measurements, np.float64).reshape(-1, 4)
    if len(z) == 0:
        return mean.copy(), cov.copy()
    idx = np.arange(4)
    innovation_cov = cov[:, :4, :4].copy()
    innovation_cov[:, idx, idx] += (MEASUREMENT_STD * _scale(mean[:, 2:4])) ** 2
    # Gain K = P H^T S^-1; S is symmetric, so K^T = solve(S, H P).
    gain = np.swapaxes(np.linalg.solve(innovation_cov, cov[:, :4, :]), 1, 2)  # (M,8,4)
    residual = z - mean[:, :4]
    new_mean = mean + np.einsum("mij,mj->mi", gain, residual)
    new_cov = cov - gain @ innovation_cov @ np.swapaxes(gain, 1, 2)
    # Keep the covariance symmetric against rounding, which otherwise grows over long tracks.
    new_cov = (new_cov + np.swapaxes(new_cov, 1, 2)) / 2.0
    return new_mean, new_cov
