"""`DataLoader`: the pairs of a data folder, read and validated against its description, split, stored (in
memory, in a disk cache or read from the files) and batched for a Keras UNet."""
from __future__ import annotations

from itertools import count
from pathlib import Path

import numpy as np

from maskpair.data.augment import as_augment
from maskpair.data.batches import assemble_batch, pack_batch, padded_size
from maskpair.data.reading import image_to_float, read_pair
from maskpair.data.set_aside import reviewed_problems, set_aside
from maskpair.data.splits import SPLITS, checked_splits, split_names
from maskpair.data.stores import open_store
from maskpair.errors import DataError

REMAINDER_POLICIES = ("fill", "drop", "keep")


class DataLoader:
    """Paired images and masks of `data_dir`, as its dataset.json describes them (or as `describe` infers them
    without one), validated, split and batched.

    split: (train, val, test) fractions, or an explicit {"train": [...], "val": [...], "test": [...]}
    (e.g. from `kfold_splits`, optionally with SET_ASIDE: [...]); remainder: how the last short batch of an
    epoch is handled -- "fill" tops it up with other random examples of the same split, "drop" drops it,
    "keep" yields it short.
    cache: where the decoded pairs live (`stores`): True decodes every pair once at construction into memory (uint8
    where possible); "disk" keeps them in memory-mapped files (`disk_cache`), built once and reopened without
    decoding while no file and not dataset.json changed, for data larger than memory or quick restarts; False
    reads each batch from the files, checking every file's header (size, channels, dtype) at construction and the
    values as they are read. Every mode gives the same batches.
    cache_dir: (cache="disk" only) where the disk caches are kept; default `<data_dir>.cache` beside the data.
    augment: None, True (default `Augment()`), a dict of `Augment` fields or an `Augment`; train split only.
    pad_multiple: batches are padded bottom/right to their largest image (or the train crop), rounded up to a
    multiple of this (the UNet's 32; 1: no rounding); padding is 0 in the image and carries no target.
    review_log: a review verdict log (`ReviewLog`); train examples whose latest verdict there is
    "problem" are set aside (SET_ASIDE), val and test stay as they are.
    full_size: keep every pair at its own size even when dataset.json's max_size would read it reduced (then
    `sizes` == `original_sizes`); `read_full_size(name)` reads one pair at its own size either way.
    """

    def __init__(
        self,
        data_dir,
        batch_size: int = 4,
        seed: int = 0,
        split=(0.6, 0.2, 0.2),
        remainder: str = "fill",
        cache: bool | str = True,
        cache_dir=None,
        augment=None,
        pad_multiple: int = 32,
        review_log=None,
        workers: int | None = None,
        progress: bool | None = None,
        full_size: bool = False,
    ):
        if remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be at least 1, got {pad_multiple}")
        self.data_dir = Path(data_dir)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.remainder = remainder
        self.pad_multiple = int(pad_multiple)
        self.augment = as_augment(augment)
        self.cache = cache
        self.full_size = bool(full_size)
        self.store = open_store(self.data_dir, cache, cache_dir, workers, progress, self.full_size)
        self.description, self.pairs, self.sizes = self.store.description, self.store.pairs, self.store.sizes
        self.original_sizes = self.store.original_sizes  # {name: (H, W)} of each pair's files
        self.labels = self.description.classes
        self.n_classes = self.description.n_classes
        self.n_channels = self.description.n_channels
        self.names = list(self.pairs)
        self.splits = (checked_splits(split, self.names) if isinstance(split, dict)
                       else split_names(self.names, split, self.seed))
        if review_log is not None:
            self.splits = set_aside(self.splits, reviewed_problems(review_log, self.names))

    # -- reading

    def raw_pair(self, name):
        """The stored arrays of `name`: image (H, W, C) uint8 (or float32 in [0, 1]) and label map (H, W) uint8
        (class index, IGNORE_INDEX = ignore). From a cache these are read-only views, not copies."""
        self._check_names([name])
        return self.store.pair(name)

    def _check_names(self, names):
        """KeyError for the first name that is no example of this loader, before any file is opened."""
        unknown = next((name for name in names if name not in self.sizes), None)
        if unknown is not None:
            raise KeyError(f"no example named {unknown!r} in {self.data_dir}")

    def read_full_size(self, name):
        """The pair `name` read from its files at their own size (`original_sizes[name]`), whatever max_size says:
        image (H, W, C) uint8 (or float32 in [0, 1]) and label map (H, W) uint8 (ROI applied), fresh arrays."""
        self._check_names([name])
        return read_pair(*self.pairs[name], self.description, full_size=True)

    def get_image(self, name) -> np.ndarray:
        """The image of example `name` as float32 (H, W, C) in [0, 1], at its own size."""
        return image_to_float(self.raw_pair(name)[0]).astype(np.float32, copy=True)

    def get_mask(self, name) -> np.ndarray:
        """The label map of example `name`: uint8 (H, W) class indices, IGNORE_INDEX where there is no target."""
        return self.raw_pair(name)[1].copy()

    def split_of(self, name) -> str:
        """Which split `name` belongs to."""
        return next(split for split, names in self.splits.items() if name in names)

    # -- epochs and batches

    def _split_names(self, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        names = self.splits[split]
        if not names:
            raise DataError(f"{self.data_dir}: the {split} split is empty (split fractions give it no examples)")
        if self.batch_size > len(names):
            raise DataError(
                f"{self.data_dir}: batch_size {self.batch_size} is larger than the {split} split "
                f"({len(names)} examples)"
            )
        return names

    def steps_per_epoch(self, split="train") -> int:
        """Number of batches `get_batch(split)` yields per epoch under the remainder policy."""
        full, rest = divmod(len(self._split_names(split)), self.batch_size)
        return full + (1 if rest and self.remainder != "drop" else 0)

    def epoch_batches(self, split="train", epoch: int = 0) -> list[list[str]]:
        """The names in each batch of one epoch: a fresh seeded shuffle, each example exactly once,
        the last batch completed, dropped or kept short according to `remainder`."""
        names = self._split_names(split)
        rng = np.random.default_rng([self.seed, SPLITS.index(split), epoch])
        order = rng.permutation(len(names))
        size = self.batch_size
        full = len(names) // size
        batches = [order[k * size : (k + 1) * size] for k in range(full)]
        tail = order[full * size :]
        if len(tail) and self.remainder == "keep":
            batches.append(tail)
        elif len(tail) and self.remainder == "fill":
            others = order[: full * size]  # examples not already in this last batch
            batches.append(np.concatenate([tail, rng.choice(others, size - len(tail), replace=False)]))
        return [[names[i] for i in batch] for batch in batches]

    def _augment_for(self, split):
        """The augmentation that applies to `split`: the train split's only."""
        return self.augment if split == "train" else None

    def _crop_shape(self) -> tuple:
        """(H, W) of every cropped train batch: the crop, limited to the largest image, rounded up to pad_multiple;
        smaller images are padded to it, so train batches are uniform whatever the image sizes."""
        largest = (max(h for h, _ in self.sizes.values()), max(w for _, w in self.sizes.values()))
        return padded_size(self.augment.output_shape(largest), self.pad_multiple)

    def batch_shape(self, split="train") -> tuple:
        """(H, W) of the batches of `split`, sides rounded up to pad_multiple: the crop for a cropping train
        split, else the largest image of each batch; a side is None where the batches of `split` differ."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        augment = self._augment_for(split)
        if augment and augment.crop is not None:
            return self._crop_shape()
        sides = {padded_size(self.sizes[name], self.pad_multiple) for name in self.splits[split]}
        heights, widths = {h for h, _ in sides}, {w for _, w in sides}
        return (heights.pop() if len(heights) == 1 else None, widths.pop() if len(widths) == 1 else None)

    def _augment_rng(self, split, epoch, step):
        return np.random.default_rng([self.seed, SPLITS.index(split), epoch, step, 1])

    def compact_image_dtype(self, split="train") -> np.dtype:
        """dtype of the images in compact batches of `split`: uint8 when every image is 8-bit and `split` is not
        augmented (augmentation changes intensities beyond 8 bits), else float32 in [0, 1]."""
        eight_bit = self.store.eight_bit and self._augment_for(split) is None
        return np.dtype(np.uint8 if eight_bit else np.float32)

    def batch_arrays(self, names, split="val", epoch: int = 0, step: int = 0, compact: bool = False):
        """Assemble one batch: images float32 (B, H, W, C) in [0, 1], one-hot float32 (B, H, W, K), padded as
        `batch_shape` says; ignore and padding pixels have an all-zero one-hot row (padding also a 0 image).

        compact: the batch as the model trains on it: images as `compact_image_dtype(split)` (uint8 for 8-bit
        data: 8x fewer bytes than float32 image + 3-class one-hot) and label maps uint8 (B, H, W) with
        IGNORE_INDEX for ignore and padding; the same batch before `image_to_float` and one-hot, which the model
        and its loss do on the device. Augmentation (split "train" only) is seeded by (seed, epoch, step), so it
        is the same in every adapter.
        """
        augment = self._augment_for(split)
        self._check_names(names)
        pairs = self.store.read(names)
        if augment:
            rng = self._augment_rng(split, epoch, step)
            pairs = [augment.apply(image_to_float(image), labels, rng) for image, labels in pairs]
        if augment and augment.crop is not None:
            shape = self._crop_shape()
        else:
            largest = (max(labels.shape[0] for _, labels in pairs), max(labels.shape[1] for _, labels in pairs))
            shape = padded_size(largest, self.pad_multiple)
        if compact:
            return pack_batch(pairs, shape, self.compact_image_dtype(split))
        return assemble_batch(pairs, shape, self.n_classes)

    def iter_epochs(self, split="train", epochs: int | None = None):
        """Yield (epoch, step, names) for `epochs` epochs (None: forever)."""
        for epoch in count() if epochs is None else range(epochs):
            for step, names in enumerate(self.epoch_batches(split, epoch)):
                yield epoch, step, names

    def get_batch(self, split="train", compact: bool = False):
        """Endless generator of (images, one-hot) batches of `split` (compact: (images, label maps), what the model
        trains on); see `batch_arrays` for shapes."""
        self._split_names(split)  # fail now, not at the first next()
        return (self.batch_arrays(names, split, epoch, step, compact) for epoch, step, names in self.iter_epochs(split))

    # -- adapters (TensorFlow is imported only here)

    def keras_sequence(self, split="train"):
        """A `tf.keras.utils.Sequence` over `split` yielding the same batches as `get_batch(split, compact=True)`:
        what the model trains on."""
        from maskpair.data.keras_adapters import LoaderSequence

        self._split_names(split)
        return LoaderSequence(self, split)

    def tf_dataset(self, split="train", epochs: int | None = None, prefetch: int | None = None, ready_times=None):
        """A prefetching `tf.data.Dataset` of the same batches as `get_batch(split, compact=True)` (endless when
        epochs is None): what the model trains on. From an in-memory or disk cache, un-augmented batches are
        assembled inside the tf.data graph from the cache's bytes; `ready_times`: a list that receives the time
        each batch was ready (see `keras_adapters.loader_dataset`)."""
        from maskpair.data.keras_adapters import loader_dataset

        self._split_names(split)
        return loader_dataset(self, split, epochs, prefetch, ready_times)

    def __repr__(self):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"DataLoader({str(self.data_dir)!r}: {len(self.names)} pairs, {sizes}, batch {self.batch_size})"
