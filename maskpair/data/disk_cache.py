"""The loader's disk cache (`DataLoader(DATA, cache="disk")`): every pair decoded once into two memory-mapped flat
buffers, reopened without decoding or reading a header.

    <cache_dir>/<key>/images.bin   the images' bytes, pair after pair (uint8, or float32 for 16-bit/float files)
                      masks.bin    the label maps' bytes (uint8 class indices, IGNORE_INDEX = ignore)
                      pairs.npy    per pair: image offset, mask offset, H, W, C, image dtype code, own H, own W
                      index.json   format, key, data folder, the complete description, the pair names and files

The key digests the format version, dataset.json's bytes, whether pairs are kept at their own size, and
(folder/name, size, mtime_ns) of every visible file of the folders the dataset's files are in (images, masks,
ROI; every folder a template's `*` reaches), so a changed, added or removed file, or an edited dataset.json,
opens another key (rebuilt). Reopening lists the two folders, stats their files and compares keys: no file is read, and the
pairs are those recorded at the build. A cache is built under `<key>.tmp-<pid>-*` and renamed to `<key>`
when complete (an interrupted build leaves nothing usable behind); the folder's older keys for the same data
folder are deleted after a build (Linux keeps a deleted file's pages for whoever still maps it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np

from maskpair.data.description import DESCRIPTION_FILE, DatasetDescription
from maskpair.errors import DataError
from maskpair.jsonio import write_json

FORMAT_VERSION = 3  # 3: templates, ROI, mask encodings, max_size (own sizes in pairs.npy). Bump when the files' layout or what the loader decodes changes: old caches are then rebuilt
ALIGN = 64  # each image starts at a multiple of 64 bytes: float32 views stay aligned, rows start on cache lines
IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))  # code -> dtype; what loader.read_image returns
TMP_MARK = ".tmp-"
COLUMNS = ("image_offset", "mask_offset", "height", "width", "channels", "dtype", "own_height", "own_width")


def default_folder(data_dir) -> Path:
    """`<data_dir>.cache` beside the data folder: never inside it, where unknown files are errors."""
    data_dir = Path(data_dir).resolve()
    return data_dir.parent / f"{data_dir.name}.cache"


def cache_key(data_dir, folders, full_size: bool = False) -> str:
    """Digest of the format, dataset.json's bytes, `full_size` and (folder/name, size, mtime_ns) of every visible
    file in `folders` (`files.source_folders`), so any file added, removed, replaced or touched changes the key."""
    description = Path(data_dir) / DESCRIPTION_FILE
    digest = hashlib.sha256(f"maskpair disk cache {FORMAT_VERSION} full_size={bool(full_size)}\n".encode())
    digest.update(description.read_bytes() if description.is_file() else b"(no dataset.json)")
    for folder in folders:
        # scandir's entries carry their path as a string: 20,000 stats cost ~0.1 s, pathlib objects as much again
        with os.scandir(folder) as listing:
            entries = sorted((entry for entry in listing if not entry.name.startswith(".")), key=lambda e: e.name)
        lines = [f"{entry.name}\t{stat.st_size}\t{stat.st_mtime_ns}" for entry in entries if (stat := entry.stat())]
        relative = os.path.relpath(folder, data_dir)  # two folders may share a name (train/a/, val/a/)
        digest.update(f"\n{relative}/\n".encode() + "\n".join(lines).encode())
    return digest.hexdigest()[:32]


class DiskCache:
    """An open, complete cache: read-only views of each pair in the memory-mapped buffers."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        if index["format"] != FORMAT_VERSION:
            raise ValueError(f"{self.folder}: format {index['format']}, expected {FORMAT_VERSION}")
        self.key, self.data_dir, self.names = index["key"], index["data_dir"], index["names"]
        self.files = index["files"]  # per pair: [image path, mask path], relative to the data folder
        self.description = DatasetDescription(**index["description"])
        self.table = np.load(self.folder / "pairs.npy", allow_pickle=False)
        sizes = [(self.folder / kind).stat().st_size for kind in ("images.bin", "masks.bin")]
        if self.table.shape != (len(self.names), len(COLUMNS)) or sizes != [index["image_bytes"], index["mask_bytes"]]:
            raise ValueError(f"{self.folder}: incomplete (sizes or pair table do not match its index)")
        self._images, self._masks = _mapped(self.folder / "images.bin"), _mapped(self.folder / "masks.bin")
        self._rows = self.table.tolist()  # plain ints: a pair's view costs no numpy scalar arithmetic

    def pair(self, i: int):
        """(image (H, W, C), label map (H, W)) of pair `i`: read-only views into the mapped files."""
        image_offset, mask_offset, height, width, channels, code, _, _ = self._rows[i]
        dtype = IMAGE_DTYPES[code]
        image = self._images[image_offset : image_offset + height * width * channels * dtype.itemsize]
        labels = self._masks[mask_offset : mask_offset + height * width]
        return image.view(dtype).reshape(height, width, channels), labels.reshape(height, width)

    def pairs(self, data_dir: Path) -> dict:
        """{name: (image path, mask path)} as paired when the cache was built (the key covers every file name)."""
        data_dir = Path(data_dir)
        return {name: (data_dir / image, data_dir / mask) for name, (image, mask) in zip(self.names, self.files)}

    def sizes(self) -> dict:
        """{name: (H, W)} of every pair as stored."""
        return {name: (row[2], row[3]) for name, row in zip(self.names, self._rows)}

    def original_sizes(self) -> dict:
        """{name: (H, W)} of every pair's files (its own size, before any max_size reduction)."""
        return {name: (row[6], row[7]) for name, row in zip(self.names, self._rows)}

    def eight_bit(self) -> bool:
        """True when every image is stored as uint8."""
        return not self.table[:, COLUMNS.index("dtype")].any()

    def __reduce__(self):  # pickled (e.g. to a worker process) as its folder, never as the mapped bytes
        return DiskCache, (self.folder,)


