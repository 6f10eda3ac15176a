"""Find and pair image and mask files, read and validate them against the dataset description, split, cache
and batch them for a Keras UNet.

Also fetches the example spine-MRI data (hash-checked) and offers a CLI: `check DATA_DIR`, `fetch [DEST]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import re
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
from PIL import Image

import disk_cache
from augment import Augment, as_augment  # noqa: F401  (loader.Augment is a public name)
from description import (CHANNEL_COUNTS, DESCRIPTION_FILE, IGNORE_INDEX, IGNORE_LABEL, IMAGE_SUFFIXES,
                         MASK_SUFFIXES, MAX_CLASSES, DatasetDescription, read_declared)
from errors import DataError  # noqa: F401  (loader.DataError is the public name)
from verdicts import ReviewLog

PROJECT_DIR = Path(__file__).resolve().parent
REMAINDER_POLICIES = ("fill", "drop", "keep")
SPLITS = ("train", "val", "test")
SET_ASIDE = "excluded"  # optional key of explicit splits: examples read and checked but never batched
NNUNET_IMAGE_NAME = re.compile(r"(.+)_(\d{4})")  # imagesTr/NAME_0000.png: case NAME, channel 0000
DIGIT_RUNS = re.compile(r"(\d+)")

EXAMPLE_DATA_URL = (
    "https://raw.githubusercontent.com/sulaimanvesal/vertebraeSegementation/"
    "edbc59b45b516a82a3c8ae11cd850ba6c450aa2e/input/"
)
EXAMPLE_DATA_DIR = PROJECT_DIR / "data" / "spine-mri"
EXAMPLE_DESCRIPTION = PROJECT_DIR / "data" / "spine-mri.dataset.json"  # written into the fetched folder
DATASET_CARD = PROJECT_DIR / "data" / "README.md"


# ---------------------------------------------------------------- finding and pairing files


def natural_key(name: str):
    """Sort key that puts `2` before `10` (digits compare as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in DIGIT_RUNS.split(name)]


def _short(path: Path) -> str:
    """`images/7.png`: the folder and file name, as error messages show them."""
    return f"{path.parent.name}/{path.name}"


def _plain_name(path: Path, stem: str):
    """(pair name, problem): a file's name without its extension."""
    return stem, None


def _nnunet_image_name(path: Path, stem: str):
    """(pair name, problem): NAME of `imagesTr/NAME_0000.EXT`; other channel files are refused."""
    match = NNUNET_IMAGE_NAME.fullmatch(stem)
    if not match:
        return None, f"{_short(path)}: nnU-Net image names end in _0000 before the extension (NAME_0000{path.suffix})"
    if match.group(2) != "0000":
        return None, (f"{_short(path)}: channel file _{match.group(2)}: separate channel files are not supported "
                      f"(one _0000 file per case, RGB in one file)")
    return match.group(1), None


def _files_by_name(folder: Path, suffixes, file_ending, name_of=_plain_name) -> dict[str, Path]:
    """Map pair name -> file for the visible files of `folder`; refuse unknown types and clashing names.

    With a `file_ending`, files with another ending are not considered (nnU-Net's convention)."""
    problems, found = [], {}
    # scandir tells folders from files without a stat per file, and names are split as strings, not by pathlib:
    # at 20,000 pairs this listing is most of what reopening a disk cache costs (3x faster than iterdir/is_dir)
    with os.scandir(folder) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.name.startswith("."):  # .DS_Store, .ipynb_checkpoints, editor swap files
            continue
        path = folder / entry.name
        if entry.is_dir():
            problems.append(f"{_short(path)}: unexpected folder inside {folder.name}/")
            continue
        stem, suffix = os.path.splitext(entry.name)
        if file_ending and suffix.lower() != file_ending.lower():
            continue
        if suffix.lower() not in suffixes:
            problems.append(f"{_short(path)}: unsupported file type (expected one of {', '.join(suffixes)})")
            continue
        name, problem = name_of(path, stem)
        if problem:
            problems.append(problem)
        elif name in found:
            problems.append(f"{_short(path)} and {_short(found[name])}: two files for example {name}")
        else:
            found[name] = path
    if problems:
        raise DataError(problems)
    return found


