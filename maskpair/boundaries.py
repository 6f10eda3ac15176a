"""Where labels change: the one boundary map every part of the project draws or measures with."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def label_boundaries(labels: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """bool (H, W): True on both sides of every place where the label changes (4-neighbourhood).

    With `ignore_index`, changes to or from that value are not boundaries (the edge of a region of interest is
    not a label's outline): each ignore pixel first takes the label of its nearest labelled pixel."""
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if ignore_index is None:
        return find_boundaries(labels, connectivity=1, mode="thick")
    labelled = labels != ignore_index
    if labelled.all() or not labelled.any():
        return find_boundaries(labels, connectivity=1, mode="thick") & labelled
    _, (rows, cols) = ndimage.distance_transform_edt(~labelled, return_indices=True)
    return find_boundaries(labels[rows, cols], connectivity=1, mode="thick") & labelled
