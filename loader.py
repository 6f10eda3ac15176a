"""Read 2D images and integer masks, prove they are paired and aligned, and batch them for a Keras UNet.

Also fetches the example spine-MRI data (hash-checked) and offers a CLI: `check DATA_DIR`, `fetch [DEST]`.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
from PIL import Image

from errors import DataError  # noqa: F401  (loader.DataError is the public name)

PROJECT_DIR = Path(__file__).resolve().parent
LABELS = ("background", "disc", "vertebra")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
MASK_SUFFIXES = (".npy", ".png")
REMAINDER_POLICIES = ("fill", "drop", "keep")
SPLITS = ("train", "val", "test")
SET_ASIDE = "excluded"  # optional key of explicit splits: examples read and checked but never batched

EXAMPLE_DATA_URL = (
    "https://raw.githubusercontent.com/sulaimanvesal/vertebraeSegementation/"
    "edbc59b45b516a82a3c8ae11cd850ba6c450aa2e/input/"
)
EXAMPLE_DATA_DIR = PROJECT_DIR / "data" / "spine-mri"
DATASET_CARD = PROJECT_DIR / "data" / "README.md"


# ---------------------------------------------------------------- finding and pairing files


def natural_key(name: str):
    """Sort key that puts `2` before `10` (digits compare as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _short(path: Path) -> str:
    """`images/7.png`: the folder and file name, as error messages show them."""
    return f"{path.parent.name}/{path.name}"


def _files_by_stem(folder: Path, suffixes) -> dict[str, Path]:
    """Map stem -> file for the visible files of `folder`; refuse unknown types and clashing stems."""
    problems, found = [], {}
    for path in folder.iterdir():
        if path.name.startswith("."):  # .DS_Store, .ipynb_checkpoints, editor swap files
            continue
        if path.is_dir():
            problems.append(f"{_short(path)}: unexpected folder inside {folder.name}/")
        elif path.suffix.lower() not in suffixes:
            problems.append(f"{_short(path)}: unsupported file type (expected one of {', '.join(suffixes)})")
        elif path.stem in found:
            problems.append(f"{_short(path)} and {_short(found[path.stem])}: two files for example {path.stem}")
        else:
            found[path.stem] = path
    if problems:
        raise DataError(problems)
    return found


def pair_files(data_dir) -> dict[str, tuple[Path, Path]]:
    """Pair `images/NAME.*` with `masks/NAME.*` by file stem; returns {name: (image, mask)} in natural order."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    folders = {kind: data_dir / kind for kind in ("images", "masks")}
    missing = [f"{data_dir}: no {kind}/ folder" for kind, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise DataError(missing)
    images = _files_by_stem(folders["images"], IMAGE_SUFFIXES)
    masks = _files_by_stem(folders["masks"], MASK_SUFFIXES)
    problems = [f"{data_dir / kind}: empty folder" for kind, found in (("images", images), ("masks", masks)) if not found]
    if problems:
        raise DataError(problems)
    for kind, orphans, other in (("images", images.keys() - masks, "mask"), ("masks", masks.keys() - images, "image")):
        for name in sorted(orphans, key=natural_key):
            found = (images if kind == "images" else masks)[name]
            problems.append(f"{_short(found)}: no matching {other} for example {name}")
    if problems:
        raise DataError(problems)
    return {name: (images[name], masks[name]) for name in sorted(images, key=natural_key)}


# ---------------------------------------------------------------- reading and validating files


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)  # never unpickle: .npy files may come from anywhere
    except ValueError as err:
        if "pickle" in str(err).lower():
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


def _squeeze_channel(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{_short(path)}: {what} has shape {'x'.join(map(str, array.shape))}, expected HxW")
    return array


def read_image_raw(path: Path) -> np.ndarray:
    """Read one image as a 2D array: uint8 when the file is 8-bit, else float32 in [0, 1].

    Colour images (RGB/RGBA/palette) are converted to grayscale with the ITU-R 601-2 luma weights;
    16-bit images are scaled by 1/65535; float `.npy` images must already lie in [0, 1].
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            array = array[..., :3] @ np.array([0.299, 0.587, 0.114])
            array = array.astype(np.float32) / (255 if array.max() > 1 else 1)
    else:
        img = _load_pil(path)
        if img.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "1"):
            img = img.convert("L")
        array = np.asarray(img)
    array = _squeeze_channel(array, path, "image")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
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