def pair_files(data_dir) -> dict[str, tuple[Path, Path]]:
    """Pair each image with its mask by name, never by position: {name: (image, mask)} in natural order.

    Folders and layout come from `data_dir/dataset.json` if there is one: images/NAME.* with masks/NAME.*
    (or the folders it names), or nnU-Net's imagesTr/NAME_0000.EXT with labelsTr/NAME.EXT."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    return _pair_files(data_dir, read_declared(data_dir))


def _pair_files(data_dir: Path, declared: dict) -> dict[str, tuple[Path, Path]]:
    folders = {kind: data_dir / declared[kind] for kind in ("images", "masks")}
    missing = [f"{data_dir}: no {declared[kind]}/ folder" for kind, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise DataError(missing)
    name_of = _nnunet_image_name if declared["layout"] == "nnunet" else _plain_name
    images = _files_by_name(folders["images"], IMAGE_SUFFIXES, declared["file_ending"], name_of)
    masks = _files_by_name(folders["masks"], MASK_SUFFIXES, declared["file_ending"])
    problems = [f"{folders[kind]}: empty folder" for kind, found in (("images", images), ("masks", masks)) if not found]
    if problems:
        raise DataError(problems)
    for found, other_found, other in ((images, masks, "mask"), (masks, images, "image")):
        for name in sorted(found.keys() - other_found, key=natural_key):
            problems.append(f"{_short(found[name])}: no matching {other} for example {name}")
    if problems:
        raise DataError(problems)
    return {name: (images[name], masks[name]) for name in sorted(images, key=natural_key)}


# ---------------------------------------------------------------- file headers (nothing decoded)

MODE_DTYPES = {"1": "bool", "L": "uint8", "P": "uint8", "RGB": "uint8", "YCbCr": "uint8", "LA": "uint8",
               "PA": "uint8", "RGBA": "uint8", "RGBX": "uint8", "CMYK": "uint8", "I;16": "uint16",
               "I;16B": "uint16", "I;16L": "uint16", "I;16N": "uint16", "I": "int32", "F": "float32"}
SINGLE_CHANNEL_MASK_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says, before any pixel is decoded."""

    size: tuple  # (H, W)
    channels: int  # as the loader will read it: a palette image is RGB, a palette mask holds label values
    dtype: np.dtype
    kind: str  # PIL mode ("L", "RGB", "I;16", ...) or "npy", for messages


def read_header(path: Path, mask: bool = False) -> FileHeader:
    """Size, channels and dtype of an image or mask file from its header only (PIL without decoding, or the
    .npy header through a memory map, which also finds a .npy shorter than its header says)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path, mmap_mode="r")
        if array.ndim not in (2, 3):
            raise DataError(f"{_short(path)}: shape {_dims(array.shape)}, expected HxW or HxWxC")
        channels = array.shape[2] if array.ndim == 3 else 1
        return FileHeader(tuple(array.shape[:2]), channels, array.dtype, "npy")
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{_short(path)}: unreadable image ({err})") from None
    if mode not in MODE_DTYPES:
        raise DataError(f"{_short(path)}: unsupported image mode {mode}")
    channels = 3 if mode == "P" and not mask else Image.getmodebands(mode)
    return FileHeader((height, width), channels, np.dtype(MODE_DTYPES[mode]), mode)


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _channels_text(header: FileHeader) -> str:
    return f"{header.channels} channel{'s' if header.channels != 1 else ''} ({header.kind})"


def header_problems(paths, headers, n_channels: int, declared: bool) -> list[str]:
    """What the headers of one pair already show to be wrong: channels, dtype, sizes (one line each)."""
    (image_path, mask_path), (image, mask) = paths, headers
    problems = []
    if image.channels not in CHANNEL_COUNTS:
        problems.append(f"{_short(image_path)}: {_channels_text(image)}; images must have "
                        f"{' or '.join(f'{n} ({kind})' for n, kind in CHANNEL_COUNTS.items())} channels")
    elif image.channels != n_channels:
        expected = (f"{DESCRIPTION_FILE} channel_names has {n_channels}" if declared else
                    f"most images have {n_channels} (without {DESCRIPTION_FILE} channel_names, that decides)")
        problems.append(f"{_short(image_path)}: {_channels_text(image)}, but {expected}")
    if image.dtype.kind not in "iubf":
        problems.append(f"{_short(image_path)}: unsupported image dtype {image.dtype}")
    if 0 in image.size:
        problems.append(f"{_short(image_path)}: empty image ({_dims(image.size)})")
    if mask.channels != 1:
        problems.append(f"{_short(mask_path)}: {'RGB' if mask.kind.startswith('RGB') else _channels_text(mask)} "
                        f"mask, expected one channel of label values")
    if mask.dtype.kind not in "iubf":
        problems.append(f"{_short(mask_path)}: unsupported mask dtype {mask.dtype}")
    if image.size != mask.size:
        problems.append(f"{_short(mask_path)}: shape {_dims(mask.size)}, image {_short(image_path)} is "
                        f"{_dims(image.size)}")
    return problems


# ---------------------------------------------------------------- reading and validating files


def _load_npy(path: Path, mmap_mode=None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)  # never unpickle: files may come from anywhere
    except ValueError as err:
        if "pickle" in str(err).lower() or "python objects" in str(err).lower():
            raise DataError(f"{_short(path)}: object array (needs pickle), refused") from None
        raise DataError(f"{_short(path)}: unreadable or truncated .npy ({err})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{_short(path)}: unreadable or truncated .npy ({err})") from None


def _load_pil(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here and not later
            return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{_short(path)}: unreadable or truncated image ({err})") from None


def read_image(path: Path, n_channels: int) -> np.ndarray:
    """Read one image as (H, W, C), C = n_channels: uint8 when the file is 8-bit, else float32 in [0, 1].

    Never converted between gray and colour (a channel count other than n_channels is an error); palette
    images are read as RGB; 16-bit images are scaled by 1/65535; float images must already lie in [0, 1].
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        img = _load_pil(path)
        if img.mode in ("1", "P", "YCbCr"):
            img = img.convert("L" if img.mode == "1" else "RGB")
        array = np.asarray(img)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] != n_channels:
        raise DataError(f"{_short(path)}: image has shape {_dims(array.shape)}, expected HxWx{n_channels}")
    if array.dtype == np.uint8:
        return array
    sixteen_bit = array.dtype.kind == "u" and array.dtype.itemsize == 2  # any byte order
    if sixteen_bit or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return (array.astype(np.float32) / 65535).clip(0, 1)
    if array.dtype.kind in "iub":
        if array.min(initial=0) < 0:
            raise DataError(f"{_short(path)}: negative pixel values in an integer image")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"{_short(path)}: image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(f"{_short(path)}: float image values span [{low:g}, {high:g}], expected [0, 1]")
        return array.astype(np.float32)
    raise DataError(f"{_short(path)}: unsupported image dtype {array.dtype}")


