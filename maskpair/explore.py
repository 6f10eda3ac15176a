"""What is in a dataset folder, file by file: inventory of stored shapes and dtypes, class pixel fractions,
which examples contain each class and intensity histograms, for notebooks 01 and 04. Judgements about the data
(flags) belong to `maskpair.audit`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data.description import IGNORE_INDEX


def stored_format(path: Path) -> str:
    """The file's own shape and dtype as stored (before the loader converts anything)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the file: reads the header only
        return f"{'x'.join(map(str, array.shape))} {array.dtype}"
    with Image.open(path) as img:
        return f"{img.height}x{img.width} {img.mode}"


def pixel_counts(mask: np.ndarray, n_classes: int) -> tuple[np.ndarray, int]:
    """(pixels of each class index, ignore pixels) of one label map."""
    counts = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
    return counts[:n_classes], int(counts[IGNORE_INDEX])


def inventory(data) -> list[dict]:
    """One row per pair: the two files, their stored formats and the mask's pixel count per class (and ignore)."""
    rows = []
    for name, (image_path, mask_path) in data.pairs.items():
        counts, ignored = pixel_counts(data.get_mask(name), data.n_classes)
        rows.append({
            "name": name,
            "image": f"{image_path.parent.name}/{image_path.name}",
            "image format": stored_format(image_path),
            "mask": f"{mask_path.parent.name}/{mask_path.name}",
            "mask format": stored_format(mask_path),
            **{label: int(n) for label, n in zip(data.labels, counts)},
            "ignore": ignored,
        })
    return rows


def class_fractions(data) -> dict[str, float]:
    """Share of all mask pixels that carry each class (and `ignore`), over the whole dataset."""
    counts, ignored = np.zeros(data.n_classes, np.int64), 0
    for name in data.names:
        own, own_ignored = pixel_counts(data.get_mask(name), data.n_classes)
        counts, ignored = counts + own, ignored + own_ignored
    total = max(1, counts.sum() + ignored)
    shares = {label: float(c / total) for label, c in zip(data.labels, counts)}
    return {**shares, "ignore": ignored / total} if ignored else shares


def class_presence(data, names) -> dict[str, int]:
    """How many of `names` contain each class at all."""
    present = np.zeros(data.n_classes, np.int64)
    for name in names:
        present += pixel_counts(data.get_mask(name), data.n_classes)[0] > 0
    return dict(zip(data.labels, present.tolist()))


def intensity_by_class(data, bins: int = 64):
    """Histogram of image brightness (0..1, the mean over channels) under each class, pooled over all examples:
    (edges, {class: counts})."""
    edges = np.linspace(0, 1, bins + 1)
    hist = {label: np.zeros(bins, dtype=np.int64) for label in data.labels}
    for name in data.names:
        brightness, mask = data.get_image(name).mean(axis=-1), data.get_mask(name)
        for k, label in enumerate(data.labels):
            hist[label] += np.histogram(brightness[mask == k], bins=edges)[0]
    return edges, hist


def plot_intensity_by_class(data):
    """A figure of `intensity_by_class` as density curves, one per class, in the classes' own colours."""
    import matplotlib.pyplot as plt

    from maskpair import figures

    edges, hist = intensity_by_class(data)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for k, (label, counts) in enumerate(hist.items()):
        if counts.sum():
            colour = "black" if k == 0 else figures.class_colour(k)
            ax.plot(centres, counts / counts.sum(), color=colour, label=f"{label} ({counts.sum():,} px)")
    ax.set_xlabel("image brightness (mean over channels)")
    ax.set_ylabel("share of the class's pixels")
    ax.legend(fontsize=7, ncol=2 if len(hist) > 6 else 1)
    fig.tight_layout()
    return fig