def read_mask_raw(path: Path, n_classes: int = len(LABELS)) -> np.ndarray:
    """Read one mask as a 2D uint8 label map; refuse non-integer values, NaN and labels >= n_classes."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        img = _load_pil(path)
        if img.mode not in ("L", "P", "I", "I;16", "1"):
            raise DataError(f"{_short(path)}: {img.mode} mask, expected single-channel integer labels")
        array = np.asarray(img)
    array = _squeeze_channel(array, path, "mask")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise DataError(f"{_short(path)}: mask holds NaN")
        if not np.array_equal(array, np.round(array)):
            raise DataError(f"{_short(path)}: mask is not integer-valued (dtype {array.dtype})")
    elif array.dtype.kind not in "iub":
        raise DataError(f"{_short(path)}: unsupported mask dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        bad = np.unique(array[(array < 0) | (array >= n_classes)])
        values = ", ".join(f"{v:g}" for v in bad[:5])
        raise DataError(f"{_short(path)}: label value(s) {values} outside the label set 0..{n_classes - 1}")
    return array.astype(np.uint8)


def read_pair(image_path: Path, mask_path: Path, n_classes: int = len(LABELS)):
    """Read and validate one pair: (image 2D uint8/float32, mask 2D uint8) with equal shapes."""
    image = read_image_raw(image_path)
    mask = read_mask_raw(mask_path, n_classes)
    if image.shape != mask.shape:
        raise DataError(
            f"{_short(Path(mask_path))}: shape {'x'.join(map(str, mask.shape))}, "
            f"image {_short(Path(image_path))} is {'x'.join(map(str, image.shape))}"
        )
    return image, mask


def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float32 2D image -> float32 2D in [0, 1]."""
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
        _float_into(raw_images[part], images[part, ..., 0])
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
    """Write the float32 one-hot encoding of the uint8 label maps `masks` (..., H, W) into `out` (..., H, W, C)."""
    # one flat comparison per class: ~6x cheaper than np.eye(C)[mask] or than comparing mask[..., None]
    # with all classes at once (both run an inner loop only C long per pixel); see bench/README.md.
    # The comparison goes to a contiguous bool buffer and is cast from its uint8 view: casting bool to float
    # branches per pixel, which is ~5x slower on masks whose labels change often (noisy masks).
    is_class = np.empty(masks.shape, dtype=np.bool_)
    for c in range(out.shape[-1]):
        np.equal(masks, c, out=is_class)
        np.copyto(out[..., c], is_class.view(np.uint8), casting="unsafe")


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
    names = sorted(names, key=natural_key)  # independent of the caller's (or the file system's) order
    order = np.random.default_rng(seed).permutation(len(names))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([0] + counts)
    return {
        split: sorted((names[i] for i in order[bounds[k] : bounds[k + 1]]), key=natural_key)
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


# ---------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Paired augmentation: geometry applied identically to image and mask, intensity to the image only.

    Masks are resampled nearest-neighbour, so labels are never interpolated.
    """

    flip_lr: float = 0.5  # probability of a left-right flip
    rotate_deg: float = 10.0  # rotation drawn from [-rotate_deg, rotate_deg]
    scale: tuple = (0.9, 1.1)
    shift: float = 0.05  # translation as a fraction of the image size
    brightness: float = 0.1  # added offset drawn from [-brightness, brightness]
    contrast: float = 0.15  # gain drawn from [1 - contrast, 1 + contrast]
    gamma: tuple = (0.8, 1.25)
    crop: int | None = None  # output a random crop x crop window of the augmented image (None: whole image)
    # Rotation, zoom and shift resample the image bilinearly, which blurs it a little; with probability
    # 1 - resample_probability a pair is only flipped (and cropped), its pixels copied exactly as at test time.
    resample_probability: float = 1.0
    # Elastic deformation: smooth random displacements (normal, this many px sd) drawn at control points
    # `elastic_spacing` px apart and interpolated between them, on top of the affine map of resampled pairs.
    elastic_px: float = 0.0
    elastic_spacing: int = 64

    def output_shape(self, shape) -> tuple:
        """The (H, W) that `apply` returns for an input of `shape`: the crop, limited to the image, or `shape`."""
        return tuple(shape) if self.crop is None else tuple(min(self.crop, side) for side in shape)

    def geometry(self, rng: np.random.Generator, shape):
        """Draw an affine map (matrix, offset) in output->input pixel coordinates, for scipy.ndimage, and whether
        the pair is resampled (False: only flipped, see resample_probability)."""
        angle = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(*self.scale)
        flip = -1.0 if rng.random() < self.flip_lr else 1.0
        shift = rng.uniform(-self.shift, self.shift, size=2) * np.array(shape)
        # drawn only when needed, so the default keeps the random stream (and results) it always had
        resampled = not (self.resample_probability < 1.0 and rng.random() >= self.resample_probability)
        if not resampled:
            angle, zoom, shift = 0.0, 1.0, np.zeros(2)
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag([1.0, flip])
        centre = (np.array(shape) - 1) / 2
        offset = centre - matrix @ (centre + shift)
        return matrix, offset, resampled

    def displacement(self, rng: np.random.Generator, size) -> np.ndarray:
        """A smooth random displacement field (2, H, W) in pixels: normal displacements (sd `elastic_px`) at
        control points `elastic_spacing` px apart, interpolated by cubic splines between them."""
        row_weights, col_weights = (_spline_weights(int(np.ceil(side / self.elastic_spacing)) + 1, side) for side in size)
        control = rng.normal(0.0, self.elastic_px, size=(2, row_weights.shape[1], col_weights.shape[1]))
        return row_weights @ control @ col_weights.T

    def apply(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        """Augment one pair (2D float image in [0, 1], 2D integer mask); returns new arrays of `output_shape`.

        A crop is resampled directly (the window moves the affine map's offset), so only its pixels are computed.
        """
        from scipy import ndimage

        matrix, offset, resampled = self.geometry(rng, image.shape)
        size = self.output_shape(image.shape)
        if self.crop is not None:
            corner = rng.integers(0, np.array(image.shape) - size, endpoint=True)
            offset = offset + matrix @ corner
        if self.elastic_px and resampled:
            # output pixel o reads input pixel matrix @ (o + displacement(o)) + offset
            warped = np.indices(size, dtype=np.float64) + self.displacement(rng, size)
            coordinates = np.tensordot(matrix, warped, axes=1) + offset[:, None, None]
            image = ndimage.map_coordinates(image, coordinates, order=1, mode="constant", cval=0.0)
            mask = ndimage.map_coordinates(mask, coordinates, order=0, mode="constant", cval=0)
        else:
            image = ndimage.affine_transform(image, matrix, offset, output_shape=size, order=1, mode="constant", cval=0.0)
            mask = ndimage.affine_transform(mask, matrix, offset, output_shape=size, order=0, mode="constant", cval=0)
        gain = rng.uniform(1 - self.contrast, 1 + self.contrast)
        bias = rng.uniform(-self.brightness, self.brightness)
        gamma = rng.uniform(*self.gamma)
        image = np.clip(image * gain + bias, 0, 1) ** gamma
        return image.astype(np.float32), mask


@functools.lru_cache(maxsize=16)
def _spline_weights(points: int, side: int) -> np.ndarray:
    """(side, points) matrix that interpolates `points` evenly spaced values to `side` pixels by a natural cubic
    spline. Natural, not scipy's default "not-a-knot": about half as steep at the ends, so at 4 px sd and 64 px
    spacing no neighbouring pixels crossed in 3,000 draws (steepest 0.8 px per px; "not-a-knot" reached 1.6).
    Separable: a 160 x 160 field is two small matrix products, 0.7 ms against 3.8 ms by ndimage.map_coordinates."""
    from scipy.interpolate import CubicSpline

    weights = CubicSpline(np.arange(points), np.eye(points), bc_type="natural")(np.linspace(0, points - 1, side))
    weights.flags.writeable = False  # cached and shared between calls
    return weights


def _as_augment(augment):
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment()
    if isinstance(augment, Augment):
        return augment
    if isinstance(augment, dict):
        return Augment(**augment)
    raise TypeError(f"augment must be None, True, a dict or an Augment, got {type(augment).__name__}")


# ---------------------------------------------------------------- the loader


def _progress(iterable, total, enabled, desc, unit="pair"):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)


class DataLoader:
    """Paired images and masks from `data_dir/images` and `data_dir/masks`, split and batched.

    split: (train, val, test) fractions, or an explicit {"train": [...], "val": [...], "test": [...]}
    (e.g. from `kfold_splits`); remainder: how the last short batch of an epoch is handled --
    "fill" tops it up with other random examples of the same split, "drop" drops it, "keep" yields it short.
    cache: decode every pair once (uint8 where possible); False streams each batch from disk.
    augment: None, True (default `Augment()`), a dict of `Augment` fields or an `Augment`; train split only.
    """

    def __init__(
        self,
        data_dir,
        batch_size: int = 4,
        seed: int = 0,
        split=(0.6, 0.2, 0.2),
        remainder: str = "fill",
        cache: bool = True,
        augment=None,
        labels=LABELS,
        workers: int | None = None,
        progress: bool | None = None,
    ):
        if remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data_dir = Path(data_dir)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.remainder = remainder
        self.labels = tuple(labels)
        self.n_classes = len(self.labels)
        self.augment = _as_augment(augment)
        self.pairs = pair_files(self.data_dir)
        self.names = list(self.pairs)
        self.splits = (_checked_splits(split, self.names) if isinstance(split, dict)
                       else split_names(self.names, split, self.seed))
        self._workers = workers or min(8, (os.cpu_count() or 1) + 2)
        self._progress = len(self.names) >= 200 if progress is None else progress
        self._index = {name: i for i, name in enumerate(self.names)}
        self.cache = bool(cache)
        self._images = self._masks = None
        if self.cache:
            self._images, self._masks = self._decode_all()
        self.shape = self._images.shape[1:] if self.cache else read_pair(*self.pairs[self.names[0]], self.n_classes)[1].shape

    # -- reading

    def _decode_all(self):
        """Decode every pair once, in parallel threads, into two compact arrays (N, H, W)."""
        first_image, first_mask = read_pair(*self.pairs[self.names[0]], self.n_classes)
        n = len(self.names)
        images = np.empty((n, *first_image.shape), dtype=first_image.dtype)
        masks = np.empty((n, *first_mask.shape), dtype=np.uint8)

        def decode(i):
            name = self.names[i]
            try:
                image, mask = read_pair(*self.pairs[name], self.n_classes)
            except DataError as err:
                return err.problems
            if image.shape != images.shape[1:]:
                return [f"{_short(self.pairs[name][0])}: shape {'x'.join(map(str, image.shape))}, "
                        f"other images are {'x'.join(map(str, images.shape[1:]))}"]
            if image.dtype != images.dtype:
                return [f"{_short(self.pairs[name][0])}: {image.dtype} image among {images.dtype} images"]
            images[i], masks[i] = image, mask
            return []

        with ThreadPoolExecutor(self._workers) as pool:
            results = _progress(pool.map(decode, range(n)), n, self._progress, "decoding")
            problems = [line for lines in results for line in lines]
        if problems:
            raise DataError(problems)
        return images, masks

    def _row(self, name) -> int:
        if name not in self._index:
            raise KeyError(f"no example named {name!r} in {self.data_dir}")
        return self._index[name]

    def _read_checked(self, name):
        """Read one pair from disk (streaming) and check its shape against the first image."""
        self._row(name)  # unknown names fail with KeyError before any file is opened
        image, mask = read_pair(*self.pairs[name], self.n_classes)
        if image.shape != tuple(self.shape):
            raise DataError(f"{_short(self.pairs[name][0])}: shape {'x'.join(map(str, image.shape))}, "
                            f"expected {'x'.join(map(str, self.shape))} like the first image")
        return image, mask

    def raw_pair(self, name):
        """The stored arrays of `name`: image (H, W) uint8 (or float32 in [0, 1]) and mask (H, W) uint8.

        From the cache these are views, not copies: read them, do not modify them.
        """
        if self.cache:
            i = self._row(name)
            return self._images[i], self._masks[i]
        return self._read_checked(name)

    def _raw_batch(self, names):
        """Images (B, H, W) uint8 or float32 and masks (B, H, W) uint8 of `names`, from the cache or disk."""
        if self.cache:
            rows = [self._row(name) for name in names]
            return self._images[rows], self._masks[rows]
        # PNG/zlib decoding and np.load release the GIL, so threads overlap the reads of one batch;
        # map() re-raises the first failing name in batch order, as a sequential loop would
        with ThreadPoolExecutor(max(1, min(self._workers, len(names)))) as pool:
            pairs = list(pool.map(self._read_checked, names))
        eight_bit = all(image.dtype == np.uint8 for image, _ in pairs)  # else convert each file on its own
        images = np.empty((len(pairs), *self.shape), dtype=np.uint8 if eight_bit else np.float32)
        masks = np.empty((len(pairs), *self.shape), dtype=np.uint8)
        for k, (image, mask) in enumerate(pairs):
            images[k], masks[k] = image if eight_bit else image_to_float(image), mask
        return images, masks

    def get_image(self, name) -> np.ndarray:
        """The image of example `name` as float32 (H, W, 1) in [0, 1]."""
        return image_to_float(self.raw_pair(name)[0])[..., None].astype(np.float32, copy=True)

    def get_mask(self, name) -> np.ndarray:
        """The mask of example `name` as integer (H, W) labels (uint8)."""
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

    def batch_shape(self, split="train") -> tuple:
        """(H, W) of the batches of `split`: the augmentation's crop for the train split, else the image shape."""
        augment = self._augment_for(split)
        return augment.output_shape(self.shape) if augment else tuple(self.shape)

    def _augment_rng(self, split, epoch, step):
        return np.random.default_rng([self.seed, SPLITS.index(split), epoch, step, 1])

    def batch_arrays(self, names, split="train", epoch: int = 0, step: int = 0):
        """Assemble one batch: images float32 (B, H, W, 1), masks one-hot float32 (B, H, W, C).

        Augmentation (train split only) is seeded by (seed, epoch, step), so it is the same in every adapter.
        """
        augment = self._augment_for(split)
        shape = self.batch_shape(split)
        # fresh arrays every batch, so callers may keep them; glibc reuses the freed blocks, so this is cheap
        images = np.empty((len(names), *shape, 1), dtype=np.float32)
        onehot = np.empty((len(names), *shape, self.n_classes), dtype=np.float32)
        raw_images, masks = self._raw_batch(names)
        if not augment:
            _fill_batch(raw_images, masks, images, onehot)
            return images, onehot
        rng = self._augment_rng(split, epoch, step)
        for i in range(len(names)):
            image, mask = augment.apply(image_to_float(raw_images[i]), masks[i], rng)
            images[i, ..., 0] = image
            _one_hot_into(mask, onehot[i])
        return images, onehot

    def iter_epochs(self, split="train", epochs: int | None = None):
        """Yield (epoch, step, names) for `epochs` epochs (None: forever)."""
        for epoch in count() if epochs is None else range(epochs):
            for step, names in enumerate(self.epoch_batches(split, epoch)):
                yield epoch, step, names

    def get_batch(self, split="train"):
        """Endless generator of (images, masks) batches for `split`; see `batch_arrays` for shapes."""
        self._split_names(split)  # fail now, not at the first next()
        return (self.batch_arrays(names, split, epoch, step) for epoch, step, names in self.iter_epochs(split))

    # -- adapters (TensorFlow is imported only here)

    def keras_sequence(self, split="train"):
        """A `tf.keras.utils.Sequence` over `split` yielding the same batches as `get_batch`."""
        from keras_adapters import LoaderSequence

        self._split_names(split)
        return LoaderSequence(self, split)

    def tf_dataset(self, split="train", epochs: int | None = None, prefetch: int | None = None, ready_times=None):
        """A prefetching `tf.data.Dataset` of the same batches as `get_batch` (endless when epochs is None);
        `ready_times`: a list that receives the time each batch was ready (see `keras_adapters.loader_dataset`)."""
        from keras_adapters import loader_dataset

        self._split_names(split)
        return loader_dataset(self, split, epochs, prefetch, ready_times)

    def __repr__(self):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"DataLoader({str(self.data_dir)!r}: {len(self.names)} pairs, {sizes}, batch {self.batch_size})"


# ---------------------------------------------------------------- checking a folder


def check_dataset(data_dir, labels=LABELS):
    """Read and validate every pair without keeping them; returns (summary dict, list of problems)."""
    try:
        pairs = pair_files(data_dir)
    except DataError as err:
        return None, err.problems
    problems, shapes, image_dtypes = [], set(), set()
    counts = np.zeros(len(labels), dtype=np.int64)
    for image_path, mask_path in pairs.values():
        try:
            image, mask = read_pair(image_path, mask_path, len(labels))
        except DataError as err:
            problems.extend(err.problems)
            continue
        shapes.add(image.shape)
        image_dtypes.add(str(image.dtype))
        counts += np.bincount(mask.ravel(), minlength=len(labels))
    if len(shapes) > 1:
        problems.append(f"{data_dir}: images differ in shape ({', '.join('x'.join(map(str, s)) for s in sorted(shapes))})")
    summary = {
        "pairs": len(pairs),
        "shapes": sorted(shapes),
        "image_dtypes": sorted(image_dtypes),
        "label_pixels": dict(zip(labels, counts.tolist())),
    }
    return summary, problems


def format_summary(data_dir, summary) -> str:
    total = sum(summary["label_pixels"].values()) or 1
    shapes = ", ".join("x".join(map(str, s)) for s in summary["shapes"])
    lines = [f"{data_dir}: {summary['pairs']} pairs, shape {shapes}, images {'/'.join(summary['image_dtypes'])}"]
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


def fetch_example_data(dest=EXAMPLE_DATA_DIR, base_url: str | None = None, progress: bool = True) -> Path:
    """Download the example pairs that are missing or wrong into `dest`, each sha256-checked.

    base_url defaults to $SPINE_DATA_URL, else the pinned public commit. A file whose hash does not match
    is not kept; every failure is reported together at the end as a DataError.
    """
    import pooch

    pooch.get_logger().setLevel("WARNING")  # one progress bar, not a line per file
    base_url = base_url or os.environ.get("SPINE_DATA_URL") or EXAMPLE_DATA_URL
    base_url = base_url.rstrip("/") + "/"
    dest = Path(dest)
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
    check = commands.add_parser("check", help="read and validate every pair; print a summary or the problems")
    check.add_argument("data_dir")
    fetch = commands.add_parser("fetch", help="download the example spine-MRI data (sha256-checked)")
    fetch.add_argument("dest", nargs="?", default=str(EXAMPLE_DATA_DIR))
    fetch.add_argument("--url", default=None, help="base URL (default: $SPINE_DATA_URL or the pinned source)")
    args = parser.parse_args(argv)

    if args.command == "check":
        summary, problems = check_dataset(args.data_dir)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"{args.data_dir}: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(format_summary(args.data_dir, summary))
        return 0
    try:
        dest = fetch_example_data(args.dest, args.url)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{dest}: {len(example_registry())} files present and verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