def read_mask_values(path: Path) -> np.ndarray:
    """Read one mask's label values as a 2D integer (or integer-valued float) array; refuses colour masks,
    NaN and fractions. A 1-bit PNG reads as 0/255, as image viewers show it."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        img = _load_pil(path)
        if img.mode not in SINGLE_CHANNEL_MASK_MODES:
            raise DataError(f"{_short(path)}: {img.mode} mask, expected one channel of label values")
        array = np.asarray(img.convert("L") if img.mode == "1" else img)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{_short(path)}: mask has shape {_dims(array.shape)}, "
                        f"expected one channel of label values (HxW)")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise DataError(f"{_short(path)}: mask holds NaN")
        if not np.array_equal(array, np.round(array)):
            raise DataError(f"{_short(path)}: mask is not integer-valued (dtype {array.dtype})")
    elif array.dtype.kind == "b":
        array = array.view(np.uint8)
    elif array.dtype.kind not in "iu":
        raise DataError(f"{_short(path)}: unsupported mask dtype {array.dtype}")
    return array


def mask_to_labels(values: np.ndarray, description: DatasetDescription, path: Path) -> np.ndarray:
    """Mask values -> uint8 label map: the class index (rank of the value among the classes), IGNORE_INDEX for
    the ignore value; a value not in the description's labels is an error naming it."""
    known = np.array(list(description.labels.values()))  # sorted by value
    rank = {name: k for k, name in enumerate(description.classes)}
    index = np.array([rank.get(name, IGNORE_INDEX) for name in description.labels], dtype=np.int16)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if values.dtype.kind in "iu" and high - low < 2**16:  # a table over the values' range: no search per pixel
        table = np.full(high - low + 1, -1, dtype=np.int16)
        fits = (known >= low) & (known <= high)
        table[known[fits] - low] = index[fits]
        found = table[values - low] if low else table[values]
    else:  # float masks, or values spread wider than a table should be
        position = np.searchsorted(known, values).clip(0, len(known) - 1)
        found = np.where(known[position] == values, index[position], -1)
    unknown = found < 0
    if unknown.any():
        bad = np.unique(values[unknown])
        listed = ", ".join(f"{v:g}" for v in bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        where = f"{DESCRIPTION_FILE} labels" if description.declared else "the labels found in the masks"
        raise DataError(f"{_short(Path(path))}: value{'s' if len(bad) > 1 else ''} {listed} "
                        f"{'are' if len(bad) > 1 else 'is'} not in {where} ({description.labels_text()})")
    return found.astype(np.uint8)


def read_pair(image_path: Path, mask_path: Path, description: DatasetDescription):
    """Read and validate one pair: image (H, W, C) uint8 or float32, label map (H, W) uint8 of the same size."""
    image = read_image(image_path, description.n_channels)
    labels = mask_to_labels(read_mask_values(mask_path), description, mask_path)
    if image.shape[:2] != labels.shape:
        raise DataError(f"{_short(Path(mask_path))}: shape {_dims(labels.shape)}, image {_short(Path(image_path))} "
                        f"is {_dims(image.shape[:2])}")
    return image, labels


def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float32 image (any shape) -> float32 in [0, 1]."""
    return image * np.float32(1 / 255) if image.dtype == np.uint8 else image.astype(np.float32, copy=False)


def _float_into(images: np.ndarray, out: np.ndarray) -> None:
    """Write `image_to_float(images)` into `out` without a temporary."""
    if images.dtype == np.uint8:
        np.multiply(images, np.float32(1 / 255), out=out)
    else:
        out[...] = images


_ASSEMBLY_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_assembly_pools: dict[int, ThreadPoolExecutor] = {}


def _assembly_pool() -> ThreadPoolExecutor:
    """This process's thread pool for batch assembly (a forked child gets its own: the parent's threads are gone)."""
    pid = os.getpid()
    if pid not in _assembly_pools:
        _assembly_pools[pid] = ThreadPoolExecutor(max(1, _ASSEMBLY_THREADS - 1), thread_name_prefix="batch-assembly")
    return _assembly_pools[pid]


def _fill_batch(raw_images, masks, images, onehot) -> None:
    """Write float images and one-hot masks of a whole batch, split by example over `_ASSEMBLY_THREADS` threads.

    numpy releases the GIL in these loops, so the parts run on separate cores (~1.7x faster for B=16 on 2 idle
    cores; ~15% slower when other jobs hold every core, see bench/README.md). Parts write disjoint slices.
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
    page-faulted on every page (480 faults per 2 MB compact batch: 4x slower on the busy 2-core machine).
    Aligned: malloc's blocks start 16 bytes past a page, and copying from a source 16 bytes behind the
    destination modulo 4096 (every pair of the disk cache, whose pairs start on 64-byte boundaries) ran 4x slower
    (4K aliasing of loads with stores) than from any other offset."""
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


# ---------------------------------------------------------------- describing a dataset


def _progress(iterable, total, enabled, desc, unit="pair"):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)


def _map_names(read, names, workers: int, progress: bool = False, desc: str = ""):
    """Run `read(name)` for every name in threads: ({name: result}, {name: problem lines}), each in `names` order.

    PNG/zlib decoding and np.load release the GIL, so the threads overlap."""

    def attempt(name):
        try:
            return read(name), None
        except DataError as err:
            return None, err.problems

    results, problems = {}, {}
    with ThreadPoolExecutor(max(1, min(workers, len(names)))) as pool:
        for name, (result, lines) in zip(names, _progress(pool.map(attempt, names), len(names), progress, desc)):
            if lines:
                problems[name] = lines
            else:
                results[name] = result
    return results, problems


def _pair_headers(paths) -> tuple[FileHeader, FileHeader]:
    """The headers of (image, mask); both files' problems together."""
    headers, problems = [], []
    for path, mask in zip(paths, (False, True)):
        try:
            headers.append(read_header(path, mask))
        except DataError as err:
            problems += err.problems
    if problems:
        raise DataError(problems)
    return tuple(headers)


