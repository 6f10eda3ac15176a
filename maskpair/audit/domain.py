"""Domain checks that the description's `audit` switches turn on: levels of two classes that alternate along a
column (`alternating`: order_gap) and labels that end short of where most masks' labels end (`extent`:
short_column)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from maskpair.audit.content import MIN_MASKS
from maskpair.data.description import DESCRIPTION_FILE, IGNORE_INDEX
from maskpair.data.reading import image_to_float
from maskpair.errors import DataError

MIN_LEVEL_AREA = 20     # px; smaller components are specks, not levels
LEVEL_LIKE = 0.5        # beyond the end, at least half-way from the between-levels intensity to a level's
SHORT_COLUMN = 0.15     # of the image height: how much further from an edge than the median mask's labels may end
AUDIT_SWITCHES = {"alternating": "two class names whose levels alternate top to bottom (order_gap)",
                  "extent": "true: flag labels that end far short of where most masks' labels end (short_column)"}


def checked_options(options, labels) -> dict:
    """The description's audit switches, validated against AUDIT_SWITCHES and the class names (DataError)."""
    options = dict(options or {})
    problems = [f"{DESCRIPTION_FILE}: audit switch {key!r} is unknown (known: {', '.join(AUDIT_SWITCHES)})"
                for key in options if key not in AUDIT_SWITCHES]
    pair = options.get("alternating")
    if pair is not None and (not isinstance(pair, (list, tuple)) or len(pair) != 2
                             or not set(pair) <= set(labels[1:]) or pair[0] == pair[1]):
        problems.append(f"{DESCRIPTION_FILE}: audit.alternating must name two different classes other than the "
                        f"background ({', '.join(labels[1:])}), got {pair!r}")
    if not isinstance(options.get("extent", False), bool):
        problems.append(f"{DESCRIPTION_FILE}: audit.extent must be true or false, got {options['extent']!r}")
    if problems:
        raise DataError(problems)
    return options



def gray(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1]: the mean of the channels of an (H, W) or (H, W, C) uint8/float image."""
    image = image_to_float(np.asarray(image))
    return image.mean(axis=2) if image.ndim == 3 else image



def levels(mask: np.ndarray, labels, classes) -> list[dict]:
    """The components of the two alternating classes (specks dropped) as levels sorted from top to bottom, each
    with its centre, size and parts ((component map, index) pairs; `level_pixels` gives their pixels)."""
    found = []
    rows, cols = np.indices(mask.shape)
    for label in classes:
        components, _ = ndimage.label(mask == labels.index(label))
        flat = components.ravel()
        sizes = np.bincount(flat)
        row_sums, col_sums = np.bincount(flat, rows.ravel()), np.bincount(flat, cols.ravel())
        for index in np.flatnonzero(sizes[1:] >= MIN_LEVEL_AREA) + 1:
            found.append({"label": label, "row": row_sums[index] / sizes[index], "col": col_sums[index] / sizes[index],
                          "size": int(sizes[index]), "parts": [(components, index)]})
    return merge_side_by_side(sorted(found, key=lambda level: level["row"]))



def level_pixels(level: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a level's pixels."""
    rows, cols = zip(*(np.nonzero(components == index) for components, index in level["parts"]))
    return np.concatenate(rows), np.concatenate(cols)



def merge_side_by_side(found: list[dict]) -> list[dict]:
    """Join neighbouring same-class pieces that sit at one height (a level drawn in two parts is one level)."""
    if len(found) < 3:
        return found
    spacing = np.median(np.diff([level["row"] for level in found]))
    merged = [found[0]]
    for level in found[1:]:
        last = merged[-1]
        if level["label"] == last["label"] and level["row"] - last["row"] < 0.6 * spacing:
            size = last["size"] + level["size"]
            merged[-1] = {"label": level["label"], "size": size, "parts": last["parts"] + level["parts"],
                          **{axis: (last[axis] * last["size"] + level[axis] * level["size"]) / size
                             for axis in ("row", "col")}}
        else:
            merged.append(level)
    return merged



