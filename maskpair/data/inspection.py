"""Everything known about a data folder before any pixel is kept: its description (dataset.json, completed from
the files where it is silent), its pairs and every file's header, and the problems found on the way."""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskpair.data import encoding
from maskpair.data.description import (
    CHANNEL_COUNTS,
    DESCRIPTION_FILE,
    MAX_CLASSES,
    DatasetDescription,
    read_declared,
)
from maskpair.data.files import find_pairs, short_path
from maskpair.data.reading import (
    FileHeader,
    dims_text,
    header_problems,
    read_header,
)
from maskpair.data.templates import Template
from maskpair.errors import DataError


def progress_bar(iterable, total, enabled, desc, unit="pair"):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)



def map_names(read, names, workers: int, progress: bool = False, desc: str = ""):
    """Run `read(name)` for every name in threads: ({name: result}, {name: problem lines}), each in `names` order.

    PNG/zlib decoding and np.load release the GIL, so the threads overlap."""

    def attempt(name):
        try:
            return read(name), None
        except DataError as err:
            return None, err.problems

    results, problems = {}, {}
    with ThreadPoolExecutor(max(1, min(workers, len(names)))) as pool:
        for name, (result, lines) in zip(names, progress_bar(pool.map(attempt, names), len(names), progress, desc)):
            if lines:
                problems[name] = lines
            else:
                results[name] = result
    return results, problems



def _pair_headers(paths, roi=None) -> tuple[FileHeader, FileHeader]:
    """The headers of (image, mask); both files' problems together, and the ROI file's (`roi`: its path) size."""
    headers, problems = [], []
    for path, mask in zip(paths, (False, True)):
        try:
            headers.append(read_header(path, mask))
        except DataError as err:
            problems += err.problems
    if roi is not None and headers:
        try:
            size = read_header(roi, mask=True).size
            if size != headers[0].size:
                problems.append(f"{short_path(roi)}: ROI shape {dims_text(size)}, image {short_path(paths[0])} is "
                                f"{dims_text(headers[0].size)}")
        except DataError as err:
            problems += err.problems
    if problems:
        raise DataError(problems)
    return tuple(headers)


def _inferred_channel_names(headers) -> dict:
    """Channels of a dataset without channel_names: those of most images, gray (1) or RGB (3); the images
    with another count are then errors, so one stray colour image is named, not every gray one."""
    counts = Counter(image.channels for image, _ in headers.values() if image.channels in CHANNEL_COUNTS)
    n_channels = max(counts, key=lambda n: (counts[n], n)) if counts else 1
    return {"0": "R", "1": "G", "2": "B"} if n_channels == 3 else {"0": "gray"}


def _distinct_pixels(path, lossy: bool):
    """(distinct values or packed colours of one mask, their pixel counts, True if colours)."""
    from maskpair.data.reading import (
        _mask_pixels,  # the one place that knows every mask encoding
    )

    pixels, _ = _mask_pixels(path, colour=False, lossy=lossy)
    if pixels.ndim == 3:
        distinct, counts = np.unique(encoding.packed_colours(pixels), return_counts=True)
        return distinct, counts, True
    if lossy and pixels.dtype.kind == "f":
        pixels = np.round(pixels).astype(np.int64)
    distinct, counts = np.unique(pixels, return_counts=True)
    return distinct, counts, False