def _inferred_channel_names(headers) -> dict:
    """Channels of a dataset without channel_names: those of most images, gray (1) or RGB (3); the images
    with another count are then errors, so one stray colour image is named, not every gray one."""
    counts = Counter(image.channels for image, _ in headers.values() if image.channels in CHANNEL_COUNTS)
    n_channels = max(counts, key=lambda n: (counts[n], n)) if counts else 1
    return {"0": "R", "1": "G", "2": "B"} if n_channels == 3 else {"0": "gray"}


def _inferred_labels(data_dir, pairs, names, workers, progress):
    """({"value": value} for every distinct mask value of `names`, {name: problem lines})."""
    distinct, problems = _map_names(lambda name: np.unique(read_mask_values(pairs[name][1])), names, workers,
                                    progress, "reading masks")
    values = np.unique(np.concatenate(list(distinct.values()))) if distinct else np.array([])
    if len(values) > MAX_CLASSES:
        listed = ", ".join(f"{v:g}" for v in values[:8])
        raise DataError(f"{data_dir}: the masks hold {len(values)} distinct values ({listed}, ...); at most "
                        f"{MAX_CLASSES} classes: give the labels in {DESCRIPTION_FILE}")
    return {str(int(v)): int(v) for v in values}, problems


def _inspect(data_dir, workers: int, progress=None):
    """Everything known before any pixel is kept: (description, pairs, headers, problems {name: lines}).

    Reads every file's header; reads every mask only when the labels have to be inferred."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    declared = read_declared(data_dir)
    pairs = _pair_files(data_dir, declared)
    progress = len(pairs) >= 200 if progress is None else progress
    headers, problems = _map_names(lambda name: _pair_headers(pairs[name]), list(pairs), workers)
    channel_names = declared.get("channel_names") or _inferred_channel_names(headers)
    for name, pair_headers in headers.items():
        lines = header_problems(pairs[name], pair_headers, len(channel_names), "channel_names" in declared)
        if lines:
            problems[name] = lines
    labels = declared.get("labels")
    if labels is None:
        labels, more = _inferred_labels(data_dir, pairs, [n for n in pairs if n not in problems], workers, progress)
        problems.update(more)
        if not labels:  # no mask could be read: nothing to describe, only problems to report
            raise DataError(_problem_lines(problems, pairs))
    description = DatasetDescription(**{**declared, "channel_names": channel_names, "labels": labels})
    return description, pairs, headers, problems


def _problem_lines(problems: dict, names) -> list[str]:
    """Every problem line, in the natural order of the examples."""
    return [line for name in names for line in problems.get(name, [])]


def describe(data_dir) -> DatasetDescription:
    """The complete description of `data_dir`: its dataset.json, with labels (the distinct mask values, named
    by value) and channels (those of most images: gray or RGB) inferred where it gives none, or where there is
    none. Reads every file's header, and every mask when labels are inferred; DataError lists every problem."""
    description, pairs, _, problems = _inspect(data_dir, _default_workers())
    if problems:
        raise DataError(_problem_lines(problems, pairs))
    return description


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 1) + 2)


