"""Mask encodings: a mask's pixels (label values, or colours for colour-coded masks) to class indices, exactly or,
for lossy masks, by the nearest label; and back (`encode_labels`), to write predictions as the dataset stores masks.

Every value (or colour) of a label maps to its class index (IGNORE_INDEX for `ignore`): a class given as a list
of values is their union. A lossy mask's pixel takes the label whose value (colour) is nearest in the largest
per-channel difference; one farther than FAR_LEVELS from every label is far, and a file with more than
MAX_FAR_SHARE far pixels is refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data.description import (
    DESCRIPTION_FILE,
    IGNORE_INDEX,
    IGNORE_LABEL,
    MAX_CLASSES,
    DatasetDescription,
)
from maskpair.data.files import short_path
from maskpair.errors import DataError

FAR_LEVELS = 32  # of 255, per channel: a lossy pixel farther than this from every label is far
MAX_FAR_SHARE = 0.01  # a lossy mask with more far pixels than this is refused
UNKNOWN = MAX_CLASSES  # in a uint8 lookup: a value in no label (class indices end below it, IGNORE_INDEX above)


def colour_code(colour: str) -> int:
    """"#rrggbb" -> 0xRRGGBB."""
    return int(colour[1:], 16)


def colour_text(code: int) -> str:
    """0xRRGGBB -> "#rrggbb"."""
    return f"#{int(code):06x}"


def packed_colours(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) uint32 0xRRGGBB."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def label_table(description: DatasetDescription) -> tuple[np.ndarray, np.ndarray]:
    """(keys, class indices) sorted by key: every label value (or packed colour) with its class index
    (IGNORE_INDEX for ignore)."""
    rank = {name: k for k, name in enumerate(description.classes)}
    pairs = sorted((colour_code(value) if isinstance(value, str) else value, rank.get(name, IGNORE_INDEX))
                   for name in description.labels for value in description.values_of(name))
    keys = np.array([key for key, _ in pairs], dtype=np.int64)
    return keys, np.array([index for _, index in pairs], dtype=np.int16)


def _where_labels(description: DatasetDescription) -> str:
    where = f"{DESCRIPTION_FILE} labels" if description.declared else "the labels found in the masks"
    return f"{where} ({description.labels_text()})"


def _listed(items, text=str) -> str:
    items = list(items)
    return ", ".join(text(v) for v in items[:5]) + (f" (and {len(items) - 5} more)" if len(items) > 5 else "")


def uint8_lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`table[values]` for uint8 (H, W) values and a uint8 table of 256: PIL's point (a C lookup table) is several
    times faster than numpy's gather (bench/README.md)."""
    return np.array(Image.fromarray(values).point(table.tolist()))  # writable, as every label map read


def values_to_labels(values: np.ndarray, description: DatasetDescription, path, hint: str = "") -> np.ndarray:
    """Mask values (H, W) -> uint8 label map; a value in no label is an error naming the file (and `hint`)."""
    keys, index = label_table(description)
    if values.dtype == np.uint8 and values.ndim == 2:
        table = np.full(256, UNKNOWN, np.uint8)  # class indices stop at MAX_CLASSES - 1 < UNKNOWN < IGNORE_INDEX
        fits = (keys >= 0) & (keys <= 255)
        table[keys[fits]] = index[fits]
        found = uint8_lookup(values, table)
        if (found == UNKNOWN).any():
            _unknown_values(values[found == UNKNOWN], description, path, hint)
        return found
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if values.dtype.kind in "iu" and high - low < 2**16:  # a table over the values' range: no search per pixel
        table = np.full(high - low + 1, -1, dtype=np.int16)
        fits = (keys >= low) & (keys <= high)
        table[keys[fits] - low] = index[fits]
        found = table[values - low] if low else table[values]
    else:  # float masks, or values spread wider than a table should be
        position = np.searchsorted(keys, values).clip(0, len(keys) - 1)
        found = np.where(keys[position] == values, index[position], -1)
    unknown = found < 0
    if unknown.any():
        _unknown_values(values[unknown], description, path, hint)
    return found.astype(np.uint8)


def _unknown_values(unknown: np.ndarray, description: DatasetDescription, path, hint: str):
    bad = np.unique(unknown)
    raise DataError(f"{short(path)}: value{'s' if len(bad) > 1 else ''} {_listed(bad, lambda v: f'{v:g}')} "
                    f"{'are' if len(bad) > 1 else 'is'} not in {_where_labels(description)}{hint}")


def colours_to_labels(rgb: np.ndarray, description: DatasetDescription, path) -> np.ndarray:
    """Colour mask (H, W, 3) uint8 -> uint8 label map; a colour in no label is an error naming it."""
    keys, index = label_table(description)
    packed = packed_colours(rgb)
    position = np.searchsorted(keys, packed).clip(0, len(keys) - 1)
    found = np.where(keys[position] == packed, index[position], -1)
    unknown = found < 0
    if unknown.any():
        bad, counts = np.unique(packed[unknown], return_counts=True)
        bad = bad[np.argsort(-counts, kind="stable")]
        raise DataError(f"{short(path)}: colour{'s' if len(bad) > 1 else ''} {_listed(bad, colour_text)} "
                        f"{'are' if len(bad) > 1 else 'is'} not in {_where_labels(description)}")
    return found.astype(np.uint8)


