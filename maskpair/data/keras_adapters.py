"""Keras `Sequence` and `tf.data` adapters over a `loader.DataLoader`, yielding the compact batches the model trains
on: images as stored (uint8 for 8-bit data; float32 in [0, 1] when augmented, or for 16-bit and float data) and
uint8 label maps with IGNORE_INDEX for ignore and padding, exactly `get_batch(split, compact=True)`. The model
brings the images into [0, 1] and its loss makes the one-hot target, on the device (`training.model`,
`training.losses`).

Kept apart from loader.py so that importing the loader never pulls TensorFlow in.
"""
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import numpy as np

from maskpair.data.description import IGNORE_INDEX
from maskpair.training.legacy_keras import import_tensorflow

tf = import_tensorflow()


class LoaderSequence(tf.keras.utils.Sequence):
    """Batch `i` of the current epoch; `on_epoch_end` moves to the next seeded shuffle (Keras calls it)."""

    def __init__(self, loader, split="train"):
        super().__init__()
        self.loader, self.split, self.epoch = loader, split, 0
        self._batches = loader.epoch_batches(split, 0)

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, step):
        if not 0 <= step < len(self._batches):
            raise IndexError(f"batch {step} out of range for {len(self._batches)} batches")
        return self.loader.batch_arrays(self._batches[step], self.split, self.epoch, step, compact=True)

    def on_epoch_end(self):
        self.epoch += 1
        self._batches = self.loader.epoch_batches(self.split, self.epoch)


def loader_dataset(loader, split="train", epochs=None, prefetch=None, ready_times=None):
    """`tf.data.Dataset` of compact (images, label maps) batches, prefetched so that making them overlaps the step.

    From an in-memory or disk cache, a split without augmentation is batched inside the graph (`graph_batches`):
    the cache's buffers become tensors without a copy and each batch is one gather from them, with no Python and
    no GIL per batch. Otherwise (augmentation, which is numpy's, or reading the files) a generator yields
    `batch_arrays(..., compact=True)`. ready_times: a list to which the `time.perf_counter()` at which each batch
    is ready is appended, in order (to tell, against the training steps' start times, whether a step had to wait
    for its batch)."""
    flat = loader.store.flat_pairs() if hasattr(loader.store, "flat_pairs") else None
    if flat is not None and loader._augment_for(split) is None:
        dataset = graph_batches(loader, split, epochs, flat)
    else:
        dataset = generated_batches(loader, split, epochs)
    if ready_times is not None:
        dataset = dataset.map(lambda images, labels: marked_ready(images, labels, ready_times))
    return dataset.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def batch_specs(loader, split):
    """(images, label maps) TensorSpecs of the compact batches of `split`: None where batches differ."""
    height, width = loader.batch_shape(split)
    dtype = tf.as_dtype(loader.compact_image_dtype(split))
    return (tf.TensorSpec((None, height, width, loader.n_channels), dtype), tf.TensorSpec((None, height, width), tf.uint8))


