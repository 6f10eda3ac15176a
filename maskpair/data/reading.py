"""Reading one file or one pair: headers without decoding, images, masks in every encoding the description
allows (values, palette indices, RGB-stored gray, colours, lossy), regions of interest, label maps, and pairs at a
reduced size (`max_size`); every problem a `DataError` naming the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data import encoding
from maskpair.data.description import (
    CHANNEL_COUNTS,
    DESCRIPTION_FILE,
    IGNORE_INDEX,
    LOSSY_SUFFIXES,
    DatasetDescription,
)
from maskpair.data.files import jpeg_mask_problem, roi_path, short_path
from maskpair.errors import DataError

MODE_DTYPES = {"1": "bool", "L": "uint8", "P": "uint8", "RGB": "uint8", "YCbCr": "uint8", "LA": "uint8",
               "PA": "uint8", "RGBA": "uint8", "RGBX": "uint8", "CMYK": "uint8", "I;16": "uint16",
               "I;16B": "uint16", "I;16L": "uint16", "I;16N": "uint16", "I": "int32", "F": "float32"}
SINGLE_CHANNEL_MASK_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")
COLOUR_MASK_MODES = ("RGB", "RGBA", "RGBX", "YCbCr", "CMYK")  # read as RGB: colour labels, or gray stored as RGB
MASK_CHANNELS = (1, 2, 3, 4)  # values (LA: with an opaque alpha), RGB, RGBA (read as RGB when opaque)


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
    readable = (mask.channels in (1, 3) and (mask.channels == 1 or mask.dtype == np.uint8) if mask.kind == "npy"
                else mask.channels in MASK_CHANNELS)
    if not readable:
        problems.append(f"{short_path(mask_path)}: {_channels_text(mask)} mask, expected one channel of label "
                        f"values or RGB")
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
    return _decode_pil(path, None)[0]


def _decode_pil(path: Path, max_size: int | None):
    """(decoded image, own (H, W)); a JPEG larger than `max_size` is decoded at a reduced scale (its DCT scaling,
    1/2 to 1/8, never below the size it is read at): 4x less decoding at half the size."""
    try:
        with Image.open(path) as img:
            own = img.size[::-1]
            target = reduced_size(own, max_size)
            if img.format == "JPEG" and target != own:
                img.draft(img.mode, target[::-1])
            img.load()  # decode now, so truncated files fail here and not later
            return img, own
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{short_path(path)}: unreadable or truncated image ({err})") from None


def reduced_size(size, max_size: int | None) -> tuple[int, int]:
    """(H, W) `size` scaled so that its longer side is at most `max_size` (unchanged when it is, or None)."""
    height, width = size
    if max_size is None or max(height, width) <= max_size:
        return int(height), int(width)
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def area_resize(image: np.ndarray, size) -> np.ndarray:
    """(H, W, C) uint8 or float32 image resized to (h, w) `size` by the area (box) filter, as the same dtype."""
    height, width = size
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
        img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return np.asarray(img.resize((width, height), Image.BOX)).reshape(height, width, image.shape[-1])
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), "F")
                           .resize((width, height), Image.BOX)) for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1).astype(image.dtype, copy=False)


def nearest_resize(labels: np.ndarray, size) -> np.ndarray:
    """(H, W) uint8 label map resized to (h, w) `size` by nearest neighbour (no value is invented)."""
    height, width = size
    return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))


def read_image(path: Path, n_channels: int) -> np.ndarray:
    """Read one image as (H, W, C), C = n_channels: uint8 when the file is 8-bit, else float32 in [0, 1].

    Never converted between gray and colour (a channel count other than n_channels is an error); palette
    images are read as RGB; 16-bit images are scaled by 1/65535; float images must already lie in [0, 1].
    """
    return _read_image(Path(path), n_channels, None)[0]


def _read_image(path: Path, n_channels: int, max_size: int | None):
    """(image as `read_image` gives it, resized by area to `reduced_size(own size, max_size)`; own (H, W))."""
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
        own = array.shape[:2]
    else:
        img, own = _decode_pil(path, max_size)
        if img.mode in ("1", "P", "YCbCr"):
            img = img.convert("L" if img.mode == "1" else "RGB")
        target = reduced_size(own, max_size)
        if img.mode in ("L", "RGB") and target != img.size[::-1]:  # 8-bit: resized by PIL before any copy
            img = img.resize(target[::-1], Image.BOX)
        array = np.asarray(img)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] != n_channels:
        raise DataError(f"{short_path(path)}: image has shape {dims_text(array.shape)}, expected HxWx{n_channels}")
    array = _image_values(array, path)
    target = reduced_size(own, max_size)
    if array.shape[:2] != target:
        array = area_resize(array, target)
    return array, tuple(own)


def _image_values(array: np.ndarray, path: Path) -> np.ndarray:
    """An image array as uint8, or float32 in [0, 1]; refuses negative, non-finite and out-of-range values."""
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
    """Read one mask's label values as a 2D integer (or integer-valued float) array: palette images as their
    indices, gray stored as RGB as its gray, a 1-bit PNG as 0/255 (as image viewers show it); refuses colour
    masks, NaN and fractions."""
    path = Path(path)
    pixels, _ = _mask_pixels(path, colour=False)
    if pixels.ndim == 3:
        raise DataError(f"{short_path(path)}: colour mask (RGB with different channels), expected one channel of "
                        f"label values; give the labels as colours \"#rrggbb\" in {DESCRIPTION_FILE}")
    return pixels


def _mask_pixels(path: Path, colour: bool, lossy: bool = False):
    """(pixels, palette image or None): (H, W, 3) uint8 colours when `colour`, else (H, W) values; (H, W, 3)
    also for a colour mask read for values when `lossy` or to refuse it (the caller decides). Gray stored as RGB
    reads as gray; palette images as their indices (colours when `colour`); an opaque alpha channel is dropped."""
    palette_image = None
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        img = _load_pil(path)
        if img.mode in ("P", "PA"):
            palette_image = img
            if colour:  # the colours it shows (a transparency index is no label)
                img = img.convert("RGB")
        if img.mode not in SINGLE_CHANNEL_MASK_MODES + COLOUR_MASK_MODES + ("LA", "PA"):
            raise DataError(f"{short_path(path)}: {img.mode} mask, expected one channel of label values or RGB")
        if img.mode in ("1", "YCbCr", "CMYK"):
            img = img.convert("L" if img.mode == "1" else "RGB")
        array = np.asarray(img)
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # LA / PA / RGBA: the alpha must not hide anything
        if array.dtype != np.uint8 or array[..., -1].min() < 255:
            raise DataError(f"{short_path(path)}: mask with a transparent alpha channel; expected label values "
                            f"or opaque colours")
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 3:
        if array.dtype != np.uint8:
            raise DataError(f"{short_path(path)}: {array.dtype} colour mask, expected 8-bit RGB")
        if colour:
            return array, palette_image
        gray = array[..., 0]
        if (gray == array[..., 1]).all() and (gray == array[..., 2]).all():
            return gray, palette_image  # gray stored as RGB
        return array, palette_image  # a colour mask: values only by nearest gray (lossy), else refused
    if array.ndim != 2:
        raise DataError(f"{short_path(path)}: mask has shape {dims_text(array.shape)}, "
                        f"expected one channel of label values (HxW) or RGB")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise DataError(f"{short_path(path)}: mask holds NaN")
        if not lossy and not np.array_equal(array, np.round(array)):
            raise DataError(f"{short_path(path)}: mask is not integer-valued (dtype {array.dtype})")
    elif array.dtype.kind == "b":
        array = array.view(np.uint8)
    elif array.dtype.kind not in "iu":
        raise DataError(f"{short_path(path)}: unsupported mask dtype {array.dtype}")
    if colour:
        if array.dtype != np.uint8:
            raise DataError(f"{short_path(path)}: {array.dtype} mask, but {DESCRIPTION_FILE} labels are colours "
                            f"(8-bit RGB or gray masks)")
        return np.repeat(array[..., None], 3, axis=-1), palette_image
    return array, palette_image


def read_labels(mask_path: Path, description: DatasetDescription) -> np.ndarray:
    """Read one mask as a uint8 label map at its own size: the class index of each pixel (IGNORE_INDEX for
    ignore), by the description's encoding; a value or colour in no label is an error naming the file."""
    mask_path = Path(mask_path)
    lossy = description.lossy_masks
    if mask_path.suffix.lower() in LOSSY_SUFFIXES and not lossy:
        raise DataError(jpeg_mask_problem(mask_path))
    colour = description.colour_labels
    pixels, palette_image = _mask_pixels(mask_path, colour, lossy)
    if pixels.ndim == 3:
        if lossy:
            return encoding.nearest_colours_to_labels(pixels, description, mask_path)
        if colour:
            return encoding.colours_to_labels(pixels, description, mask_path)
        raise DataError(f"{short_path(mask_path)}: colour mask (RGB with different channels), but "
                        f"{DESCRIPTION_FILE} labels are values; give the labels as colours \"#rrggbb\" "
                        f"(maskpair check DATA proposes them)")
    if lossy:
        return encoding.nearest_values_to_labels(pixels, description, mask_path)
    try:
        return encoding.values_to_labels(pixels, description, mask_path)
    except DataError:
        if palette_image is None:
            raise
        hint = palette_hint(palette_image, pixels, description)
        if not hint:
            raise
        return encoding.values_to_labels(pixels, description, mask_path, hint)


