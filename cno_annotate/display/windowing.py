"""Window / level: from float voxels to 8-bit display values.

:class:`Windowing` maps ``[level - width/2, level + width/2]`` linearly to
0-255 into buffers it keeps between calls, so that a scroll step allocates
nothing. Presets are computed from robust percentiles of the volume (scanner
units differ between vendors and sequences, so fixed numbers would not
travel): an automatic one for every series, plus per-sequence ones for STIR
and T1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Presets per role: (name, low percentile, high percentile) of body voxels.
ROLE_PRESETS = {
    "STIR": [("STIR: oedema", 5.0, 99.9), ("STIR: soft tissue", 1.0, 97.0)],
    "T1": [("T1: marrow", 2.0, 99.0), ("T1: fat / bone", 10.0, 99.8)],
    "other": [],
}
AUTO = ("Auto (robust)", 1.0, 99.5)
_SAMPLE_STRIDE = 4


@dataclass(frozen=True)
class Window:
    """A display window: centre (level) and width in voxel units."""

    level: float
    width: float

    @property
    def low(self) -> float:
        """Value shown black."""
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        """Value shown white."""
        return self.level + self.width / 2

    @classmethod
    def from_range(cls, low: float, high: float) -> Window:
        """The window from ``low`` (black) to ``high`` (white)."""
        high = max(high, low + 1e-6)
        return cls(level=(low + high) / 2, width=high - low)

    def adjusted(self, d_level: float, d_width: float) -> Window:
        """A new window moved by ``d_level`` and widened by ``d_width`` (never below 1e-6)."""
        return Window(self.level + d_level, max(self.width + d_width, 1e-6))


def body_sample(array: np.ndarray) -> np.ndarray:
    """A strided sample of the voxels above the background (for percentiles)."""
    sample = np.asarray(array[::_SAMPLE_STRIDE, ::_SAMPLE_STRIDE, ::_SAMPLE_STRIDE], dtype=np.float32).ravel()
    if sample.size == 0:
        return np.zeros(1, np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(1, np.float32)
    threshold = np.percentile(finite, 50) * 0.1 if finite.max() > 0 else finite.min()
    body = finite[finite > threshold]
    return body if body.size >= 16 else finite


def presets(array: np.ndarray, role: str) -> dict[str, Window]:
    """Named windows for a volume: automatic first, then those of its role."""
    sample = body_sample(array)
    named = [AUTO, *ROLE_PRESETS.get(role, [])]
    values = np.percentile(sample, [q for _, low, high in named for q in (low, high)])  # one partition for all
    return {name: Window.from_range(float(lo), float(hi)) for (name, _, _), lo, hi in zip(named, values[::2], values[1::2])}


class Windowing:
    """Windowing into reusable buffers.

    Examples
    --------
    >>> w = Windowing()
    >>> w.apply(np.array([[0.0, 50.0, 100.0]], np.float32), Window(50, 100)).tolist()
    [[0, 127, 255]]
    """

    def __init__(self) -> None:
        self._work = np.empty(0, np.float32)
        self._out = np.empty(0, np.uint8)

    def apply(self, image: np.ndarray, window: Window) -> np.ndarray:
        """8-bit display values of a 2-D float image (a buffer reused by the next call)."""
        shape = image.shape
        n = image.size
        if self._work.size < n:
            self._work = np.empty(n, np.float32)
            self._out = np.empty(n, np.uint8)
        work = self._work[:n].reshape(shape)
        out = self._out[:n].reshape(shape)
        scale = np.float32(255.0 / window.width)
        np.subtract(image, np.float32(window.low), out=work)
        np.multiply(work, scale, out=work)
        np.clip(work, 0, 255, out=work)
        np.copyto(out, work, casting="unsafe")
        return out
