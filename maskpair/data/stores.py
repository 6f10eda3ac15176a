"""Where the loader's decoded pairs come from, behind one interface: `FileStore` reads each pair from its files
when asked, `MemoryStore` decodes every pair once into memory, `DiskStore` keeps them in a memory-mapped disk
cache (`disk_cache`). All three give the same arrays: images (H, W, C) uint8 (or float32 in [0, 1] for 16-bit
and float files), label maps (H, W) uint8 of class indices with IGNORE_INDEX for ignore.

    store = open_store(data_dir, cache=True)     # True, "disk" or False
    image, labels = store.pair("7")
    store.sizes["7"], store.original_sizes["7"], store.eight_bit, store.description, store.pairs

Pairs larger than the description's `max_size` are stored at their reduced size (`sizes`); `original_sizes` are
the files' own; `full_size=True` stores every pair at its own size.

Every store is opened after the same checks (`describe.inspect_folder`: pairing, every file's header), and a
store that cannot be opened raises one `DataError` listing every problem.

The two caching stores also give all their pairs at once as two flat byte buffers (`flat_pairs`), which
`keras_adapters` hands to TensorFlow without a copy, so training batches are assembled inside the tf.data graph.
"""
from __future__ import annotations

import dataclasses
import mmap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskpair.data import disk_cache
from maskpair.data.description import read_declared
from maskpair.data.files import short_path, source_folders
from maskpair.data.inspection import (
    default_workers,
    inspect_folder,
    map_names,
    problem_lines,
)
from maskpair.data.reading import dims_text, image_to_float, read_pair, reduced_size
from maskpair.errors import DataError

CACHE_MODES = (True, False, "disk")  # in memory, streaming from the files, memory-mapped disk cache
ALIGN = 64  # buffer starts and image offsets: float32 views stay aligned, and TensorFlow takes the buffers uncopied


LAYOUT_COLUMNS = 6  # where each pair lies and how to read it: the first six of disk_cache.COLUMNS


@dataclasses.dataclass(frozen=True)
class FlatPairs:
    """Every pair of a store in two flat byte buffers, as `disk_cache` lays them out.

    The buffers are writable numpy arrays (numpy hands only those to TensorFlow through DLPack, which shares
    their memory when it is 64-byte aligned) over memory nobody writes: in-memory buffers whose pair views are
    read-only, or copy-on-write maps of the disk cache's files."""

    images: np.ndarray  # uint8, the images' bytes (uint8 pixels, or float32 ones for 16-bit and float data)
    masks: np.ndarray  # uint8 label maps, pair after pair
    table: np.ndarray  # (pairs, 6) int64, disk_cache.COLUMNS' first six: image offset, mask offset, H, W, C, dtype
    rows: dict  # name -> its row of `table`


def open_store(data_dir, cache=True, cache_dir=None, workers: int | None = None, progress: bool | None = None,
               full_size: bool = False):
    """The store of `data_dir` for a cache mode: True (MemoryStore), "disk" (DiskStore) or False (FileStore);
    full_size: pairs at their own size whatever the description's max_size."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be True (in memory), \"disk\" or False (streaming), got {cache!r}")
    if cache_dir is not None and cache != "disk":
        raise ValueError(f"cache_dir is used only with cache=\"disk\", got cache={cache!r}")
    workers = workers or default_workers()
    if cache == "disk":
        return DiskStore.open(data_dir, cache_dir, workers, progress, full_size)
    description, pairs, headers, problems = inspect_folder(data_dir, workers, progress)
    if cache is False:
        if problems:
            raise DataError(problem_lines(problems, pairs))
        return FileStore(description, pairs, {name: headers[name][0] for name in pairs}, workers, full_size)
    progress = len(pairs) >= 200 if progress is None else progress
    return MemoryStore(description, pairs, {name: headers.get(name, (None,))[0] for name in pairs}, problems,
                       workers, progress, full_size)


def stored_sizes(description, image_headers: dict, full_size: bool) -> dict:
    """{name: (H, W)} each pair is stored at: its own size, or reduced to the description's max_size."""
    max_size = None if full_size else description.max_size
    return {name: reduced_size(header.size, max_size) for name, header in image_headers.items()}


