"""Keras `Sequence` and `tf.data` adapters over a `loader.DataLoader`, yielding the compact batches the model trains
on: images as stored (uint8 for 8-bit data; float32 in [0, 1] when augmented, or for 16-bit and float data) and
uint8 label maps with IGNORE_INDEX for ignore and padding, exactly `get_batch(split, compact=True)`. The model
brings the images into [0, 1] and its loss makes the one-hot target, on the device (`training.model`,
`training.losses`).

Kept apart from loader.py so that importing the loader never pulls TensorFlow in.
"""
import time

import numpy as np

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

    ready_times: a list to which the `time.perf_counter()` at which each batch is ready is appended, in order (to
    tell, against the training steps' start times, whether a step had to wait for its batch)."""
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
    """The batches of `batch_arrays(..., compact=True)`, from a Python generator."""

    def batches():
        for epoch, step, names in loader.iter_epochs(split, epochs):
            yield loader.batch_arrays(names, split, epoch, step, compact=True)

    return tf.data.Dataset.from_generator(batches, output_signature=batch_specs(loader, split))


def marked_ready(images, labels, ready_times: list):
    """The batch, once `time.perf_counter()` has been appended to `ready_times` (in the pipeline, before prefetch)."""

    def now():
        ready_times.append(time.perf_counter())
        return np.int64(len(ready_times))

    with tf.control_dependencies([tf.numpy_function(now, [], tf.int64, stateful=True)]):
        return tf.identity(images), tf.identity(labels)
