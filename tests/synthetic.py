"""Small synthetic datasets for tests, in every layout the loader reads: each mask is derived from its own image,
so a wrong pairing or a misread value shows (`expected_labels` gives the label map the loader must return).

    root = write_layout(tmp_path / "em", "em")          # image/ + label/, 0/255 masks, dataset.json
    data = loader.DataLoader(root)
    image = np.round(data.get_image(name) * 255).astype(np.uint8)
    assert np.array_equal(data.get_mask(name), expected_labels("em", image))
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

THRESHOLDS = (96, 176)  # image < 96 -> 0, < 176 -> 1, else 2
IGNORE_INDEX = 255  # the loader's class index for ignore (description.IGNORE_INDEX)
STREET_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")
MIXED_SIZES = ((24, 32), (32, 48), (40, 40), (48, 64), (32, 32), (56, 24))  # (H, W), cycled over the examples

# layout -> (image folder, mask folder, dataset.json or None); see write_layout
LAYOUTS = {
    "gray": ("images", "masks", None),
    "em": ("image", "label", {"name": "EM-like membranes", "images": "image", "masks": "label",
                              "channel_names": {"0": "EM"}, "labels": {"membrane": 0, "cell": 255},
                              "partial_labels": False}),
    "rgb_ignore": ("train", "trainannot", {"name": "street-like scenes", "images": "train", "masks": "trainannot",
                                           "channel_names": {"0": "R", "1": "G", "2": "B"},
                                           "labels": {**{name: k for k, name in enumerate(STREET_CLASSES)},
                                                      "ignore": 255}}),
    "nnunet": ("imagesTr", "labelsTr", {"name": "nnU-Net raw", "channel_names": {"0": "CT"},
                                        "labels": {"background": 0, "mid": 1, "bright": 2}, "file_ending": ".png"}),
    "mixed_sizes": ("images", "masks", {"name": "mixed sizes", "channel_names": {"0": "gray"},
                                        "labels": {"dark": 0, "mid": 1, "bright": 2}}),
}


def derive_mask(image_u8: np.ndarray) -> np.ndarray:
    """The label map implied by an image's own intensities: 0, 1 or 2 (THRESHOLDS)."""
    return np.digitize(image_u8, THRESHOLDS).astype(np.uint8)