def generated_batches(loader, split, epochs):
    """The batches of `batch_arrays(..., compact=True)`, from a Python generator that makes the next few in
    threads, one batch a thread, and yields them in order.

    Each batch's augmentation draws from its own (seed, epoch, step) generator, so batches made at once are the
    batches made one by one; scipy.ndimage's resampling (most of an augmented batch's time) and PNG decoding
    release the GIL, so the threads share the cores."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def batches():
        pending = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="batches") as pool:
            try:
                for epoch, step, names in loader.iter_epochs(split, epochs):
                    pending.append(pool.submit(loader.batch_arrays, names, split, epoch, step, compact=True))
                    if len(pending) > workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # the iterator was dropped (an endless dataset always is): make no more batches
                for future in pending:
                    future.cancel()

    return tf.data.Dataset.from_generator(batches, output_signature=batch_specs(loader, split))


def graph_batches(loader, split, epochs, flat):
    """The same batches as `batch_arrays(..., compact=True)` (no augmentation), assembled by the tf.data graph from
    a store's `FlatPairs`: Python only draws each epoch's order (`epoch_batches`), once per epoch.

    The buffers reach TensorFlow through DLPack, which shares their memory (a copy would double the in-memory
    cache, or turn the disk cache's page-cache pages into anonymous memory). tf.data's default graph rewrites
    are turned off: they serialise the dataset's graph, captured tensors included, which copies the buffers (and
    fails beyond 2 GB)."""
    images = tf.experimental.dlpack.from_dlpack(flat.images.__dlpack__())
    masks = tf.experimental.dlpack.from_dlpack(flat.masks.__dlpack__())
    batch_size, float_images = loader.batch_size, loader.compact_image_dtype(split) == np.float32

    def orders():  # each epoch's example rows, batch after batch: only the last batch may be short ("keep")
        for epoch in count() if epochs is None else range(epochs):
            rows = [flat.rows[name] for names in loader.epoch_batches(split, epoch) for name in names]
            yield np.array(rows, np.int32)

    multiple, specs = loader.pad_multiple, batch_specs(loader, split)
    uniform = uniform_layout(flat.table, len(flat.images), len(flat.masks))
    if uniform:  # one gather from each buffer per batch
        gather = gather_rows(images, masks, flat.table)
        padded = bool(flat.table[0, 2] % multiple or flat.table[0, 3] % multiple)
    else:  # each pair sliced, then padded to the batch's largest
        pick = slice_pair(images, masks, tf.constant(flat.table), float_images)
        padding = (tf.constant(0, tf.float32 if float_images else tf.uint8), tf.constant(IGNORE_INDEX, tf.uint8))
        padded = True

    def batched(examples):
        if uniform:
            return examples.batch(batch_size).map(gather)
        return examples.map(pick).padded_batch(batch_size, padding_values=padding)

    epochs_rows = tf.data.Dataset.from_generator(orders, output_signature=tf.TensorSpec((None,), tf.int32))
    if loader.remainder == "keep":  # an epoch may end in a short batch: batch each epoch on its own
        dataset = epochs_rows.flat_map(lambda rows: batched(tf.data.Dataset.from_tensor_slices(rows)))
    else:  # every epoch is whole batches: one stream of rows, no dataset made per epoch
        dataset = batched(epochs_rows.unbatch())
    if padded:
        dataset = dataset.map(lambda x, y: pad_to_multiple(x, y, multiple, specs))
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


def uniform_layout(table: np.ndarray, image_bytes: int, mask_bytes: int) -> bool:
    """Whether every pair has one shape and dtype and the pairs lie back to back from the buffers' start (each
    image's size a multiple of the 64-byte alignment), so that each buffer is one (N, H, W, C) array."""
    first = table[0]
    size = int(np.prod(first[2:5])) * (1 if first[5] == 0 else 4)
    n = len(table)
    return (bool((table[:, 2:] == first[2:]).all()) and image_bytes == n * size and mask_bytes == n * first[2] * first[3]
            and bool((table[:, 0] == np.arange(n) * size).all())
            and bool((table[:, 1] == np.arange(n) * first[2] * first[3]).all()))


def gather_rows(images, masks, table: np.ndarray):
    """A function of a batch's rows -> (images, label maps): one gather from each buffer seen as (N, H, W, C)."""
    n, (height, width, channels, code) = len(table), (int(v) for v in table[0, 2:])
    if code == 0:
        stack = tf.reshape(images, (n, height, width, channels))
    else:  # float32 pixels: the bytes reinterpreted, still no copy
        stack = tf.bitcast(tf.reshape(images, (n, height, width, channels, 4)), tf.float32)
    labels = tf.reshape(masks, (n, height, width))
    return lambda rows: (tf.gather(stack, rows), tf.gather(labels, rows))


def slice_pair(images, masks, table, float_images: bool):
    """A function of one pair's row -> (image (H, W, C), label map (H, W)), sliced from the buffers; with
    `float_images` a uint8 image becomes float32 in [0, 1] as `reading.image_to_float` makes it."""

    def pick(row):
        image_offset, mask_offset, height, width, channels, code = tf.unstack(tf.cast(table[row], tf.int32))
        pixels = height * width * channels
        labels = tf.reshape(tf.slice(masks, [mask_offset], [height * width]), (height, width))

        def eight_bit():
            return tf.reshape(tf.slice(images, [image_offset], [pixels]), (height, width, channels))

        def floats():
            raw = tf.reshape(tf.slice(images, [image_offset], [4 * pixels]), (height, width, channels, 4))
            return tf.bitcast(raw, tf.float32)

        if not float_images:
            return eight_bit(), labels
        image = tf.cond(code == 0, lambda: tf.cast(eight_bit(), tf.float32) * tf.constant(1 / 255, tf.float32),
                        floats)
        return image, labels

    return pick


def pad_to_multiple(images, labels, multiple: int, specs):
    """Pad a batch bottom/right to sides that are multiples of `multiple` (0 in the image, IGNORE_INDEX in the
    label map), as `batches.padded_size` does, and give it the static shape the split's batches share."""
    height, width = tf.shape(labels)[1], tf.shape(labels)[2]
    extra = [[0, 0], [0, -height % multiple], [0, -width % multiple]]
    images = tf.pad(images, extra + [[0, 0]])
    labels = tf.pad(labels, extra, constant_values=IGNORE_INDEX)
    return tf.ensure_shape(images, specs[0].shape), tf.ensure_shape(labels, specs[1].shape)


def marked_ready(images, labels, ready_times: list):
    """The batch, once `time.perf_counter()` has been appended to `ready_times` (in the pipeline, before prefetch)."""

    def now():
        ready_times.append(time.perf_counter())
        return np.int64(len(ready_times))

    with tf.control_dependencies([tf.numpy_function(now, [], tf.int64, stateful=True)]):
        return tf.identity(images), tf.identity(labels)
