"""Prediction with a trained model: softmax maps and label maps at each image's own size, and the optional
"largest structure" post-processing. Calls `model.predict_on_batch`; imports no TensorFlow itself."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import ndimage


def iter_probabilities(model, data, names, flip_average: bool = True, batch_size: int = 4):
    """Yield (name, float32 softmax map (H, W, K)) for each name, every image at its own size.

    Images of one size are predicted together; with flip_average each image's mirror image is predicted too
    and the two maps averaged (training augments with that flip)."""
    by_shape = defaultdict(list)
    for name in names:
        by_shape[data.get_image(name).shape].append(name)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            images = np.stack([data.get_image(name) for name in chunk])
            # predict_on_batch, not predict: the chunk is one batch already, and Keras' predict slices arrays in
            # a parallel tf.data map that op determinism rewrites, printing an "E0000 ... NodeDef" line
            probabilities = np.asarray(model.predict_on_batch(images))
            if flip_average:
                mirrored = np.asarray(model.predict_on_batch(images[:, :, ::-1]))
                probabilities = (probabilities + mirrored[:, :, ::-1]) / 2
            yield from zip(chunk, probabilities.astype(np.float32))


def labels_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Softmax output (..., K) -> integer label map (...) as uint8 (argmax; ties go to the lower class)."""
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def predict_labels(model, data, names, flip_average: bool = True) -> dict[str, np.ndarray]:
    """{name: uint8 label map (H, W)} at each image's own size, in the order of `names`."""
    found = {name: labels_from_probabilities(p) for name, p in iter_probabilities(model, data, names, flip_average)}
    return {name: found[name] for name in names}


def keep_largest_structure(labels: np.ndarray, bridge_px: int = 10) -> np.ndarray:
    """Set to background (0) every predicted foreground pixel outside the largest structure: the connected piece
    with the most foreground pixels once the foreground is grown by `bridge_px` (pieces up to ~2 x bridge_px
    apart count as one). For data showing one object per image, a blob away from it is a false positive."""
    labels = np.asarray(labels)
    foreground = labels > 0
    if not foreground.any():
        return labels
    # not binary_dilation(iterations=0): scipy reads 0 as "dilate until nothing changes"
    grown = ndimage.binary_dilation(foreground, iterations=bridge_px) if bridge_px else foreground
    pieces, count = ndimage.label(grown)
    sizes = ndimage.sum(foreground, pieces, range(1, count + 1))
    largest = pieces == 1 + int(np.argmax(sizes))
    return np.where(largest & foreground, labels, 0).astype(labels.dtype)


def removed_pixels(before: dict, after: dict) -> dict[str, int]:
    """Per example, how many predicted foreground pixels post-processing set to background."""
    return {name: int(np.count_nonzero((before[name] > 0) & (after[name] == 0))) for name in before}