def palette_hint(palette_image: Image.Image, indices: np.ndarray, description: DatasetDescription) -> str:
    """When a palette mask's indices miss the labels but its colours are the label values: the colour labels to
    give instead (`; it is a palette image ...`), else ""."""
    used = np.unique(indices)
    palette = np.asarray(palette_image.getpalette("RGB") or [], dtype=np.int64).reshape(-1, 3)
    if used.max(initial=0) >= len(palette):
        return ""
    colours = palette[used]
    gray = colours[:, 0]
    values = {value for name in description.labels for value in description.values_of(name)}
    if not ((colours == gray[:, None]).all() and set(gray.tolist()) <= values):
        return ""
    proposal = {name: [f"#{v:02x}{v:02x}{v:02x}" if isinstance(v, int) and 0 <= v <= 255 else v
                       for v in description.values_of(name)] for name in description.labels}
    proposal = {name: colours[0] if len(colours) == 1 else colours for name, colours in proposal.items()}
    listed = ", ".join(encoding.colour_text(int(v) * 0x10101) for v in gray)
    from maskpair.jsonio import dumps

    return (f"; it is a palette image, read as its indices ({', '.join(map(str, used.tolist()))}), and its colours "
            f"({listed}) are the labels' values: give the labels as colours, \"labels\": {dumps(proposal)}")