def _mapped(path: Path) -> np.ndarray:
    """The whole file as a read-only uint8 array backed by a shared memory map (page cache, not anonymous memory)."""
    with open(path, "rb") as file:
        return np.frombuffer(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)


def open_cache(folder, key: str) -> DiskCache | None:
    """The complete cache of `key` under `folder`, or None if there is none (or it is not complete)."""
    try:
        cache = DiskCache(Path(folder) / key)
    except (OSError, ValueError, KeyError, TypeError, DataError):  # missing, truncated, foreign: rebuilt
        return None
    return cache if cache.key == key else None


def build_cache(folder, key: str, data_dir, description: DatasetDescription, pairs: dict, read, workers: int,
                progress: bool, original_sizes: dict | None = None) -> DiskCache:
    """Decode every pair (`read(name)` -> (image, label map), DataError for a bad pair) into a new cache of `key`;
    `original_sizes`: {name: the files' own (H, W)} when pairs are read at a reduced size.

    Pairs are decoded in threads and written in order as they come, so memory holds a few pairs, not the data.
    Every bad pair is reported together (DataError) and nothing is kept; so is an interrupted build."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_builds(folder)
        building = Path(tempfile.mkdtemp(prefix=f"{key}{TMP_MARK}{os.getpid()}-", dir=folder))
        building.chmod(0o755)  # mkdtemp's 0700 would keep the published cache from the rest of the team
    except OSError as err:
        raise DataError(f"{folder}: cannot write the disk cache here ({err.strerror}); pass cache_dir=") from None
    try:
        names = list(pairs)
        table, problems, totals = _write_buffers(building, names, read, workers, progress, original_sizes or {})
        if problems:
            raise DataError([line for name in names for line in problems.get(name, [])])
        np.save(building / "pairs.npy", table)
        index = {"format": FORMAT_VERSION, "key": key, "data_dir": str(Path(data_dir).resolve()),
                 "description": dataclasses.asdict(description), "names": names,
                 "files": [[os.path.relpath(image, data_dir), os.path.relpath(mask, data_dir)]
                           for image, mask in pairs.values()],
                 "image_bytes": totals[0], "mask_bytes": totals[1]}
        write_json(building / "index.json", index, indent=None)  # written last
        cache = _publish(building, folder / key)
    except BaseException:  # KeyboardInterrupt too: never leave a partial build behind
        shutil.rmtree(building, ignore_errors=True)
        raise
    _remove_other_keys(folder, key, index["data_dir"])
    return cache


def _write_buffers(building: Path, names, read, workers: int, progress: bool, original_sizes: dict):
    """Write images.bin and masks.bin: (pairs table, {name: problem lines}, (image bytes, mask bytes))."""
    from tqdm.auto import tqdm

    table = np.zeros((len(names), len(COLUMNS)), dtype=np.int64)
    problems = {}
    with (open(building / "images.bin", "wb") as images, open(building / "masks.bin", "wb") as masks,
          closing(_decoded_in_order(read, names, workers)) as decoded):  # closing: no decoding after an interrupt
        for k, (name, (pair, lines)) in enumerate(tqdm(zip(names, decoded), total=len(names), disable=not progress,
                                                       desc="building disk cache", unit="pair")):
            if lines:
                problems[name] = lines
                continue
            image, labels = pair
            images.write(bytes(-images.tell() % ALIGN))
            table[k] = (images.tell(), masks.tell(), *image.shape, IMAGE_DTYPES.index(image.dtype),
                        *original_sizes.get(name, image.shape[:2]))
            images.write(np.ascontiguousarray(image).data)
            masks.write(np.ascontiguousarray(labels).data)
        totals = (images.tell(), masks.tell())
    return table, problems, totals


def _decoded_in_order(read, names, workers: int):
    """Yield ((image, labels) or None, problem lines or None) for each name in order, decoded in threads with at
    most a few pairs per thread in flight (PNG/zlib and np.load release the GIL)."""

    def attempt(name):
        try:
            return read(name), None
        except DataError as err:
            return None, err.problems

    pool = ThreadPoolExecutor(max(1, workers))
    pending, upcoming = deque(), iter(names)
    try:
        for name in upcoming:
            pending.append(pool.submit(attempt, name))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _publish(building: Path, final: Path) -> DiskCache:
    """Rename the finished build to its key; if another process published the same key first, use theirs; an
    incomplete folder of that name (a crash of an older version) is replaced."""
    cache = DiskCache(building)  # the complete build must open, or it is never published
    del cache
    for _ in range(2):
        try:
            os.replace(building, final)
            return DiskCache(final)
        except OSError:  # `final` exists and is not empty
            if open_cache(final.parent, final.name) is not None:
                shutil.rmtree(building, ignore_errors=True)
                return DiskCache(final)
            shutil.rmtree(final, ignore_errors=True)
    raise DataError(f"{final}: cannot publish the disk cache (another process keeps replacing it?)")


def _remove_abandoned_builds(folder: Path) -> None:
    """Delete `<key>.tmp-<pid>-*` folders whose process is gone (a build killed before it could clean up)."""
    for path in folder.glob(f"*{TMP_MARK}*"):
        pid = path.name.split(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_other_keys(folder: Path, key: str, data_dir: str) -> None:
    """Delete the complete caches of the same data folder under other keys (the files or description changed)."""
    for path in folder.iterdir():
        if path.name == key or TMP_MARK in path.name or not (path / "index.json").is_file():
            continue
        try:
            same_data = json.loads((path / "index.json").read_text(encoding="utf-8")).get("data_dir") == data_dir
        except (OSError, ValueError):
            continue
        if same_data:
            shutil.rmtree(path, ignore_errors=True)