def _inferred_labels(data_dir, pairs, names, workers, progress, lossy: bool = False):
    """({name: value} for every distinct mask value of `names` (colours "#rrggbb" when any mask is a colour
    mask; for lossy masks, the values most pixels are near), {name: problem lines})."""
    found, problems = map_names(lambda name: _distinct_pixels(pairs[name][1], lossy), names, workers, progress,
                                "reading masks")
    colour = any(is_colour for _, _, is_colour in found.values())
    totals = Counter()
    for distinct, counts, is_colour in found.values():
        if colour and not is_colour:  # a gray mask among colour ones: its values are gray colours
            distinct = distinct.astype(np.int64) * 0x10101
        totals.update(dict(zip(distinct.tolist(), counts.tolist())))
    values = sorted(lossy_centres(totals, colour) if lossy else totals)
    if colour and lossy and all(v == (v & 255) * 0x10101 for v in values):  # gray JPEG masks stored as RGB
        colour, values = False, [v & 255 for v in values]
    if len(values) > MAX_CLASSES:
        listed = ", ".join(encoding.colour_text(v) if colour else f"{v:g}" for v in values[:8])
        raise DataError(f"{data_dir}: the masks hold {len(values)} distinct {'colours' if colour else 'values'} "
                        f"({listed}, ...); at most {MAX_CLASSES} classes: give the labels in {DESCRIPTION_FILE}")
    if colour:
        return {encoding.colour_text(v): encoding.colour_text(v) for v in values}, problems
    return {str(int(v)): int(v) for v in values}, problems


def lossy_centres(totals: Counter, colour: bool) -> list:
    """The label values (packed colours) of lossy masks from {value: pixels}: the most frequent value, then each
    next most frequent one farther than FAR_LEVELS from every value kept, if it holds at least 0.1% of the pixels
    (JPEG's own stray values around edges are many, each rare)."""
    def channels(v):
        return ((v >> 16) & 255, (v >> 8) & 255, v & 255) if colour else (v,)

    total = sum(totals.values())
    centres = []
    for value, count in totals.most_common():
        if centres and count < 0.001 * total:
            break
        if all(max(abs(a - b) for a, b in zip(channels(value), channels(c))) > encoding.FAR_LEVELS for c in centres):
            centres.append(value)
    return centres


def inspect_folder(data_dir, workers: int, progress=None, declared: dict | None = None):
    """Everything known before any pixel is kept: (description, pairs, headers, problems {name: lines}).

    Reads every file's header; reads every mask only when the labels have to be inferred. `declared`: the
    dataset.json fields to use instead of the folder's own (`read_declared`)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    declared = read_declared(data_dir) if declared is None else declared
    pairs = find_pairs(data_dir, declared).pairs
    progress = len(pairs) >= 200 if progress is None else progress
    roi = Template.compile(declared["roi"]) if declared.get("roi") else None
    headers, problems = map_names(lambda name: _pair_headers(pairs[name], roi and roi.path_of(data_dir, name)),
                                  list(pairs), workers)
    channel_names = declared.get("channel_names") or _inferred_channel_names(headers)
    for name, pair_headers in headers.items():
        lines = header_problems(pairs[name], pair_headers, len(channel_names), "channel_names" in declared)
        if lines:
            problems[name] = lines
    labels = declared.get("labels")
    if labels is None:
        labels, more = _inferred_labels(data_dir, pairs, [n for n in pairs if n not in problems], workers, progress,
                                        declared.get("lossy_masks", False))
        problems.update(more)
        if not labels:  # no mask could be read: nothing to describe, only problems to report
            raise DataError(problem_lines(problems, pairs))
    description = DatasetDescription(**{**declared, "channel_names": channel_names, "labels": labels})
    return description, pairs, headers, problems


def problem_lines(problems: dict, names) -> list[str]:
    """Every problem line, in the natural order of the examples."""
    return [line for name in names for line in problems.get(name, [])]



def describe(data_dir) -> DatasetDescription:
    """The complete description of `data_dir`: its dataset.json, with labels (the distinct mask values, named
    by value) and channels (those of most images: gray or RGB) inferred where it gives none, or where there is
    none. Reads every file's header, and every mask when labels are inferred; DataError lists every problem."""
    description, pairs, _, problems = inspect_folder(data_dir, default_workers())
    if problems:
        raise DataError(problem_lines(problems, pairs))
    return description



def default_workers() -> int:
    return min(8, (os.cpu_count() or 1) + 2)
