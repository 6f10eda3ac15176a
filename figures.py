"""Pictures of image/mask pairs: label overlays and grids of pairs, shared by the notebooks and modules.

Drawing only: no reading of files and no judgements about the data.
"""
from __future__ import annotations

import numpy as np

# background transparent; disc, vertebra, then further classes in distinct colours
CLASS_COLOURS = np.array([[0, 0, 0], [255, 200, 0], [0, 160, 255], [220, 60, 60], [80, 200, 120]], dtype=np.float32) / 255


def overlay_rgb(image, mask, alpha: float = 0.45, classes=None, contour: bool = False) -> np.ndarray:
    """An RGB float image: grayscale `image` (H, W[, 1], in [0, 1]) with labels of `mask` tinted on top.

    classes: which labels to show (default all but background); contour: draw only label boundaries.
    """
    gray = np.asarray(image, dtype=np.float32).reshape(np.shape(mask))
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    mask = np.asarray(mask)
    shown = range(1, int(mask.max(initial=0)) + 1) if classes is None else classes
    for label in shown:
        region = mask == label
        if contour:
            region = region & ~_eroded(region)
            weight = 1.0
        else:
            weight = alpha
        rgb[region] = (1 - weight) * rgb[region] + weight * CLASS_COLOURS[label % len(CLASS_COLOURS)]
    return rgb.clip(0, 1)


def _eroded(region: np.ndarray) -> np.ndarray:
    """Binary erosion by the 4-neighbourhood (pixels whose four neighbours are all inside)."""
    inner = region.copy()
    inner[1:] &= region[:-1]
    inner[:-1] &= region[1:]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    return inner


def show_pairs(images, masks, titles, columns: int = 4, size: float = 2.6, contour: bool = False):
    """A matplotlib figure with one overlay panel per pair, titled; returns the figure."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(titles) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, mask, title in zip(axes.ravel(), images, masks, titles):
        ax.imshow(overlay_rgb(image, mask, contour=contour))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
