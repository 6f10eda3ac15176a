"""Checks of what the loader hands to the model: batch properties, tracing items to their source pair by
content, split and epoch-coverage tables, and proof that augmentation moves image and mask together.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter

import numpy as np

from maskpair.data import loader as loader_module
from maskpair.data.batches import one_hot
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.reading import image_to_float


def compact_summary(images, labels) -> dict:
    """Shapes, dtypes and value ranges of a compact batch (images as stored, uint8 label maps), and the share of
    pixels without target (IGNORE_INDEX: ignore and padding)."""
    images, labels = np.asarray(images), np.asarray(labels)
    return {
        "images": f"{images.shape} {images.dtype} [{images.min():g}, {images.max():g}]",
        "label maps": f"{labels.shape} {labels.dtype} values {sorted(np.unique(labels).tolist())}",
        "pixels without target": f"{np.mean(labels == IGNORE_INDEX):.1%}",
    }


def expand_compact(images, labels, n_classes: int):
    """A compact batch as the model sees it, made in numpy: float32 images in [0, 1] (what the model's call does
    to stored pixels) and float32 one-hot targets (what its loss makes of the label maps)."""
    return image_to_float(np.asarray(images)), one_hot(np.asarray(labels), n_classes)


def batch_summary(images, masks) -> dict:
    """Shapes, dtypes, value ranges and whether every pixel's one-hot row sums to exactly 1 (or 0: no target)."""
    images, masks = np.asarray(images), np.asarray(masks)
    sums = masks.sum(-1)
    return {
        "images": f"{images.shape} {images.dtype} [{images.min():.3f}, {images.max():.3f}]",
        "masks": f"{masks.shape} {masks.dtype} values {sorted(np.unique(masks).tolist())}",
        "one-hot rows sum to 1 (or 0: ignore/padding)": bool(np.isin(sums, (0.0, 1.0)).all()),
        "pixels without target": f"{np.mean(sums == 0):.1%}",
    }


def labels_of(onehot) -> np.ndarray:
    """One-hot targets (..., K) back to class indices, IGNORE_INDEX where a row is all zero."""
    onehot = np.asarray(onehot)
    return np.where(onehot.sum(-1) > 0, np.argmax(onehot, -1), IGNORE_INDEX).astype(np.uint8)


def _fingerprint(image) -> str:
    """Content hash of an image in [0, 1], robust to float32 round-off (compares the 8-bit values)."""
    return hashlib.sha1(np.round(np.asarray(image, np.float32) * 255).astype(np.uint8).tobytes()).hexdigest()


class ContentIndex:
    """Find which source pair a batch item came from by its pixels, not by any bookkeeping of the loader."""

    def __init__(self, data: loader_module.DataLoader):
        self.data = data
        self._by_image, self._shapes = {}, set()
        for name in data.names:
            image = data.get_image(name)
            self._by_image[_fingerprint(image)] = name
            self._shapes.add(image.shape[:2])

    def trace(self, images, masks) -> list[str]:
        """Source name of each batch item; raises if an image is unknown or its mask is not that pair's mask.

        A padded item is matched by its top-left corner at each image size of the dataset."""
        names = []
        for image, onehot in zip(images, masks):
            found = [self._by_image.get(_fingerprint(image[:h, :w])) for h, w in self._shapes
                     if h <= image.shape[0] and w <= image.shape[1]]
            name = next((n for n in found if n is not None), None)
            if name is None:
                raise AssertionError("a batch image matches no source image")
            mask = self.data.get_mask(name)
            if not np.array_equal(labels_of(onehot[: mask.shape[0], : mask.shape[1]]), mask):
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
    Pixels moved in from outside the image carry no target (IGNORE_INDEX) and are left out.
    """
    mask = np.asarray(mask)
    geometry_only = dataclasses.replace(augment, brightness=0.0, contrast=0.0, gamma=(1.0, 1.0))
    scale = max(1, int(mask.max()))
    image, moved_mask = geometry_only.apply(mask.astype(np.float32) / scale, mask, np.random.default_rng(seed))
    inside = moved_mask != IGNORE_INDEX
    return float(np.mean(np.round(image[inside] * scale) == moved_mask[inside]))
