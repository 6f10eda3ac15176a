"""Keras `Sequence` and `tf.data` adapters over a `loader.DataLoader`, yielding the same batches as `get_batch`.

Kept apart from loader.py so that importing the loader never pulls TensorFlow in.
"""
import time

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
        return self.loader.batch_arrays(self._batches[step], self.split, self.epoch, step)

    def on_epoch_end(self):
        self.epoch += 1
        self._batches = self.loader.epoch_batches(self.split, self.epoch)


def loader_dataset(loader, split="train", epochs=None, prefetch=None, ready_times=None):
    """`tf.data.Dataset` of (images, one-hot masks) batches, prefetched so decoding overlaps the model step.

    The generator yields compact batches (`batch_arrays(..., compact=True)`: uint8 images of 8-bit data, uint8
    label maps), and `expand_batch` makes float32 images and one-hot targets inside the graph: the Python side
    moves 2 bytes per pixel instead of 4 x (channels + classes), and the model gets the same tensors as before.
    ready_times: a list to which the `time.perf_counter()` at which each batch is ready is appended, in order
    (to tell, against the training steps' start times, whether a step had to wait for its batch)."""
    height, width = loader.batch_shape(split)  # None where batches of mixed-size images differ
    images = tf.TensorSpec((None, height, width, loader.n_channels), tf.as_dtype(loader.compact_image_dtype(split)))
    labels = tf.TensorSpec((None, height, width), tf.uint8)

    def batches():
        for epoch, step, names in loader.iter_epochs(split, epochs):
            batch = loader.batch_arrays(names, split, epoch, step, compact=True)
            if ready_times is not None:
                ready_times.append(time.perf_counter())
            yield batch

    dataset = tf.data.Dataset.from_generator(batches, output_signature=(images, labels))
    # A sequential map: training runs with op determinism on (fit.seed_everything), under which tf.data rewrites
    # a parallel map into a sequential one anyway, logging "E0000 ... NodeDef mentions attribute
    # use_unbounded_threadpool" as it does. The prefetch below still overlaps it with the model's step.
    dataset = dataset.map(lambda x, y: expand_batch(x, y, loader.n_classes))
    return dataset.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def expand_batch(images, labels, n_classes: int):
    """A compact batch as the model takes it: float32 images in [0, 1] and float32 one-hot targets (B, H, W, K).

    uint8 images are multiplied by float32(1/255), exactly as `loader.image_to_float` does (a division would
    differ in the last bit); tf.one_hot gives an all-zero row for IGNORE_INDEX (255 >= K: ignore and padding)."""
    if images.dtype == tf.uint8:
        images = tf.cast(images, tf.float32) * tf.constant(1 / 255, tf.float32)
    return images, tf.one_hot(labels, n_classes, dtype=tf.float32)
