"""What is in a dataset folder, file by file: inventory of stored shapes and dtypes, class pixel fractions
and intensity histograms, for notebook 01. Judgements about the data (flags) belong to audit.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import loader


def stored_format(path: Path) -> str:
    """The file's own shape and dtype as stored (before the loader converts anything)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the file: reads the header only
        return f"{'x'.join(map(str, array.shape))} {array.dtype}"
    with Image.open(path) as img:
        return f"{img.height}x{img.width} {img.mode}"


def inventory(data: loader.DataLoader) -> list[dict]:
    """One row per pair: the two files, their stored formats and the mask's pixel count per class."""
    rows = []
    for name, (image_path, mask_path) in data.pairs.items():
        counts = np.bincount(data.get_mask(name).ravel(), minlength=data.n_classes)
        rows.append({
            "name": name,
            "image": f"{image_path.parent.name}/{image_path.name}",
            "image format": stored_format(image_path),
            "mask": f"{mask_path.parent.name}/{mask_path.name}",
            "mask format": stored_format(mask_path),
            **{label: int(n) for label, n in zip(data.labels, counts)},
        })
    return rows


def class_fractions(data: loader.DataLoader) -> dict[str, float]:
    """Share of all mask pixels that carry each label, over the whole dataset."""
    counts = sum(np.bincount(data.get_mask(n).ravel(), minlength=data.n_classes) for n in data.names)
    return {label: float(c / counts.sum()) for label, c in zip(data.labels, counts)}


def intensity_by_class(data: loader.DataLoader, bins: int = 64):
    """Histogram of image intensities (0..1) under each label, pooled over all examples: (edges, {label: counts})."""
    edges = np.linspace(0, 1, bins + 1)
    hist = {label: np.zeros(bins, dtype=np.int64) for label in data.labels}
    for name in data.names:
        image, mask = data.get_image(name)[..., 0], data.get_mask(name)
        for k, label in enumerate(data.labels):
            hist[label] += np.histogram(image[mask == k], bins=edges)[0]
    return edges, hist


def plot_intensity_by_class(data: loader.DataLoader):
    """A figure of `intensity_by_class` as density curves, one per label."""
    import matplotlib.pyplot as plt

    edges, hist = intensity_by_class(data)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(6, 3))
    for label, counts in hist.items():
        if counts.sum():
            ax.plot(centres, counts / counts.sum(), label=f"{label} ({counts.sum():,} px)")
    ax.set_xlabel("image intensity")
    ax.set_ylabel("share of the class's pixels")
    ax.legend()
    fig.tight_layout()
    return fig
