"""Assembling batches: pairs placed top-left in a padded shape, compact (uint8) or as float images and one-hot
targets, written into preallocated buffers."""
from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from maskpair.data.description import IGNORE_INDEX
from maskpair.data.reading import image_to_float

_ASSEMBLY_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_assembly_pools: dict[int, ThreadPoolExecutor] = {}


def _float_into(images: np.ndarray, out: np.ndarray) -> None:
    """Write `image_to_float(images)` into `out` without a temporary."""
    if images.dtype == np.uint8:
        np.multiply(images, np.float32(1 / 255), out=out)
    else:
        out[...] = images



def _assembly_pool() -> ThreadPoolExecutor:
    """This process's thread pool for batch assembly (a forked child gets its own: the parent's threads are gone)."""
    pid = os.getpid()
    if pid not in _assembly_pools:
        _assembly_pools[pid] = ThreadPoolExecutor(max(1, _ASSEMBLY_THREADS - 1), thread_name_prefix="batch-assembly")
    return _assembly_pools[pid]



def _fill_batch(raw_images, masks, images, onehot) -> None:
    """Write float images and one-hot masks of a whole batch, split by example over `_ASSEMBLY_THREADS` threads.

    numpy releases the GIL in these loops, so the parts run on separate cores (faster on idle cores, a little
    slower when other jobs hold every core: bench/README.md). Parts write disjoint slices.
    """

    def fill(part):  # whole-batch slices: a few long vectorised loops instead of 4 short ones per example
        _float_into(raw_images[part], images[part])
        _one_hot_into(masks[part], onehot[part])

    n_parts = min(_ASSEMBLY_THREADS, len(images))
    if n_parts < 2 or onehot.nbytes < 2**20:  # small batches: a thread hand-off costs more than it saves
        return fill(slice(None))
    bounds = np.linspace(0, len(images), n_parts + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    others = [_assembly_pool().submit(fill, part) for part in parts[1:]]
    fill(parts[0])  # this thread fills the first part itself rather than wait idle
    for other in others:
        other.result()



def _one_hot_into(masks: np.ndarray, out: np.ndarray) -> None:
    """Write the float32 one-hot encoding of the uint8 label maps `masks` (..., H, W) into `out` (..., H, W, K);
    IGNORE_INDEX (ignore and padding) equals no class, so its row is all zero."""
    # one flat comparison per class: ~6x cheaper than np.eye(C)[mask] or than comparing mask[..., None]
    # with all classes at once (both run an inner loop only C long per pixel); see bench/README.md.
    # The comparison goes to a contiguous bool buffer and is cast from its uint8 view: casting bool to float
    # branches per pixel, which is ~5x slower on masks whose labels change often (noisy masks).
    is_class = np.empty(masks.shape, dtype=np.bool_)
    for c in range(out.shape[-1]):
        np.equal(masks, c, out=is_class)
        np.copyto(out[..., c], is_class.view(np.uint8), casting="unsafe")



def one_hot(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 one-hot (..., H, W, K) of uint8 label maps (..., H, W); IGNORE_INDEX rows all zero: in numpy, what
    the loss makes of a label map on the device (`training.losses.one_hot_targets`)."""
    out = np.empty((*masks.shape, n_classes), np.float32)
    _one_hot_into(masks, out)
    return out



def pack_batch(pairs, shape, image_dtype=np.uint8):
    """The compact batch of `pairs` [(image, label map)], each placed top-left in (H, W) `shape`: images
    (B, H, W, C) of `image_dtype` (uint8: 8-bit images as they are; float32: in [0, 1]) and label maps uint8
    (B, H, W); padding bottom/right is 0 in the image and IGNORE_INDEX in the label map."""
    n, channels, shape = len(pairs), pairs[0][0].shape[-1], tuple(shape)
    images, masks = _batch_buffers(((n, *shape, channels), image_dtype), ((n, *shape), np.uint8))
    padded = any(labels.shape != shape for _, labels in pairs)
    if padded:  # no image, no target
        images.fill(0)
        masks.fill(IGNORE_INDEX)
    for k, (image, labels) in enumerate(pairs):
        if image.dtype != images.dtype:
            if images.dtype == np.uint8:
                raise ValueError(f"pack_batch: a {image.dtype} image in a uint8 batch (use image_dtype=np.float32)")
            image = image_to_float(image)
        if padded:
            height, width = labels.shape
            images[k, :height, :width] = image
            masks[k, :height, :width] = labels
        else:  # whole slots: one contiguous copy each
            images[k] = image
            masks[k] = labels
    return images, masks



def _batch_buffers(*specs):
    """Fresh uninitialised arrays, one per (shape, dtype) in `specs`: 64-byte aligned views of one allocation.

    One allocation, not two: glibc returns freed memory at the top of its heap to the system once it reaches
    twice the largest block freed so far, so two equal blocks freed together were handed back and the next batch
    page-faulted on every page (bench/README.md has the counts).
    Aligned: malloc's blocks start 16 bytes past a page, and copying from a source 16 bytes behind the
    destination modulo 4096 (every pair of the disk cache, whose pairs start on 64-byte boundaries) ran several
    times slower (4K aliasing of loads with stores) than from any other offset (bench/README.md)."""
    sizes = [math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in specs]
    starts = list(itertools.accumulate((-(-size // 64) * 64 for size in sizes), initial=0))
    block = np.empty(starts[-1] + 63, dtype=np.uint8)
    buffer = block[-block.ctypes.data % 64 :]
    return [buffer[start : start + size].view(dtype).reshape(shape)
            for (shape, dtype), start, size in zip(specs, starts, sizes)]



def assemble_batch(pairs, shape, n_classes: int):
    """float32 images (B, H, W, C) and one-hot float32 (B, H, W, K) of `pairs` [(image, label map)], each placed
    top-left in (H, W) `shape`: padding bottom/right is 0 in the image and an all-zero one-hot row."""
    eight_bit = all(image.dtype == np.uint8 for image, _ in pairs)  # else every image goes to float first
    raw, masks = pack_batch(pairs, shape, np.uint8 if eight_bit else np.float32)
    # fresh arrays every batch, so callers may keep them; glibc reuses the freed block, so this is cheap
    images, onehot = _batch_buffers((raw.shape, np.float32), ((*masks.shape, n_classes), np.float32))
    _fill_batch(raw, masks, images, onehot)
    return images, onehot



def padded_size(size, multiple: int) -> tuple:
    """(H, W) `size` with each side rounded up to a multiple of `multiple`."""
    return tuple(-(-int(side) // multiple) * multiple for side in size)
