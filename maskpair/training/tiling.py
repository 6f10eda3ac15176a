"""Sliding-window prediction for images larger than one forward pass should take: overlapping windows, each
window's probabilities weighted by a Gaussian that trusts its centre more than its rim, blended into one map.

The same scheme as MONAI's `sliding_window_inference(mode="gaussian")` and nnU-Net's predictor (sigma = 1/8 of
the window, overlap 1/2), in numpy around any `predict_windows` function, so results hardly depend on the tiling: a
pixel near a window's edge, where the network sees little context, gets little weight wherever another window
covers it with more.
"""
from __future__ import annotations

import numpy as np

SIGMA_SCALE = 1 / 8  # of the window side: nnU-Net's and MONAI's default
OVERLAP = 0.5  # share of a window its neighbour covers


def gaussian_weights(window: tuple[int, int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """float32 (h, w) importance map: a Gaussian centred on the window, scaled to 1 at its centre and never below
    a small positive floor (so every pixel of every window counts a little, and no pixel is divided by zero)."""
    axes = []
    for side in window:
        centre, sigma = (side - 1) / 2, side * sigma_scale
        axes.append(np.exp(-0.5 * ((np.arange(side) - centre) / sigma) ** 2))
    weights = np.outer(*axes)
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


def window_starts(size: int, window: int, overlap: float = OVERLAP) -> list[int]:
    """Start positions of windows of `window` pixels covering `size` pixels, consecutive ones overlapping by at
    least `overlap` of a window, the first at 0 and the last ending at `size`, spread evenly between."""
    if size <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    count = -(-(size - window) // stride) + 1
    return [int(round(k * (size - window) / (count - 1))) for k in range(count)]


def sliding_window(image: np.ndarray, window: int, predict_windows, n_classes: int, overlap: float = OVERLAP,
                   batch_size: int = 4) -> np.ndarray:
    """float32 (H, W, K) probabilities of `image` (H, W, C) from overlapping `window` x `window` crops.

    predict_windows(crops (B, h, w, C)) -> probabilities (B, h, w, K): the model on a batch of crops. Crops are
    at most `window` on each side (an image side shorter than the window is taken whole)."""
    height, width = image.shape[:2]
    size = (min(window, height), min(window, width))
    weights = gaussian_weights(size)
    corners = [(top, left) for top in window_starts(height, size[0], overlap)
               for left in window_starts(width, size[1], overlap)]
    total = np.zeros((height, width, n_classes), np.float32)
    weight_sum = np.zeros((height, width, 1), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        crops = np.stack([image[top:top + size[0], left:left + size[1]] for top, left in chunk])
        for (top, left), probabilities in zip(chunk, predict_windows(crops)):
            total[top:top + size[0], left:left + size[1]] += probabilities * weights[..., None]
            weight_sum[top:top + size[0], left:left + size[1]] += weights[..., None]
    return total / weight_sum