def open_disk_cache(data_dir, cache_dir=None, workers: int | None = None, progress: bool | None = None):
    """(DiskCache, pairs) of `data_dir`: the cache of the files as they are now, reopened when its key matches
    (the image and mask folders listed and every file stat-ed, none read), else built after the same checks as
    `DataLoader(cache=False)`. The key covers every file's name, so the pairs are those the cache recorded.

    cache_dir: where caches are kept (default: `disk_cache.default_folder`, `<data_dir>.cache` beside the data)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    declared = read_declared(data_dir)
    folders = (data_dir / declared["images"], data_dir / declared["masks"])
    folder = disk_cache.default_folder(data_dir) if cache_dir is None else Path(cache_dir)
    # stat before anything is decoded: a file changed during a build then fails the key next time (rebuilt)
    key = disk_cache.cache_key(data_dir, folders) if all(path.is_dir() for path in folders) else None
    cache = key and disk_cache.open_cache(folder, key)
    if cache is None:  # _inspect reports missing folders, pairing and header problems as the other modes do
        workers = workers or _default_workers()
        description, pairs, _, problems = _inspect(data_dir, workers, progress)
        if problems:
            raise DataError(_problem_lines(problems, pairs))
        cache = disk_cache.build_cache(folder, key, data_dir, description, pairs,
                                       lambda name: read_pair(*pairs[name], description), workers,
                                       len(pairs) >= 200 if progress is None else progress)
    # the description as read here (its source path as given now), not as it was when the cache was built
    cache.description = dataclasses.replace(cache.description, source=declared["source"])
    return cache, cache.pairs(*folders)


# ---------------------------------------------------------------- splitting


def split_counts(n: int, fractions) -> list[int]:
    """Split n items by fractions with largest-remainder rounding (so 20 by 0.6/0.2/0.2 is 12/4/4)."""
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != 3 or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(fractions)}")
    exact = fractions * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def split_names(names, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Seeded split into disjoint train/val/test lists; the same in any process for the same names and seed."""
    keys = {name: natural_key(name) for name in names}  # once per name: 20,000 names take 0.1 s per pass
    names = sorted(names, key=keys.__getitem__)  # independent of the caller's (or the file system's) order
    order = np.random.default_rng(seed).permutation(len(names))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([0] + counts)
    return {
        split: sorted((names[i] for i in order[bounds[k] : bounds[k + 1]]), key=keys.__getitem__)
        for k, split in enumerate(SPLITS)
    }


def fitting_batch_size(splits: dict, batch_size: int) -> int:
    """`batch_size`, lowered if needed so that every non-empty split can fill a batch (small datasets); a
    warning says when and why, so a requested batch size is never replaced silently."""
    sizes = {split: len(splits[split]) for split in SPLITS if splits[split]}
    fitting = max(1, min([int(batch_size), *sizes.values()]))
    if fitting < batch_size:
        smallest = min(sizes, key=sizes.get)
        warnings.warn(f"batch size {batch_size} lowered to {fitting}: the {smallest} split has only "
                      f"{sizes[smallest]} examples", stacklevel=2)
    return fitting


