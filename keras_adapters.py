"""Keras `Sequence` and `tf.data` adapters over a `loader.DataLoader`, yielding the same batches as `get_batch`.

Kept apart from loader.py so that importing the loader never pulls TensorFlow in.
"""
import time

from legacy_keras import import_tensorflow

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
        return self.loader.batch_arrays(self._batches[step], self.split, self.epoch, step)

    def on_epoch_end(self):
        self.epoch += 1
        self._batches = self.loader.epoch_batches(self.split, self.epoch)


def loader_dataset(loader, split="train", epochs=None, prefetch=None, ready_times=None):
    """`tf.data.Dataset` of (images, one-hot masks) batches, prefetched so decoding overlaps the model step.

    ready_times: a list to which the `time.perf_counter()` at which each batch is ready is appended, in order
    (to tell, against the training steps' start times, whether a step had to wait for its batch)."""
    height, width = loader.batch_shape(split)  # None where batches of mixed-size images differ
    images = tf.TensorSpec((None, height, width, loader.n_channels), tf.float32)
    masks = tf.TensorSpec((None, height, width, loader.n_classes), tf.float32)

    def batches():
        for epoch, step, names in loader.iter_epochs(split, epochs):
            batch = loader.batch_arrays(names, split, epoch, step)
            if ready_times is not None:
                ready_times.append(time.perf_counter())
            yield batch

    dataset = tf.data.Dataset.from_generator(batches, output_signature=(images, masks))
    return dataset.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)
