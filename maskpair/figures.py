"""Pictures of image/mask pairs and of training: class colours and legends, overlays, grids, learning curves.

Drawing only: no reading of files and no judgements about the data. Images are float (H, W), (H, W, 1) or
(H, W, 3) in [0, 1]; label maps are class indices with `IGNORE_INDEX` for pixels without a label.
"""
from __future__ import annotations

import numpy as np

from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX

# Class index k is drawn in CLASS_COLOURS[k]: the same colour in every figure and in the review UI. Index 0
# (background) is never painted. Then 20 colours chosen to be told apart (two bright ones first, then Kelly's
# colours of maximum contrast); more classes than that reuse them in order.
CLASS_COLOURS = np.array([
    [0, 0, 0], [255, 200, 0], [0, 160, 255], [190, 0, 50], [0, 136, 86], [135, 86, 146], [243, 132, 0],
    [161, 202, 241], [194, 178, 128], [230, 143, 172], [96, 78, 151], [249, 147, 121], [179, 68, 108],
    [220, 211, 0], [136, 45, 23], [141, 182, 0], [101, 69, 34], [226, 88, 34], [43, 61, 38], [132, 132, 130],
    [0, 103, 165],
], dtype=np.float32) / 255
IGNORE_COLOUR = np.array([0.75, 0.75, 0.75], dtype=np.float32)  # light grey: "no label here"


def class_colour(index: int) -> np.ndarray:
    """RGB in [0, 1] of a class index (IGNORE_INDEX: light grey)."""
    if index == IGNORE_INDEX:
        return IGNORE_COLOUR
    return CLASS_COLOURS[0] if index == 0 else CLASS_COLOURS[1 + (index - 1) % (len(CLASS_COLOURS) - 1)]


def as_rgb(image) -> np.ndarray:
    """A float RGB copy (H, W, 3) of a gray or RGB image in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image.copy()
    return np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=-1)


def overlay_rgb(image, mask, alpha: float = 0.45, classes=None, contour: bool = False) -> np.ndarray:
    """An RGB float image: `image` with the labels of `mask` tinted on top (ignore pixels light grey).

    classes: which class indices to show (default every class but background, and ignore); contour: draw
    only the boundaries of each class.
    """
    rgb = as_rgb(image)
    mask = np.asarray(mask)
    shown = [int(v) for v in np.unique(mask) if v != 0] if classes is None else classes
    outlines = label_boundaries(mask) if contour else None
    for index in shown:
        region = mask == index
        if contour:
            region &= outlines  # the class's own pixels along its outline
        weight = 1.0 if contour else alpha
        rgb[region] = (1 - weight) * rgb[region] + weight * class_colour(index)
    return rgb.clip(0, 1)


def add_legend(fig, classes, with_ignore: bool = False):
    """A legend of class colours (every class but background) below the figure's axes."""
    from matplotlib.patches import Patch

    handles = [Patch(color=class_colour(k), label=name) for k, name in enumerate(classes) if k]
    if with_ignore:
        handles.append(Patch(color=IGNORE_COLOUR, label="ignore / no label"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return fig


def panel_size(shape, width: float = 3.0) -> tuple[float, float]:
    """(width, height) in inches of a panel showing an image of `shape`, keeping its aspect ratio."""
    return width, width * shape[0] / shape[1]


def show_pairs(images, masks, titles, classes=None, columns: int = 4, width: float = 2.8, contour: bool = False):
    """A figure with one overlay panel per pair, titled, and a class legend when `classes` is given."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(titles) // columns))
    panel_w, panel_h = panel_size(np.shape(masks[0]), width) if len(masks) else (width, width)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel_w, rows * panel_h + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, mask, title in zip(axes.ravel(), images, masks, titles):
        ax.imshow(overlay_rgb(image, mask, contour=contour))
        ax.set_title(title, fontsize=9)
    if classes is not None:
        add_legend(fig, classes, any((np.asarray(m) == IGNORE_INDEX).any() for m in masks))
    fig.tight_layout(rect=(0, 0.06 if classes is not None else 0, 1, 1))
    return fig


def plot_learning_curves(history: dict, best_epoch: int | None = None):
    """Loss and foreground IoU per epoch, train vs val, with the kept (best val loss) epoch marked."""
    import matplotlib.pyplot as plt

    keys = [key for key in ("loss", "iou_score") if key in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes.ravel(), keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label=f"train {key}")
        ax.plot(epochs, history[f"val_{key}"], label=f"val {key}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.legend()
    axes[0, 0].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_predictions(data, predictions: dict, names, classes, max_examples: int = 4):
    """Rows of (image, mask, prediction) overlays for some examples, each image at its own aspect ratio."""
    import matplotlib.pyplot as plt

    names = list(names)[:max_examples]
    shapes = [predictions[name].shape for name in names]
    panel_w, panel_h = panel_size(max(shapes, key=lambda s: s[0] / s[1]), 3.0)
    fig, axes = plt.subplots(len(names), 3, figsize=(3 * panel_w, len(names) * panel_h + 0.6), squeeze=False)
    for row, name in zip(axes, names):
        image, mask = data.get_image(name), data.get_mask(name)
        for ax, (title, labels) in zip(row, (("image", None), ("mask", mask), ("prediction", predictions[name]))):
            ax.imshow(as_rgb(image) if labels is None else overlay_rgb(image, labels))
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.axis("off")
    add_legend(fig, classes, any((data.get_mask(name) == IGNORE_INDEX).any() for name in names))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
