"""Content: what each mask holds (classes, components), empty masks, classes missing where most masks have them,
and byte-identical duplicates."""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage

MISSING_CLASS_SHARE = 0.8  # of the non-empty masks that hold a class before its absence is flagged ...
MAJOR_CLASS_SHARE = 0.1    # ... and of their labelled pixels it typically covers
MIN_MASKS = 5           # non-empty masks needed before "most of this dataset's masks" means anything


def class_components(mask: np.ndarray, labels) -> dict[str, dict]:
    """Per non-background class: pixel count, connected-component count, the largest areas (up to 5)."""
    found = {}
    for value, label in enumerate(labels[1:], start=1):
        components, count = ndimage.label(mask == value)
        areas = np.bincount(components.ravel())[1:] if count else np.zeros(0, int)
        found[label] = {"pixels": int(areas.sum()), "components": int(count),
                        "areas": sorted(areas.tolist(), reverse=True)[:5]}
    return found



def digest(array: np.ndarray) -> str:
    """Content hash of an array (shape and dtype included)."""
    array = np.ascontiguousarray(array)
    return hashlib.sha1(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()



def content_flags(measures: list[dict], labels) -> list[list[str]]:
    """empty_mask, or missing_class:<label> for each class this non-empty mask lacks that most non-empty masks
    hold (MISSING_CLASS_SHARE) as a sizeable part of their labels (MAJOR_CLASS_SHARE): a vertebra class absent
    from a spine mask is worth a look, a bicyclist absent from a street frame is not."""
    holding = [m for m in measures if m["labelled"]]
    common = []
    if len(holding) >= MIN_MASKS:
        for value, label in enumerate(labels[1:], start=1):
            shares = [m["classes"][label]["pixels"] / m["foreground"] for m in holding if value in m["present"]]
            if len(shares) >= MISSING_CLASS_SHARE * len(holding) and np.median(shares) >= MAJOR_CLASS_SHARE:
                common.append(value)
    return [["empty_mask"] if not m["labelled"] else
            [f"missing_class:{labels[value]}" for value in common if value not in m["present"]] for m in measures]



def duplicates(names, digests) -> dict[str, str]:
    """{name: first earlier name with the same digest}."""
    first, found = {}, {}
    for name, key in zip(names, digests):
        if key in first:
            found[name] = first[key]
        else:
            first[key] = name
    return found