def make_image(seed: int, shape=(32, 32), channels: int = 0) -> np.ndarray:
    """A unique, blocky uint8 image of (H, W) `shape` (with `channels` > 0: (H, W, channels)); 8 px blocks survive
    resampling, so augmented pairs stay checkable."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-shape[0] // 8), -(-shape[1] // 8)
    blocks = rng.integers(0, 256, size=(rows, cols, max(channels, 1)), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[: shape[0], : shape[1]]
    return image if channels else image[..., 0]


def street_value(image_rgb: np.ndarray) -> np.ndarray:
    """Mask values of a street-like image: its brightness in 12 bands -> 0..10, the brightest band void (255)."""
    band = (image_rgb.astype(np.int32).sum(-1) // 3) * 12 // 256
    return np.where(band == 11, 255, band).astype(np.uint8)


def mask_values(layout: str, image_u8: np.ndarray) -> np.ndarray:
    """The mask values written for an image of `layout` (as stored in the mask file)."""
    if layout == "em":
        return np.where(image_u8 >= 128, 255, 0).astype(np.uint8)  # bright -> cell (255), dark -> membrane (0)
    if layout == "rgb_ignore":
        return street_value(image_u8)
    return derive_mask(image_u8)


def expected_labels(layout: str, image_u8: np.ndarray) -> np.ndarray:
    """The label map (class indices, IGNORE_INDEX for void) the loader must return for an image of `layout`;
    `image_u8` is (H, W), (H, W, 1) or (H, W, 3) uint8, e.g. `np.round(data.get_image(name) * 255)`."""
    image_u8 = image_u8[..., 0] if image_u8.ndim == 3 and image_u8.shape[-1] == 1 else image_u8
    values = mask_values(layout, image_u8)
    return (values // 255).astype(np.uint8) if layout == "em" else values  # em: 0 membrane, 255 cell -> 0, 1


def write_layout(root, layout: str, n: int = 12, seed: int = 0) -> Path:
    """Write `n` pairs of `layout` (with its dataset.json, if it has one) under `root`; returns root.

    - "gray": images/K.png gray 32x32 + masks/K.png values 0/1/2; no dataset.json (labels inferred "0", "1", "2")
    - "em": image/K.png gray 32x32 + label/K.png values 0/255 (membrane/cell), folders named in dataset.json
    - "rgb_ignore": train/K.png RGB 36x48 + trainannot/K.png values 0..10 (11 street classes) and 255 = ignore
    - "nnunet": imagesTr/case_K_0000.png gray 32x32 + labelsTr/case_K.png values 0/1/2, nnU-Net's dataset.json
    - "mixed_sizes": images/K.png + masks/K.png gray, sizes cycling through MIXED_SIZES, values 0/1/2
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    root = Path(root)
    image_folder, mask_folder, description = LAYOUTS[layout]
    (root / image_folder).mkdir(parents=True, exist_ok=True)
    (root / mask_folder).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        shape = {"rgb_ignore": (36, 48), "mixed_sizes": MIXED_SIZES[k % len(MIXED_SIZES)]}.get(layout, (32, 32))
        image = make_image(seed * 100_003 + k, shape, channels=3 if layout == "rgb_ignore" else 0)
        image_name, mask_name = (f"case_{k:03d}_0000", f"case_{k:03d}") if layout == "nnunet" else (str(k), str(k))
        write_array(root / image_folder / f"{image_name}.png", image)
        write_array(root / mask_folder / f"{mask_name}.png", mask_values(layout, image))
    if description:
        write_dataset_json(root, **description)
    return root


def write_dataset_json(root, **keys) -> Path:
    """Write `keys` as root/dataset.json; returns its path."""
    path = Path(root) / "dataset.json"
    path.write_text(json.dumps(keys, indent=2))
    return path


def write_dataset(root, names, shape=(32, 32), image_ext=".png", mask_ext=".npy", seed=0) -> Path:
    """Write images/NAME<image_ext> and masks/NAME<mask_ext> (values 0/1/2, no dataset.json) for each name;
    returns root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        image = make_image(seed * 100_003 + k, shape)
        mask = derive_mask(image)
        write_array(root / "images" / f"{name}{image_ext}", image)
        write_array(root / "masks" / f"{name}{mask_ext}", mask.astype(np.int64) if mask_ext == ".npy" else mask)
    return root


def write_array(path: Path, array: np.ndarray) -> None:
    """Save as .npy or through PIL by the file's suffix."""
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        Image.fromarray(array).save(path)


def write_blobs(root, n: int = 16, size: int = 48, seed: int = 0) -> Path:
    """Write n gray size x size scenes of six round structures (three "dim", three "bright", at staggered rows)
    on a noisy dark background, with masks derived from the drawing (images/ + masks/ PNG, dataset.json with
    background/dim/bright, full labels): data nothing in the project was tuned on, whose labels a small model
    learns in a few epochs; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows, cols = np.mgrid[:size, :size]
    for k in range(n):
        mask = np.zeros((size, size), np.uint8)
        centres = np.linspace(6, size - 6, 6) + rng.uniform(-1.5, 1.5, 6)
        for centre, index in zip(centres, rng.permutation([1, 1, 1, 2, 2, 2])):
            col, radius = rng.uniform(9, size - 9), rng.uniform(3.0, 4.5)
            mask[(rows - centre) ** 2 + (cols - col) ** 2 <= radius**2] = index
        image = np.array([40.0, 130.0, 220.0])[mask] + rng.normal(0, 12, mask.shape)
        write_array(root / "images" / f"scene{k}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_array(root / "masks" / f"scene{k}.png", mask)
    write_dataset_json(root, name="blobs", channel_names={"0": "gray"},
                       labels={"background": 0, "dim": 1, "bright": 2}, partial_labels=False)
    return root