class FileStore:
    """Each pair read from its files when asked (nothing kept); every header was checked at construction, and a
    pair read later must still have the size its header had."""

    def __init__(self, description, pairs: dict, image_headers: dict, workers: int, full_size: bool = False):
        self.description, self.pairs, self._workers, self._full_size = description, pairs, workers, full_size
        self.original_sizes = {name: header.size for name, header in image_headers.items()}
        self.sizes = stored_sizes(description, image_headers, full_size)
        # a uint8 (or 1-bit) header always reads as uint8; other dtypes may read as float32
        self.eight_bit = all(header.dtype in (np.uint8, np.bool_) for header in image_headers.values())

    def pair(self, name: str):
        image, labels = read_pair(*self.pairs[name], self.description, self._full_size)
        if labels.shape != self.sizes[name]:
            raise DataError(f"{short_path(self.pairs[name][0])}: shape {dims_text(labels.shape)}, but "
                            f"{dims_text(self.sizes[name])} when the loader was built (file changed?)")
        return image, labels

    def read(self, names) -> list:
        """[(image, label map)] of `names`, read in threads (PNG/zlib decoding releases the GIL); the first failing
        name in `names` order raises, as a loop would."""
        with ThreadPoolExecutor(max(1, min(self._workers, len(names)))) as pool:
            return list(pool.map(self.pair, names))


