"""Small synthetic datasets for tests: each mask is derived from its own image, so a wrong pairing shows."""
from pathlib import Path

import numpy as np
from PIL import Image

THRESHOLDS = (96, 176)  # image < 96 -> background, < 176 -> disc (1), else vertebra (2)


def derive_mask(image_u8: np.ndarray) -> np.ndarray:
    """The label map implied by an image's own intensities."""
    return np.digitize(image_u8, THRESHOLDS).astype(np.uint8)


def make_image(seed: int, shape=(32, 32)) -> np.ndarray:
    """A unique, blocky uint8 image (blocks survive resampling, so augmented pairs stay checkable)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(shape[0] // 8, shape[1] // 8), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8), dtype=np.uint8))[: shape[0], : shape[1]]


def write_dataset(root, names, shape=(32, 32), image_ext=".png", mask_ext=".npy", seed=0) -> Path:
    """Write images/NAME<image_ext> and masks/NAME<mask_ext> for each name; returns root."""
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
