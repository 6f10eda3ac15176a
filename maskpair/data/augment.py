"""Paired augmentation (`Augment`, re-exported as `loader.Augment`): geometry applied identically to image and
label map, intensity to the image only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskpair.data.description import IGNORE_INDEX


@dataclass(frozen=True)
class Augment:
    """Paired augmentation: geometry applied identically to image and mask, intensity to the image only.

    Masks are resampled nearest-neighbour, so labels are never interpolated; pixels that come from outside the
    image get IGNORE_INDEX (no target), whatever class index 0 means in the dataset.
    """

    flip_lr: float = 0.5  # probability of a left-right flip
    rotate_deg: float = 10.0  # rotation drawn from [-rotate_deg, rotate_deg]
    scale: tuple = (0.9, 1.1)
    shift: float = 0.05  # translation as a fraction of the image size
    brightness: float = 0.1  # added offset drawn from [-brightness, brightness]
    contrast: float = 0.15  # gain drawn from [1 - contrast, 1 + contrast]
    gamma: tuple = (0.8, 1.25)
    crop: int | None = None  # output a random crop x crop window of the augmented image (None: whole image)

    def output_shape(self, shape) -> tuple:
        """The (H, W) that `apply` returns for an (H, W) `shape`: the crop, limited to the image, or `shape`."""
        shape = tuple(shape[:2])
        return shape if self.crop is None else tuple(min(self.crop, side) for side in shape)

    def geometry(self, rng: np.random.Generator, shape):
        """Draw an affine map (matrix, offset) in output->input pixel coordinates, for scipy.ndimage."""
        angle = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(*self.scale)
        flip = -1.0 if rng.random() < self.flip_lr else 1.0
        shift = rng.uniform(-self.shift, self.shift, size=2) * np.array(shape)
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag([1.0, flip])
        centre = (np.array(shape) - 1) / 2
        offset = centre - matrix @ (centre + shift)
        return matrix, offset

    def apply(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        """Augment one pair (float image in [0, 1], (H, W) or (H, W, C); (H, W) uint8 label map); returns new
        arrays of `output_shape`, the image with its channels.

        A crop is resampled directly (the window moves the affine map's offset), so only its pixels are computed.
        """
        from scipy import ndimage

        shape = image.shape[:2]
        matrix, offset = self.geometry(rng, shape)
        size = self.output_shape(shape)
        if self.crop is not None:
            corner = rng.integers(0, np.array(shape) - size, endpoint=True)
            offset = offset + matrix @ corner

        def resample(plane, order, cval):
            return ndimage.affine_transform(plane, matrix, offset, output_shape=size, order=order,
                                            mode="constant", cval=cval)

        planes = image if image.ndim == 3 else image[..., None]
        moved = np.stack([resample(planes[..., c], 1, 0.0) for c in range(planes.shape[-1])], axis=-1)
        image = moved if image.ndim == 3 else moved[..., 0]
        mask = resample(mask, 0, IGNORE_INDEX)
        gain = rng.uniform(1 - self.contrast, 1 + self.contrast)
        bias = rng.uniform(-self.brightness, self.brightness)
        gamma = rng.uniform(*self.gamma)
        image = np.clip(image * gain + bias, 0, 1) ** gamma
        return image.astype(np.float32), mask


def as_augment(augment) -> Augment | None:
    """None, True (default `Augment()`), a dict of `Augment` fields or an `Augment` -> an `Augment` or None."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment()
    if isinstance(augment, Augment):
        return augment
    if isinstance(augment, dict):
        return Augment(**augment)
    raise TypeError(f"augment must be None, True, a dict or an Augment, got {type(augment).__name__}")
