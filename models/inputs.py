"""How classifier inputs are scaled, the same in training and in serving."""

from __future__ import annotations

import numpy as np


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """Values above 1 are read as 0..255 pixels (uint8 images) and scaled to [0, 1]."""
    return x / 255.0 if x.size and x.max() > 1.0 else x