def kfold_splits(names, n_folds: int = 5, fold: int = 0, seed: int = 0, val_fraction: float = 0.2):
    """Fold `fold` of a seeded k-fold: that fold is test; val is drawn from the rest; train is what remains."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    names = sorted(names, key=natural_key)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    test = order[fold::n_folds]
    rest = [name for name in order if name not in test]
    val = rest[: round(val_fraction * len(names))]
    train = rest[len(val) :]
    return {split: sorted(group, key=natural_key) for split, group in zip(SPLITS, (train, val, test))}


def _checked_splits(splits: dict, names) -> dict[str, list[str]]:
    """Validate explicit splits: keys train/val/test (and optionally SET_ASIDE), disjoint, together exactly
    `names`, so that an example left out of training is left out on purpose, never by a mistake in a list."""
    keys = SPLITS + ((SET_ASIDE,) if SET_ASIDE in splits else ())
    if set(splits) != set(keys):
        raise ValueError(f"explicit splits need exactly the keys {SPLITS} (and optionally {SET_ASIDE!r}), "
                         f"got {tuple(splits)}")
    listed = [name for split in keys for name in splits[split]]
    unknown = sorted(set(listed) - set(names), key=natural_key)
    repeated = sorted({name for name in listed if listed.count(name) > 1}, key=natural_key)
    left_out = sorted(set(names) - set(listed), key=natural_key)
    for problem, group in (("unknown", unknown), ("in more than one split", repeated), ("in no split", left_out)):
        if group:
            raise ValueError(f"explicit splits: examples {problem}: {', '.join(group)}")
    return {split: sorted(map(str, splits[split]), key=natural_key) for split in keys}




def set_aside_reviewed_problems(splits: dict, review_log, names) -> dict:
    """`splits` with the train examples whose latest verdict in `review_log` is "problem" moved to SET_ASIDE
    (read and checked, never batched); val and test unchanged. A missing log file sets nothing aside."""
    verdicts = ReviewLog(review_log).verdicts()
    problems = {name for name, entry in verdicts.items() if entry["verdict"] == "problem"}
    strangers = sorted(problems - set(names), key=natural_key)
    if strangers:
        warnings.warn(f"{review_log}: {len(strangers)} example(s) marked \"problem\" are not in this dataset "
                      f"({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''})", stacklevel=3)
    moved = [name for name in splits["train"] if name in problems]
    if not moved:
        return splits
    return {**splits, "train": [name for name in splits["train"] if name not in problems],
            SET_ASIDE: sorted([*splits.get(SET_ASIDE, []), *moved], key=natural_key)}


# ---------------------------------------------------------------- the loader


class DataLoader:
    """Paired images and masks of `data_dir`, as its dataset.json describes them (or as `describe` infers them
    without one), validated, split and batched.

    split: (train, val, test) fractions, or an explicit {"train": [...], "val": [...], "test": [...]}
    (e.g. from `kfold_splits`, optionally with SET_ASIDE: [...]); remainder: how the last short batch of an
    epoch is handled -- "fill" tops it up with other random examples of the same split, "drop" drops it,
    "keep" yields it short.
    cache: True decodes every pair once at construction into memory (uint8 where possible); "disk" keeps the
    decoded pairs in memory-mapped files (`disk_cache`), built once and reopened without decoding while no file
    and not dataset.json changed, for data larger than memory or quick restarts; False reads each batch from the
    files, checking every file's header (size, channels, dtype) at construction and the values as they are read.
    cache_dir: (cache="disk" only) where the disk caches are kept; default `<data_dir>.cache` beside the data.
    augment: None, True (default `Augment()`), a dict of `Augment` fields or an `Augment`; train split only.
    pad_multiple: batches are padded bottom/right to their largest image (or the train crop), rounded up to a
    multiple of this (the UNet's 32; 1: no rounding); padding is 0 in the image and carries no target.
    review_log: a review verdict log (`verdicts.ReviewLog`); train examples whose latest verdict there is
    "problem" are set aside (SET_ASIDE), val and test stay as they are.
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
    ):
        if remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be at least 1, got {pad_multiple}")
        if cache not in (True, False, "disk"):
            raise ValueError(f"cache must be True (in memory), \"disk\" or False (streaming), got {cache!r}")
        if cache_dir is not None and cache != "disk":
            raise ValueError(f"cache_dir is used only with cache=\"disk\", got cache={cache!r}")
        self.data_dir = Path(data_dir)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.remainder = remainder
        self.pad_multiple = int(pad_multiple)
        self.augment = as_augment(augment)
        self._workers = workers or _default_workers()
        self._disk = None
        if cache == "disk":
            self._disk, self.pairs = open_disk_cache(self.data_dir, cache_dir, self._workers, progress)
            self.description, headers, problems = self._disk.description, None, {}
        else:
            self.description, self.pairs, headers, problems = _inspect(self.data_dir, self._workers, progress)
        self.labels = self.description.classes
        self.n_classes = self.description.n_classes
        self.n_channels = self.description.n_channels
        self.names = list(self.pairs)
        self._progress = len(self.names) >= 200 if progress is None else progress
        self.splits = (_checked_splits(split, self.names) if isinstance(split, dict)
                       else split_names(self.names, split, self.seed))
        if review_log is not None:
            self.splits = set_aside_reviewed_problems(self.splits, review_log, self.names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self.cache = cache
        self._images = self._masks = None
        if cache is True:
            decoded, more = self._decode_all([name for name in self.names if name not in problems])
            problems.update(more)
        if problems:
            raise DataError(_problem_lines(problems, self.names))
        if cache is True:
            self._images = [decoded[name][0] for name in self.names]
            self._masks = [decoded[name][1] for name in self.names]
            self._eight_bit = all(image.dtype == np.uint8 for image in self._images)
        elif cache == "disk":
            self._eight_bit = self._disk.eight_bit()
        else:  # a uint8 (or 1-bit) header always reads as uint8; other dtypes may read as float32
            self._eight_bit = all(headers[name][0].dtype in (np.uint8, np.bool_) for name in self.names)
        self.sizes = self._disk.sizes() if headers is None else {name: headers[name][0].size for name in self.names}

    # -- reading

    def _decode_all(self, names):
        """Decode every pair of `names` once, in threads, into per-pair arrays (so images may differ in size):
        ({name: (image, label map)}, {name: problem lines})."""
        decoded, problems = _map_names(lambda name: read_pair(*self.pairs[name], self.description), names,
                                       self._workers, self._progress, "decoding")
        for arrays in decoded.values():
            for array in arrays:
                array.flags.writeable = False  # shared by every batch: a caller's edit must not corrupt it
        return decoded, problems

    def _row(self, name) -> int:
        if name not in self._index:
            raise KeyError(f"no example named {name!r} in {self.data_dir}")
        return self._index[name]

    def _read_checked(self, name):
        """Read one pair from disk (streaming) and check it still has the size its header had at construction."""
        self._row(name)  # unknown names fail with KeyError before any file is opened
        image, labels = read_pair(*self.pairs[name], self.description)
        if labels.shape != self.sizes[name]:
            raise DataError(f"{_short(self.pairs[name][0])}: shape {_dims(labels.shape)}, but "
                            f"{_dims(self.sizes[name])} when the loader was built (file changed?)")
        return image, labels

    def raw_pair(self, name):
        """The stored arrays of `name`: image (H, W, C) uint8 (or float32 in [0, 1]) and label map (H, W) uint8
        (class index, IGNORE_INDEX = ignore). From the cache these are read-only views, not copies."""
        i = self._row(name)
        if self._disk is not None:
            return self._disk.pair(i)
        if self.cache:
            return self._images[i], self._masks[i]
        return self._read_checked(name)

    def _raw_batch(self, names) -> list:
        """[(image, label map)] of `names`, from the cache (in memory or on disk) or from the files."""
        if self.cache:
            return [self.raw_pair(name) for name in names]
        # map() re-raises the first failing name in batch order, as a sequential loop would
        with ThreadPoolExecutor(max(1, min(self._workers, len(names)))) as pool:
            return list(pool.map(self._read_checked, names))

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
        eight_bit = self._eight_bit and self._augment_for(split) is None
        return np.dtype(np.uint8 if eight_bit else np.float32)

    def batch_arrays(self, names, split="val", epoch: int = 0, step: int = 0, compact: bool = False):
        """Assemble one batch: images float32 (B, H, W, C), one-hot float32 (B, H, W, K), padded as `batch_shape`
        says; ignore and padding pixels have an all-zero one-hot row (padding also a 0 image).

        compact: images as `compact_image_dtype(split)` (uint8 for 8-bit data: 8x fewer bytes than float32
        image + 3-class one-hot) and label maps uint8 (B, H, W) with IGNORE_INDEX for ignore and padding; the
        same batch before `image_to_float` and one-hot (`keras_adapters.expand_batch` does both in the graph).
        Augmentation (split "train" only) is seeded by (seed, epoch, step), so it is the same in every adapter.
        """
        augment = self._augment_for(split)
        pairs = self._raw_batch(names)
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
        """Endless generator of (images, one-hot) batches of `split` (compact: (images, label maps)); see
        `batch_arrays` for shapes."""
        self._split_names(split)  # fail now, not at the first next()
        return (self.batch_arrays(names, split, epoch, step, compact) for epoch, step, names in self.iter_epochs(split))

    # -- adapters (TensorFlow is imported only here)

    def keras_sequence(self, split="train"):
        """A `tf.keras.utils.Sequence` over `split` yielding the same batches as `get_batch`."""
        from keras_adapters import LoaderSequence

        self._split_names(split)
        return LoaderSequence(self, split)

    def tf_dataset(self, split="train", epochs: int | None = None, prefetch: int | None = None, ready_times=None):
        """A prefetching `tf.data.Dataset` of the same batches as `get_batch` (endless when epochs is None), carried
        compact and expanded inside the graph; `ready_times`: a list that receives the time each batch was ready
        (see `keras_adapters.loader_dataset`)."""
        from keras_adapters import loader_dataset

        self._split_names(split)
        return loader_dataset(self, split, epochs, prefetch, ready_times)

    def __repr__(self):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"DataLoader({str(self.data_dir)!r}: {len(self.names)} pairs, {sizes}, batch {self.batch_size})"


# ---------------------------------------------------------------- checking a folder


def check_dataset(data_dir):
    """Read and validate every pair without keeping them: (description, summary, problems); description and
    summary are None when there are problems."""
    workers = _default_workers()
    try:
        description, pairs, _, problems = _inspect(data_dir, workers)
    except DataError as err:
        return None, None, err.problems

    def measure(name):
        image, labels = read_pair(*pairs[name], description)
        return image.shape, image.dtype, np.bincount(labels.ravel(), minlength=IGNORE_INDEX + 1)

    unchecked = [name for name in pairs if name not in problems]
    measured, more = _map_names(measure, unchecked, workers, len(pairs) >= 200, "checking")
    problems.update(more)
    if problems:
        return None, None, _problem_lines(problems, pairs)
    counts = np.sum([pixels for _, _, pixels in measured.values()], axis=0)
    label_pixels = dict(zip(description.classes, counts[: description.n_classes].tolist()))
    if description.ignore_value is not None:
        label_pixels[IGNORE_LABEL] = int(counts[IGNORE_INDEX])
    summary = {
        "pairs": len(pairs),
        "sizes": sorted({shape[:2] for shape, _, _ in measured.values()}),
        "channels": description.n_channels,
        "image_dtypes": sorted({str(dtype) for _, dtype, _ in measured.values()}),
        "label_pixels": label_pixels,
    }
    return description, summary, []


def format_summary(data_dir, summary) -> str:
    """The check's summary: pairs, sizes, channels, dtypes, then pixels per label."""
    total = sum(summary["label_pixels"].values()) or 1
    sizes = summary["sizes"]
    size_text = (_dims(sizes[0]) if len(sizes) == 1 else
                 f"{len(sizes)} sizes from {_dims(sizes[0])} to {_dims(sizes[-1])}")
    channels = "1 channel" if summary["channels"] == 1 else f"{summary['channels']} channels"
    dtypes = "/".join(summary["image_dtypes"])
    lines = [f"{data_dir}: {summary['pairs']} pairs, {size_text}, {channels}, images {dtypes}"]
    lines += [f"  {label:<12}{n:>12,d} px  {100 * n / total:6.2f}%" for label, n in summary["label_pixels"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- example data


def example_registry(card: Path = DATASET_CARD) -> dict[str, str]:
    """{relative path: sha256} from the fenced `sha256` block of the dataset card (data/README.md)."""
    text = Path(card).read_text()
    block = re.search(r"```sha256\n(.*?)```", text, re.S)
    if not block:
        raise DataError(f"{card}: no ```sha256 registry block")
    return {path: digest for digest, path in (line.split() for line in block.group(1).splitlines() if line.strip())}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_unreachable(err: Exception) -> bool:
    """True for connection-level failures (no route, DNS, refused), as opposed to one missing file."""
    import requests

    return isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


def _reason(err: Exception) -> str:
    """A one-line reason: the exception type and the innermost cause's message."""
    while err.__context__ is not None and not str(err).strip():
        err = err.__context__
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}"


def write_example_description(dest) -> Path:
    """Write the example's dataset.json (a committed file, not a download) into `dest` unless it is there already."""
    target = Path(dest) / DESCRIPTION_FILE
    text = EXAMPLE_DESCRIPTION.read_text(encoding="utf-8")
    if not (target.is_file() and target.read_text(encoding="utf-8") == text):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return target


def fetch_example_data(dest=EXAMPLE_DATA_DIR, base_url: str | None = None, progress: bool = True) -> Path:
    """Download the example pairs that are missing or wrong into `dest`, each sha256-checked, and write the
    example's dataset.json beside them.

    base_url defaults to $SPINE_DATA_URL, else the pinned public commit. A file whose hash does not match
    is not kept; every failure is reported together at the end as a DataError.
    """
    import pooch

    pooch.get_logger().setLevel("WARNING")  # one progress bar, not a line per file
    base_url = base_url or os.environ.get("SPINE_DATA_URL") or EXAMPLE_DATA_URL
    base_url = base_url.rstrip("/") + "/"
    dest = Path(dest)
    write_example_description(dest)
    registry = example_registry()
    todo = [rel for rel, digest in registry.items() if not ((dest / rel).is_file() and _sha256(dest / rel) == digest)]
    failures = []
    for rel in _progress(todo, len(todo), progress and bool(todo), "downloading", "file"):
        target = dest / rel
        try:
            pooch.retrieve(base_url + rel, known_hash=f"sha256:{registry[rel]}", fname=target.name,
                           path=target.parent, progressbar=False)
        except ValueError as err:  # pooch's hash mismatch; it has already deleted the download
            got = re.search(r"[0-9a-f]{64}(?![\s\S]*[0-9a-f]{64})", str(err))
            failures.append(f"{rel}: sha256 mismatch (got {got.group(0)[:12] if got else '?'}..., expected "
                            f"{registry[rel][:12]}...) from {base_url + rel}; not saved")
        except Exception as err:  # network errors: requests/urllib raise many types
            failures.append(f"{rel}: download from {base_url + rel} failed ({_reason(err)})")
            if _is_unreachable(err):  # the same for every other file: say it once
                failures.append(f"{dest}: {len(todo) - todo.index(rel) - 1} more files not tried; host "
                                f"unreachable (set SPINE_DATA_URL to a mirror of {EXAMPLE_DATA_URL})")
                break
        if target.exists() and _sha256(target) != registry[rel]:
            target.unlink()  # never leave a file that fails its hash
    if failures:
        raise DataError(failures)
    return dest


# ---------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="loader.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="read and validate every pair: a summary (stderr) and the dataset description as JSON (stdout), "
                      "or one line per problem (stderr, exit 1)")
    check.add_argument("data_dir")
    fetch = commands.add_parser("fetch", help="download the example spine-MRI data (sha256-checked), write its "
                                              "dataset.json")
    fetch.add_argument("dest", nargs="?", default=str(EXAMPLE_DATA_DIR))
    fetch.add_argument("--url", default=None, help="base URL (default: $SPINE_DATA_URL or the pinned source)")
    args = parser.parse_args(argv)

    if args.command == "check":
        description, summary, problems = check_dataset(args.data_dir)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"{args.data_dir}: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        # stdout holds only the description, so it can be redirected to a file, edited and saved as dataset.json
        print(format_summary(args.data_dir, summary), file=sys.stderr)
        print(f"description ({description.source}), on stdout to save as {DESCRIPTION_FILE} and edit:", file=sys.stderr)
        print(description.to_json())
        return 0
    try:
        dest = fetch_example_data(args.dest, args.url)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{dest}: {len(example_registry())} files present and verified, and {DESCRIPTION_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