def read_roi(path: Path, size, image_path: Path) -> np.ndarray:
    """Read a region-of-interest mask as a bool (H, W) array, True inside: where it is not black (nonzero values;
    palette images by the colour they show, whatever their index order; RGB where any channel is nonzero; JPEG
    above half); its size must be `size`."""
    path = Path(path)
    if path.suffix.lower() in LOSSY_SUFFIXES:
        inside = np.asarray(_load_pil(path).convert("L")) > 127
    elif path.suffix.lower() != ".npy" and _load_pil(path).mode in ("P", "PA"):
        inside = np.asarray(_load_pil(path).convert("RGB")).any(axis=-1)
    else:
        pixels, _ = _mask_pixels(path, colour=False, lossy=True)
        inside = pixels.any(axis=-1) if pixels.ndim == 3 else pixels != 0
    if inside.shape != tuple(size):
        raise DataError(f"{short_path(path)}: ROI shape {dims_text(inside.shape)}, image {short_path(Path(image_path))} "
                        f"is {dims_text(size)}")
    return inside


def read_pair(image_path: Path, mask_path: Path, description: DatasetDescription, full_size: bool = False):
    """Read and validate one pair: image (H, W, C) uint8 or float32, label map (H, W) uint8 of the same size, with
    the pair's ROI (if the description has one) applied: IGNORE_INDEX outside it.

    Pairs whose longer side exceeds the description's max_size are read at `reduced_size` (area filter for the
    image, nearest for the label map; every check is made at the files' own size); full_size: at their own size."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, own = _read_image(image_path, description.n_channels, None if full_size else description.max_size)
    labels = read_labels(mask_path, description)
    if own != labels.shape:
        raise DataError(f"{short_path(mask_path)}: shape {dims_text(labels.shape)}, image {short_path(image_path)} "
                        f"is {dims_text(own)}")
    if description.roi:
        labels[~read_roi(roi_path(mask_path, description), own, image_path)] = IGNORE_INDEX
    if labels.shape != image.shape[:2]:
        labels = nearest_resize(labels, image.shape[:2])
    return image, labels


def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float32 image (any shape) -> float32 in [0, 1]."""
    return image * np.float32(1 / 255) if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