def order_gaps(column: list[dict]) -> list[str]:
    """order_gap flags for consecutive same-class levels, each placed in the top or bottom half."""
    flags = []
    for k in range(1, len(column)):
        if column[k]["label"] == column[k - 1]["label"]:
            end = "top" if k <= len(column) / 2 else "bottom"
            flags.append(f"order_gap:{column[k]['label']}-{column[k]['label']}@{end}")
    return flags



def beyond_end_likeness(image: np.ndarray, column: list[dict], label: str) -> dict[str, float | None]:
    """How much the image one level beyond each end of the column looks like a `label` level (0 = like the gap
    between two of them, 1 = like the outermost one).

    The outermost level's pixels are moved on by half and by one level-to-level step; None where that leaves
    the frame or the column has fewer than two `label` levels.
    """
    ones = [level for level in column if level["label"] == label]
    result = {"top": None, "bottom": None}
    if len(ones) < 2:
        return result
    for end, outer, inner in (("top", ones[0], ones[1]), ("bottom", ones[-1], ones[-2])):
        step = np.array([outer["row"] - inner["row"], outer["col"] - inner["col"]])
        pixels = level_pixels(outer)
        at_level, between, beyond = (_mean_moved(image, pixels, step * k) for k in (0, 0.5, 1))
        if beyond is not None and between is not None and abs(at_level - between) > 1e-3:
            result[end] = round((beyond - between) / (at_level - between), 3)
    return result



def _mean_moved(image, pixels, step):
    """Mean image value under `pixels` (rows, cols) moved by step; None if 10% of them leave the frame."""
    rows, cols = pixels[0] + round(step[0]), pixels[1] + round(step[1])
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    return float(image[rows[inside], cols[inside]].mean()) if inside.mean() >= 0.9 else None



def anatomical_order(image, mask, labels, alternating) -> tuple[list[str], dict]:
    """Flags and measures for the alternation of two classes' levels along the column (e.g. discs and
    vertebrae): same-class neighbours, and an unlabelled level of the first class beyond either end."""
    column = levels(mask, labels, alternating)
    both_present = {level["label"] for level in column} == set(alternating)
    flags = order_gaps(column) if both_present else []  # a class missing altogether is missing_class
    likeness = beyond_end_likeness(gray(image), column, alternating[0])
    flags += [f"order_gap:unlabelled_{alternating[0]}@{end}" for end, value in likeness.items()
              if value is not None and value >= LEVEL_LIKE]
    measures = {"sequence": "".join(level["label"][0].upper() for level in column),
                f"{alternating[0]}_likeness_beyond": likeness}
    return flags, measures



def labelled_rows(mask: np.ndarray) -> tuple[int, int] | None:
    """(first, last) row holding any class but the background (ignore pixels do not count); None if none does."""
    mask = np.asarray(mask)
    rows = np.flatnonzero(((mask != 0) & (mask != IGNORE_INDEX)).any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else None



def edge_margins(mask: np.ndarray) -> tuple[float, float] | None:
    """(top, bottom): the unlabelled rows above the first and below the last labelled row, as shares of the
    mask's height; None for an empty mask."""
    span, height = labelled_rows(mask), mask.shape[0]
    return None if span is None else (span[0] / height, (height - 1 - span[1]) / height)



def short_column_flags(margins) -> list[list[str]]:
    """short_column flags per mask from its `edge_margins` (None: empty): labels that end further from the top or
    bottom of the image than the median non-empty mask's, by more than SHORT_COLUMN of the height. Where most
    masks label a structure up to the frame's edge, this finds the masks whose annotation stops short (what the
    image shows beyond stays unlabelled and is taught, and scored, as background). No flags with fewer than
    MIN_MASKS non-empty masks."""
    known = [margin for margin in margins if margin is not None]
    if len(known) < MIN_MASKS:
        return [[] for _ in margins]
    typical = np.median(known, axis=0)
    flags = []
    for margin in margins:
        excess = [] if margin is None else [own - usual for own, usual in zip(margin, typical)]
        flags.append([f"short_column:{end}" for end, extra in zip(("top", "bottom"), excess) if extra > SHORT_COLUMN])
    return flags
