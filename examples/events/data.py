"""Deterministic event streams from scikit-learn's 8x8 digits.

Owns :func:`digits_to_events`: each digit is upsampled to 16x16 and swept across a 32x32 canvas
in a staircase (``shift`` pixels right on odd steps, down on even steps); a DVS-like sensor emits an ON event where the
intensity rose by more than ``threshold`` between consecutive frames and an OFF event where it
fell. Output (N, T, 2, H, W) uint8 in {0, 1}, channel 0 = ON, 1 = OFF.

Also owns :func:`write_recordings`: binned samples written as the event recordings users have
(tonic-style ``x, y, t, p`` structured arrays, t in microseconds, one ``.npz`` with a ``labels``
array; read back with :func:`snncc.sim.event_streams.read_events`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits_to_events", "write_recordings", "CANVAS", "T_DEFAULT", "BIN_US"]

CANVAS = 32
T_DEFAULT = 4
BIN_US = 1000.0  # assumed: one training timestep = 1 ms of sensor time (the digits sweep has no clock)


def _frames(images: np.ndarray, T: int, canvas: int, shift: int, scale: int) -> np.ndarray:
    n, h, w = images.shape
    big = images.repeat(scale, 1).repeat(scale, 2)  # (N, h*scale, w*scale)
    hs, ws = big.shape[1:]
    start = (canvas - hs - shift * ((T + 1) // 2)) // 2
    if start < 0:
        raise ValueError("canvas too small for the sweep")
    frames = np.zeros((n, T + 1, canvas, canvas), dtype=np.float32)
    for t in range(T + 1):
        ox = start + shift * ((t + 1) // 2)  # right on steps 1, 3, ...
        oy = start + shift * (t // 2)        # down on steps 2, 4, ...
        frames[:, t, oy:oy + hs, ox:ox + ws] = big
    return frames


def digits_to_events(images: np.ndarray, T: int = T_DEFAULT, canvas: int = CANVAS, shift: int = 1,
                     scale: int = 2, threshold: float = 0.25) -> np.ndarray:
    """Turn (N, 8, 8) intensities in [0, 1] into (N, T, 2, canvas, canvas) binary ON/OFF events."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        images = images[:, 0]
    f = _frames(images, T, canvas, shift, scale)
    d = f[:, 1:] - f[:, :-1]  # (N, T, H, W)
    on = d > threshold
    off = d < -threshold
    return np.stack([on, off], axis=2).astype(np.uint8)


def write_recordings(x: np.ndarray, y: np.ndarray, path, bin_us: float = BIN_US):
    """Write (N, T, 2, H, W) binned events and (N,) labels as tonic-style recordings: timestep k
    covers [k bin_us, (k+1) bin_us) and its events get timestamps spread evenly over it
    (`snncc.sim.event_streams.dense_to_stream`); sensor size (W, H). Binning a recording with
    `bin_counts(stream, T, bin_us)` gives the sample back."""
    from snncc.sim.event_streams import dense_to_stream, write_events

    streams = [dense_to_stream(xi, bin_us) for xi in np.asarray(x)]
    return write_events(path, streams, labels=np.asarray(y))