def _label_colours(description: DatasetDescription) -> tuple[np.ndarray, np.ndarray]:
    """(colours (K, 3) int16, class indices (K,)) of every label value: colours as given, gray values v as
    (v, v, v); used to match lossy RGB pixels."""
    keys, index = label_table(description)
    if description.colour_labels:
        rgb = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1)
    else:
        rgb = np.repeat(keys[:, None], 3, axis=1)
    return rgb.astype(np.int16), index


def _far_refused(far: int, total: int, description: DatasetDescription, path) -> None:
    if total and far > MAX_FAR_SHARE * total:
        raise DataError(f"{short(path)}: {100 * far / total:.1f}% of pixels are more than {FAR_LEVELS} levels from "
                        f"every label of {_where_labels(description)}; lossy_masks tolerates at most "
                        f"{100 * MAX_FAR_SHARE:g}% (is this the right file, or are the labels complete?)")


def nearest_values_to_labels(values: np.ndarray, description: DatasetDescription, path) -> np.ndarray:
    """Lossy one-channel mask (H, W) -> uint8 label map: each pixel the label of the nearest value."""
    keys, index = label_table(description)
    if values.dtype.kind == "f":
        values = np.round(values)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if high - low >= 2**16:
        raise DataError(f"{short(path)}: values span {low}..{high}; lossy_masks reads 8- and 16-bit masks")
    if values.dtype == np.uint8 and values.ndim == 2:
        low, high = 0, 255
    levels = np.arange(low, high + 1, dtype=np.int64)
    distance = np.abs(levels[:, None] - keys[None, :])  # (levels, labels)
    nearest = distance.argmin(axis=1)
    far_level = distance[np.arange(len(levels)), nearest] > FAR_LEVELS
    if values.dtype == np.uint8 and values.ndim == 2:
        far = np.count_nonzero(uint8_lookup(values, far_level.astype(np.uint8))) if far_level.any() else 0
        _far_refused(far, values.size, description, path)
        return uint8_lookup(values, index[nearest].astype(np.uint8))
    offsets = (values.astype(np.int64) - low) if low else values
    far = int(far_level[offsets].sum()) if far_level.any() else 0
    _far_refused(far, values.size, description, path)
    return index[nearest].astype(np.uint8)[offsets]


def nearest_colours_to_labels(rgb: np.ndarray, description: DatasetDescription, path) -> np.ndarray:
    """Lossy colour mask (H, W, 3) uint8 -> uint8 label map: each pixel the label of the nearest colour (largest
    per-channel difference; gray labels v compare as (v, v, v))."""
    colours, index = _label_colours(description)
    distinct, inverse = np.unique(packed_colours(rgb).ravel(), return_inverse=True)  # JPEG: a few thousand colours
    distinct_rgb = np.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], axis=-1).astype(np.int16)
    distance = np.abs(distinct_rgb[:, None, :] - colours[None, :, :]).max(axis=-1)  # (distinct, labels)
    nearest = distance.argmin(axis=1)
    far_colour = distance[np.arange(len(distinct)), nearest] > FAR_LEVELS
    far = int(np.bincount(inverse, minlength=len(distinct))[far_colour].sum())
    _far_refused(far, inverse.size, description, path)
    return index[nearest].astype(np.uint8)[inverse].reshape(rgb.shape[:2])


def encode_labels(labels: np.ndarray, description: DatasetDescription) -> np.ndarray:
    """See `DatasetDescription.encode`."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"encode: expected a label map of class indices (integers), got dtype {labels.dtype}")
    n_classes = description.n_classes
    bad = (labels >= n_classes) & (labels != IGNORE_INDEX) | (labels < 0)
    if bad.any():
        raise ValueError(f"encode: class index {int(labels[bad].flat[0])} is not one of 0..{n_classes - 1} or "
                         f"IGNORE_INDEX ({IGNORE_INDEX})")
    firsts = list(description.class_values)
    ignore = description.ignore_value if IGNORE_LABEL in description.labels else firsts[0]
    if description.colour_labels:
        table = np.zeros((IGNORE_INDEX + 1, 3), np.uint8)
        for k, colour in enumerate(firsts):
            table[k] = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        table[IGNORE_INDEX] = [int(ignore[i:i + 2], 16) for i in (1, 3, 5)]
        return table[labels]
    values = firsts + [ignore]
    dtype = next(dtype for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64)
                 if np.iinfo(dtype).min <= min(values) and max(values) <= np.iinfo(dtype).max)
    table = np.zeros(IGNORE_INDEX + 1, dtype)
    table[:n_classes] = firsts
    table[IGNORE_INDEX] = ignore
    return table[labels]


def short(path) -> str:
    return short_path(Path(path))
