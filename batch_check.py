"""Checks of what the loader hands to the model: batch properties, tracing items to their source pair by
content, split and epoch-coverage tables, and proof that augmentation moves image and mask together.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

import loader as loader_module


def batch_summary(images, masks) -> dict:
    """Shapes, dtypes, value ranges and whether every pixel's one-hot vector sums to exactly 1."""
    images, masks = np.asarray(images), np.asarray(masks)
    return {
        "images": f"{images.shape} {images.dtype} [{images.min():.3f}, {images.max():.3f}]",
        "masks": f"{masks.shape} {masks.dtype} values {sorted(np.unique(masks).tolist())}",
        "one-hot sums to 1": bool(np.array_equal(masks.sum(-1), np.ones(masks.shape[:-1]))),
    }


def _fingerprint(image) -> str:
    """Content hash of an image in [0, 1], robust to float32 round-off (compares the 8-bit values)."""
    return hashlib.sha1(np.round(np.asarray(image, np.float32) * 255).astype(np.uint8).tobytes()).hexdigest()


class ContentIndex:
    """Find which source pair a batch item came from by its pixels, not by any bookkeeping of the loader."""

    def __init__(self, data: loader_module.DataLoader):
        self.data = data
        self._by_image = {_fingerprint(data.get_image(name)): name for name in data.names}

    def trace(self, images, masks) -> list[str]:
        """Source name of each batch item; raises if an image is unknown or its mask is not that pair's mask."""
        names = []
        for image, onehot in zip(images, masks):
            name = self._by_image.get(_fingerprint(image))
            if name is None:
                raise AssertionError("a batch image matches no source image")
            if not np.array_equal(np.argmax(onehot, -1), self.data.get_mask(name)):
                raise AssertionError(f"batch item with image {name} carries another example's mask")
            names.append(name)
        return names


def split_table(data: loader_module.DataLoader) -> list[dict]:
    """One row per split: size and names, plus whether the splits are disjoint and cover every example."""
    listed = [name for names in data.splits.values() for name in names]
    disjoint = len(listed) == len(set(listed))
    complete = sorted(listed) == sorted(data.names)
    rows = [{"split": split, "size": len(names), "names": " ".join(names)} for split, names in data.splits.items()]
    rows.append({"split": "all", "size": len(data.names), "names": f"disjoint={disjoint} complete={complete}"})
    return rows


def epoch_coverage(data: loader_module.DataLoader, split: str = "train", epochs: int = 3) -> dict[str, list[int]]:
    """{name: [times seen in epoch 0, 1, ...]} for `split`, counted from the batches `get_batch` yields."""
    index = ContentIndex(data)
    counts = [Counter() for _ in range(epochs)]
    batches = data.get_batch(split)
    for epoch in range(epochs):
        for _ in range(data.steps_per_epoch(split)):
            counts[epoch].update(index.trace(*next(batches)))
    return {name: [c[name] for c in counts] for name in data.splits[split]}


def augmentation_agreement(augment: loader_module.Augment, mask, seed: int) -> float:
    """Share of pixels where a label-coded image, augmented like an image, lands on the augmented mask's label.

    The image channel is replaced by the labels themselves; if geometry is applied identically to image and
    mask, rounding the (linearly interpolated) image gives back the mask everywhere but at label boundaries.
    """
    mask = np.asarray(mask)
    geometry_only = loader_module.Augment(**{**augment.__dict__, "brightness": 0.0, "contrast": 0.0, "gamma": (1.0, 1.0)})
    labels_as_image = mask.astype(np.float32) / max(1, mask.max())
    image, moved_mask = geometry_only.apply(labels_as_image, mask, np.random.default_rng(seed))
    return float(np.mean(np.round(image * max(1, mask.max())) == moved_mask))
