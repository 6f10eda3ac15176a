"""Everything known about a data folder before any pixel is kept: its description (dataset.json, completed from
the files where it is silent), its pairs and every file's header, and the problems found on the way."""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskpair.data.description import (
    CHANNEL_COUNTS,
    DESCRIPTION_FILE,
    MAX_CLASSES,
    DatasetDescription,
    read_declared,
)
from maskpair.data.files import pair_declared
from maskpair.data.reading import (
    FileHeader,
    header_problems,
    read_header,
    read_mask_values,
)
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



def _pair_headers(paths) -> tuple[FileHeader, FileHeader]:
    """The headers of (image, mask); both files' problems together."""
    headers, problems = [], []
    for path, mask in zip(paths, (False, True)):
        try:
            headers.append(read_header(path, mask))
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



def _inferred_labels(data_dir, pairs, names, workers, progress):
    """({"value": value} for every distinct mask value of `names`, {name: problem lines})."""
    distinct, problems = map_names(lambda name: np.unique(read_mask_values(pairs[name][1])), names, workers,
                                    progress, "reading masks")
    values = np.unique(np.concatenate(list(distinct.values()))) if distinct else np.array([])
    if len(values) > MAX_CLASSES:
        listed = ", ".join(f"{v:g}" for v in values[:8])
        raise DataError(f"{data_dir}: the masks hold {len(values)} distinct values ({listed}, ...); at most "
                        f"{MAX_CLASSES} classes: give the labels in {DESCRIPTION_FILE}")
    return {str(int(v)): int(v) for v in values}, problems



def inspect_folder(data_dir, workers: int, progress=None):
    """Everything known before any pixel is kept: (description, pairs, headers, problems {name: lines}).

    Reads every file's header; reads every mask only when the labels have to be inferred."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    declared = read_declared(data_dir)
    pairs = pair_declared(data_dir, declared)
    progress = len(pairs) >= 200 if progress is None else progress
    headers, problems = map_names(lambda name: _pair_headers(pairs[name]), list(pairs), workers)
    channel_names = declared.get("channel_names") or _inferred_channel_names(headers)
    for name, pair_headers in headers.items():
        lines = header_problems(pairs[name], pair_headers, len(channel_names), "channel_names" in declared)
        if lines:
            problems[name] = lines
    labels = declared.get("labels")
    if labels is None:
        labels, more = _inferred_labels(data_dir, pairs, [n for n in pairs if n not in problems], workers, progress)
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
