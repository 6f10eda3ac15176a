"""Reading one file or one pair: headers without decoding, images, mask values, label maps; every problem a
`DataError` naming the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data.description import (
    CHANNEL_COUNTS,
    DESCRIPTION_FILE,
    IGNORE_INDEX,
    DatasetDescription,
)
from maskpair.data.files import short_path
from maskpair.errors import DataError

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
            raise DataError(f"{short_path(path)}: shape {dims_text(array.shape)}, expected HxW or HxWxC")
        channels = array.shape[2] if array.ndim == 3 else 1
        return FileHeader(tuple(array.shape[:2]), channels, array.dtype, "npy")
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{short_path(path)}: unreadable image ({err})") from None
    if mode not in MODE_DTYPES:
        raise DataError(f"{short_path(path)}: unsupported image mode {mode}")
    channels = 3 if mode == "P" and not mask else Image.getmodebands(mode)
    return FileHeader((height, width), channels, np.dtype(MODE_DTYPES[mode]), mode)



def dims_text(shape) -> str:
    return "x".join(map(str, shape))



def _channels_text(header: FileHeader) -> str:
    return f"{header.channels} channel{'s' if header.channels != 1 else ''} ({header.kind})"



def header_problems(paths, headers, n_channels: int, declared: bool) -> list[str]:
    """What the headers of one pair already show to be wrong: channels, dtype, sizes (one line each)."""
    (image_path, mask_path), (image, mask) = paths, headers
    problems = []
    if image.channels not in CHANNEL_COUNTS:
        problems.append(f"{short_path(image_path)}: {_channels_text(image)}; images must have "
                        f"{' or '.join(f'{n} ({kind})' for n, kind in CHANNEL_COUNTS.items())} channels")
    elif image.channels != n_channels:
        expected = (f"{DESCRIPTION_FILE} channel_names has {n_channels}" if declared else
                    f"most images have {n_channels} (without {DESCRIPTION_FILE} channel_names, that decides)")
        problems.append(f"{short_path(image_path)}: {_channels_text(image)}, but {expected}")
    if image.dtype.kind not in "iubf":
        problems.append(f"{short_path(image_path)}: unsupported image dtype {image.dtype}")
    if 0 in image.size:
        problems.append(f"{short_path(image_path)}: empty image ({dims_text(image.size)})")
    if mask.channels != 1:
        problems.append(f"{short_path(mask_path)}: {'RGB' if mask.kind.startswith('RGB') else _channels_text(mask)} "
                        f"mask, expected one channel of label values")
    if mask.dtype.kind not in "iubf":
        problems.append(f"{short_path(mask_path)}: unsupported mask dtype {mask.dtype}")
    if image.size != mask.size:
        problems.append(f"{short_path(mask_path)}: shape {dims_text(mask.size)}, image {short_path(image_path)} is "
                        f"{dims_text(image.size)}")
    return problems



def _load_npy(path: Path, mmap_mode=None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)  # never unpickle: files may come from anywhere
    except ValueError as err:
        if "pickle" in str(err).lower() or "python objects" in str(err).lower():
            raise DataError(f"{short_path(path)}: object array (needs pickle), refused") from None
        raise DataError(f"{short_path(path)}: unreadable or truncated .npy ({err})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{short_path(path)}: unreadable or truncated .npy ({err})") from None



def _load_pil(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here and not later
            return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{short_path(path)}: unreadable or truncated image ({err})") from None



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
        raise DataError(f"{short_path(path)}: image has shape {dims_text(array.shape)}, expected HxWx{n_channels}")
    if array.dtype == np.uint8:
        return array
    sixteen_bit = array.dtype.kind == "u" and array.dtype.itemsize == 2  # any byte order
    if sixteen_bit or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return (array.astype(np.float32) / 65535).clip(0, 1)
    if array.dtype.kind in "iub":
        if array.min(initial=0) < 0:
            raise DataError(f"{short_path(path)}: negative pixel values in an integer image")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"{short_path(path)}: image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(f"{short_path(path)}: float image values span [{low:g}, {high:g}], expected [0, 1]")
        return array.astype(np.float32)
    raise DataError(f"{short_path(path)}: unsupported image dtype {array.dtype}")



def read_mask_values(path: Path) -> np.ndarray:
    """Read one mask's label values as a 2D integer (or integer-valued float) array; refuses colour masks,
    NaN and fractions. A 1-bit PNG reads as 0/255, as image viewers show it."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        img = _load_pil(path)
        if img.mode not in SINGLE_CHANNEL_MASK_MODES:
            raise DataError(f"{short_path(path)}: {img.mode} mask, expected one channel of label values")
        array = np.asarray(img.convert("L") if img.mode == "1" else img)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{short_path(path)}: mask has shape {dims_text(array.shape)}, "
                        f"expected one channel of label values (HxW)")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise DataError(f"{short_path(path)}: mask holds NaN")
        if not np.array_equal(array, np.round(array)):
            raise DataError(f"{short_path(path)}: mask is not integer-valued (dtype {array.dtype})")
    elif array.dtype.kind == "b":
        array = array.view(np.uint8)
    elif array.dtype.kind not in "iu":
        raise DataError(f"{short_path(path)}: unsupported mask dtype {array.dtype}")
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
        raise DataError(f"{short_path(Path(path))}: value{'s' if len(bad) > 1 else ''} {listed} "
                        f"{'are' if len(bad) > 1 else 'is'} not in {where} ({description.labels_text()})")
    return found.astype(np.uint8)



def read_pair(image_path: Path, mask_path: Path, description: DatasetDescription):
    """Read and validate one pair: image (H, W, C) uint8 or float32, label map (H, W) uint8 of the same size."""
    image = read_image(image_path, description.n_channels)
    labels = mask_to_labels(read_mask_values(mask_path), description, mask_path)
    if image.shape[:2] != labels.shape:
        raise DataError(f"{short_path(Path(mask_path))}: shape {dims_text(labels.shape)}, image {short_path(Path(image_path))} "
                        f"is {dims_text(image.shape[:2])}")
    return image, labels



def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float32 image (any shape) -> float32 in [0, 1]."""
    return image * np.float32(1 / 255) if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
