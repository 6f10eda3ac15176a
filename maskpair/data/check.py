"""`check`: read and validate every pair of a folder without keeping them, and summarise it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from maskpair.data.description import IGNORE_INDEX, IGNORE_LABEL, read_declared
from maskpair.data.files import find_pairs
from maskpair.data.inspection import (
    default_workers,
    inspect_folder,
    map_names,
    problem_lines,
)
from maskpair.data.reading import dims_text, read_pair, reduced_size
from maskpair.errors import DataError


def check_dataset(data_dir):
    """Read and validate every pair without keeping them: (description, summary, problems); description and
    summary are None when there are problems."""
    try:
        return check_declared(data_dir, read_declared(data_dir))
    except DataError as err:
        return None, None, err.problems


def check_declared(data_dir, declared: dict, progress=None):
    """`check_dataset` with the dataset.json fields `declared` (read_declared's) instead of the folder's own."""
    workers = default_workers()
    try:
        description, pairs, _, problems = inspect_folder(data_dir, workers, progress, declared)
    except DataError as err:
        return None, None, err.problems

    def measure(name):  # every check is made at the files' own size: no time spent reducing
        image, labels = read_pair(*pairs[name], description, full_size=True)
        return image.shape, image.dtype, np.bincount(labels.ravel(), minlength=IGNORE_INDEX + 1)

    unchecked = [name for name in pairs if name not in problems]
    measured, more = map_names(measure, unchecked, workers, len(pairs) >= 200 if progress is None else progress,
                               "checking")
    problems.update(more)
    if problems:
        return None, None, problem_lines(problems, pairs)
    counts = np.sum([pixels for _, _, pixels in measured.values()], axis=0)
    label_pixels = dict(zip(description.classes, counts[: description.n_classes].tolist()))
    if description.ignore_value is not None or description.roi:
        label_pixels[IGNORE_LABEL] = int(counts[IGNORE_INDEX])
    found = find_pairs(data_dir, declared)
    summary = {
        "pairs": len(pairs),
        "sizes": sorted({shape[:2] for shape, _, _ in measured.values()}),
        "channels": description.n_channels,
        "image_dtypes": sorted({str(dtype) for _, dtype, _ in measured.values()}),
        "label_pixels": label_pixels,
        "unpaired_images": len(found.unpaired_images),
        "outside": found.outside,
        "reduced": sum(reduced_size(shape[:2], description.max_size) != shape[:2]
                       for shape, _, _ in measured.values()),
        "max_size": description.max_size,
    }
    return description, summary, []


def format_summary(data_dir, summary) -> str:
    """The check's summary: pairs, sizes, channels, dtypes, what was left out, then pixels per label."""
    total = sum(summary["label_pixels"].values()) or 1
    sizes = summary["sizes"]
    size_text = (dims_text(sizes[0]) if len(sizes) == 1 else
                 f"{len(sizes)} sizes from {dims_text(sizes[0])} to {dims_text(sizes[-1])}")
    channels = "1 channel" if summary["channels"] == 1 else f"{summary['channels']} channels"
    dtypes = "/".join(summary["image_dtypes"])
    lines = [f"{Path(data_dir)}: {summary['pairs']} pairs, {size_text}, {channels}, images {dtypes}"]
    if summary.get("reduced"):
        lines.append(f"  {summary['reduced']} pairs larger than max_size {summary['max_size']}: read at a reduced "
                     f"size (longer side {summary['max_size']})")
    if summary.get("unpaired_images"):
        lines.append(f"  {summary['unpaired_images']} images without a mask, left out (unpaired_images: skip)")
    if summary.get("outside"):
        lines.append(f"  {summary['outside']} files that fit no template, left alone")
    lines += [f"  {label:<12}{n:>12,d} px  {100 * n / total:6.2f}%" for label, n in summary["label_pixels"].items()]
    return "\n".join(lines)