class MemoryStore:
    """Every pair decoded once into two flat buffers, one for the images and one for the label maps; each pair is
    a read-only view into them.

    One allocation per buffer, sized from the headers before any pixel is decoded: decoded pairs kept as separate
    arrays left the heap fragmented by the decoders' temporaries between them (5,000 pairs of 256x256 peaked at
    1.6x their size; bench/README.md)."""

    def __init__(self, description, pairs: dict, image_headers: dict, problems: dict, workers: int, progress: bool,
                 full_size: bool = False):
        self.description, self.pairs = description, pairs
        names = [name for name in pairs if name not in problems]
        # a uint8 (or 1-bit) header reads as uint8; every other image is kept as float32 in [0, 1]
        kept = {name: np.dtype(np.uint8) if image_headers[name].dtype in (np.uint8, np.bool_) else np.dtype(np.float32)
                for name in names}
        self.original_sizes = {name: image_headers[name].size for name in names}
        self.sizes = stored_sizes(description, {name: image_headers[name] for name in names}, full_size)
        channels = description.n_channels
        image_bytes = [self.sizes[name][0] * self.sizes[name][1] * channels * kept[name].itemsize for name in names]
        mask_bytes = [self.sizes[name][0] * self.sizes[name][1] for name in names]
        image_starts = np.cumsum([0] + [-(-size // ALIGN) * ALIGN for size in image_bytes])
        mask_starts = np.cumsum([0] + mask_bytes)
        images, masks = _aligned_empty(int(image_starts[-1])), _aligned_empty(int(mask_starts[-1]))
        position = {name: k for k, name in enumerate(names)}

        def decode(name):
            k = position[name]
            image, labels = read_pair(*pairs[name], description, full_size)
            if image.shape[:2] != self.sizes[name]:
                raise DataError(f"{short_path(pairs[name][0])}: shape {dims_text(image.shape[:2])}, its header "
                                f"says {dims_text(self.original_sizes[name])}")
            if image.dtype != kept[name]:  # e.g. a 32-bit integer image whose values fit 8 bits
                image = image_to_float(image)
            height, width = self.sizes[name]
            image_view = images[image_starts[k]:image_starts[k] + image_bytes[k]].view(kept[name])
            image_view = image_view.reshape(height, width, channels)
            mask_view = masks[mask_starts[k]:mask_starts[k] + mask_bytes[k]].reshape(height, width)
            image_view[...] = image
            mask_view[...] = labels
            return image_view, mask_view

        decoded, more = map_names(decode, names, workers, progress, "decoding")
        problems = {**problems, **more}
        if problems:
            raise DataError(problem_lines(problems, pairs))
        for image, labels in decoded.values():
            image.flags.writeable = labels.flags.writeable = False  # shared by every batch: no caller may edit them
        self._views = decoded
        self.eight_bit = all(dtype == np.uint8 for dtype in kept.values())
        table = np.array([(image_starts[k], mask_starts[k], *self.sizes[name], channels,
                           disk_cache.IMAGE_DTYPES.index(kept[name])) for k, name in enumerate(names)], np.int64)
        self._flat = FlatPairs(images, masks, table.reshape(len(names), LAYOUT_COLUMNS), position)

    def pair(self, name: str):
        return self._views[name]

    def read(self, names) -> list:
        return [self._views[name] for name in names]

    def flat_pairs(self) -> FlatPairs:
        """The two buffers every pair's views point into (no copy)."""
        return self._flat


def _aligned_empty(size: int) -> np.ndarray:
    """An uninitialised uint8 buffer of `size` bytes starting on an ALIGN-byte boundary (malloc gives 16)."""
    block = np.empty(size + ALIGN - 1, np.uint8)
    start = -block.ctypes.data % ALIGN
    return block[start : start + size]


class DiskStore:
    """The pairs in a memory-mapped disk cache (`disk_cache`): built once, reopened without decoding while no
    file and not dataset.json changed."""

    def __init__(self, cache: disk_cache.DiskCache, pairs: dict):
        self.cache, self.pairs, self.description = cache, pairs, cache.description
        self._row = {name: i for i, name in enumerate(cache.names)}
        self.sizes = cache.sizes()
        self.original_sizes = cache.original_sizes()
        self.eight_bit = cache.eight_bit()

    @classmethod
    def open(cls, data_dir, cache_dir=None, workers: int | None = None, progress: bool | None = None,
             full_size: bool = False):
        """The cache of the files as they are now, reopened when its key matches (the source folders listed and
        every file stat-ed, none read), else built after the same checks as the other stores. The key covers every
        file's name, so the pairs are those the cache recorded.

        cache_dir: where caches are kept (default: `disk_cache.default_folder`, `<data_dir>.cache` beside the data)."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"{data_dir}: no such data folder")
        declared = read_declared(data_dir)
        folders = source_folders(data_dir, declared)
        folder = disk_cache.default_folder(data_dir) if cache_dir is None else Path(cache_dir)
        # stat before anything is decoded: a file changed during a build then fails the key next time (rebuilt)
        key = (disk_cache.cache_key(data_dir, folders, full_size)
               if folders and all(path.is_dir() for path in folders) else None)
        cache = key and disk_cache.open_cache(folder, key)
        if cache is None:  # inspect_folder reports missing folders, pairing and header problems as the other stores do
            workers = workers or default_workers()
            description, pairs, headers, problems = inspect_folder(data_dir, workers, progress)
            if problems:
                raise DataError(problem_lines(problems, pairs))
            cache = disk_cache.build_cache(folder, key, data_dir, description, pairs,
                                           lambda name: read_pair(*pairs[name], description, full_size), workers,
                                           len(pairs) >= 200 if progress is None else progress,
                                           {name: headers[name][0].size for name in pairs})
        # the description as read here (its source path as given now), not as it was when the cache was built
        cache.description = dataclasses.replace(cache.description, source=declared["source"])
        return cls(cache, cache.pairs(data_dir))

    def pair(self, name: str):
        return self.cache.pair(self._row[name])

    def read(self, names) -> list:
        return [self.cache.pair(self._row[name]) for name in names]

    def flat_pairs(self) -> FlatPairs:
        """The cache's two files, mapped again copy-on-write (`FlatPairs`): the same page-cache pages as the
        read-only views, never anonymous memory as long as nothing writes."""
        images, masks = (_mapped_copy_on_write(self.cache.folder / kind) for kind in ("images.bin", "masks.bin"))
        return FlatPairs(images, masks, self.cache.table[:, :LAYOUT_COLUMNS], self._row)


def _mapped_copy_on_write(path: Path) -> np.ndarray:
    """The whole file as a writable uint8 array over a private (copy-on-write) memory map; an empty file (no
    pixels) as an empty array, which mmap refuses to map."""
    with open(path, "rb") as file:
        if not file.seek(0, 2):
            return np.zeros(0, np.uint8)
        return np.frombuffer(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY), dtype=np.uint8)
