"""Small datasets in the layouts public datasets are published in, each with the dataset.json docs/datasets.md gives
for it: every mask is derived from its own (unique) image, so a wrong pairing or a misread value shows.

    data = write_published(tmp_path / "drive", "drive")   # Published(root, expected, images, description)
    loader = DataLoader(data.root)
    assert np.array_equal(loader.get_mask(name), data.expected[name])   # class indices, 255 = ignore

- "drive": retina vessels; images/21_training.tif + 1st_manual/21_manual1.gif (0/255, a gray-palette GIF) + a
  field-of-view ROI mask/21_training_mask.gif (0 outside the eye)
- "isic": dermoscopy; ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg + ..._GroundTruth/ISIC_0000000_segmentation.png
  (0/255), LICENSE.txt and ATTRIBUTION.txt beside the images
- "kvasir": polyps; images/ID.jpg + masks/ID.jpg, the masks JPEG stored as RGB (lossy_masks)
- "cityscapes": leftImg8bit/train/CITY/CITY_000000_0000NN_leftImg8bit.png + gtFine/train/CITY/..._gtFine_labelIds.png
  (label IDs; classes of several IDs, an ignore list) with the _color, _instanceIds and _polygons.json files beside
- "camvid": colour-coded; 701_StillsRaw_full/0001TP_0000NN.png + LabeledApproved_full/0001TP_0000NN_L.png
- "voc": Pascal VOC; JPEGImages/2007_0000NN.jpg (more images than masks) + SegmentationClass/2007_0000NN.png
  (palette PNG, 255 = void border), unpaired_images: skip
- "rgb_gray": images/K.png + masks/K.bmp gray values 0/1/2 stored as RGB BMP; no dataset.json
- "large": images/K.jpg of 2048x1536 (and one 1536x2048) + masks/K.png, max_size 512
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
CONVENTIONS = ("drive", "isic", "kvasir", "cityscapes", "camvid", "voc", "rgb_gray", "large")
# value of each Cityscapes-like brightness band (0..11): label IDs; classes below take several of them
CITYSCAPES_IDS = (0, 7, 8, 11, 12, 13, 23, 26, 27, 28, 4, 1)
CITYSCAPES_LABELS = {"flat": [7, 8], "construction": [11, 12, 13], "sky": 23, "vehicle": [26, 27, 28],
                     "ignore": [0, 1, 4]}
CAMVID_LABELS = {"Sky": "#808080", "Building": "#800000", "Road": "#804080", "Car": "#400080",
                 "Pedestrian": "#404000", "ignore": "#000000"}
VOC_LABELS = {"background": 0, "aeroplane": 1, "bicycle": 2, "bird": 3, "ignore": 255}

DESCRIPTIONS = {  # the dataset.json of each convention, as docs/datasets.md gives it
    "drive": {"name": "DRIVE-like retina vessels", "images": "images/{name}_training.tif",
              "masks": "1st_manual/{name}_manual1.gif", "roi": "mask/{name}_training_mask.gif",
              "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "vessel": 255}},
    "isic": {"name": "ISIC-like lesions", "images": "ISIC2018_Task1-2_Training_Input/{name}.jpg",
             "masks": "ISIC2018_Task1_Training_GroundTruth/{name}_segmentation.png",
             "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 255}},
    "kvasir": {"name": "Kvasir-SEG-like polyps", "images": "images/{name}.jpg", "masks": "masks/{name}.jpg",
               "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "polyp": 255},
               "lossy_masks": True},
    "cityscapes": {"name": "Cityscapes-like scenes", "images": "leftImg8bit/train/*/{name}_leftImg8bit.png",
                   "masks": "gtFine/train/*/{name}_gtFine_labelIds.png",
                   "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": CITYSCAPES_LABELS},
    "camvid": {"name": "CamVid-like scenes", "images": "701_StillsRaw_full/{name}.png",
               "masks": "LabeledApproved_full/{name}_L.png", "channel_names": {"0": "R", "1": "G", "2": "B"},
               "labels": CAMVID_LABELS},
    "voc": {"name": "VOC-like objects", "images": "JPEGImages/{name}.jpg", "masks": "SegmentationClass/{name}.png",
            "unpaired_images": "skip", "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": VOC_LABELS},
    "rgb_gray": None,  # no dataset.json: read as check infers it
    "large": {"name": "large photographs", "channel_names": {"0": "R", "1": "G", "2": "B"},
              "labels": {"background": 0, "object": 1}, "max_size": 512},
}


@dataclass
class Published:
    root: Path
    expected: dict  # {name: label map (class indices, IGNORE_INDEX = ignore) the loader must return at own size}
    images: dict  # {name: the image as generated, before any lossy compression}
    description: dict | None  # the dataset.json written (None: none)


def blocks(seed: int, shape, channels: int = 3, block: int = 8) -> np.ndarray:
    """A unique uint8 image of uniform `block`-px squares (6 px: edges inside JPEG's 8x8 blocks)."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-shape[0] // block), -(-shape[1] // block)
    tiles = rng.integers(0, 256, size=(rows, cols, channels), dtype=np.uint8)
    image = np.repeat(np.repeat(tiles, block, axis=0), block, axis=1)[: shape[0], : shape[1]]
    return image if channels > 1 else image[..., 0]


def brightness_band(image: np.ndarray, bands: int) -> np.ndarray:
    """0..bands-1 by the mean of the channels."""
    return (image.astype(np.int32).sum(-1) // 3 * bands // 256).astype(np.uint8)


def gray_palette_gif(path: Path, values: np.ndarray) -> None:
    """A GIF whose palette is the 256 grays (index = gray level), as DRIVE's are: it reads as its gray values."""
    img = Image.fromarray(values.astype(np.uint8), "P")
    img.putpalette([level for gray in range(256) for level in (gray, gray, gray)])
    img.save(path, optimize=False)


def voc_palette() -> list[int]:
    """Pascal VOC's colour map: index bits spread over the channels' high bits."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def hex_rgb(colour: str) -> list[int]:
    return [int(colour[i:i + 2], 16) for i in (1, 3, 5)]


def write_published(root, convention: str, n: int = 6, seed: int = 0) -> Published:
    """Write `n` pairs of `convention` (and its dataset.json) under `root`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expected, images = globals()[f"_write_{convention}"](root, n, seed)
    description = DESCRIPTIONS[convention]
    if description is not None:
        (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return Published(root, expected, images, description)


def _folders(root: Path, *names) -> list[Path]:
    paths = [root / name for name in names]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def _write_drive(root, n, seed):
    images_dir, manual_dir, fov_dir = _folders(root, "images", "1st_manual", "mask")
    rows, cols = np.mgrid[:40, :48]
    fov = ((rows - 19.5) / 19) ** 2 + ((cols - 23.5) / 22) ** 2 <= 1  # the eye: an ellipse
    expected, images = {}, {}
    for k in range(21, 21 + n):
        image = blocks(seed * 1000 + k, (40, 48))
        vessel = image[..., 1] >= 160
        Image.fromarray(image).save(images_dir / f"{k}_training.tif")
        gray_palette_gif(manual_dir / f"{k}_manual1.gif", np.where(vessel, 255, 0))
        gray_palette_gif(fov_dir / f"{k}_training_mask.gif", np.where(fov, 255, 0))
        expected[str(k)] = np.where(fov, vessel.astype(np.uint8), IGNORE_INDEX).astype(np.uint8)
        images[str(k)] = image
    return expected, images


def _write_isic(root, n, seed):
    inputs, truth = _folders(root, "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth")
    (inputs / "LICENSE.txt").write_text("CC-BY-NC\n")
    (inputs / "ATTRIBUTION.txt").write_text("ISIC-like test data\n")
    expected, images = {}, {}
    for k in range(n):
        name = f"ISIC_{14568 + 7 * k:07d}"
        image = blocks(seed * 1000 + k, (36, 52))
        lesion = image[..., 0] >= 128
        Image.fromarray(image).save(inputs / f"{name}.jpg", quality=95)
        Image.fromarray(np.where(lesion, 255, 0).astype(np.uint8)).save(truth / f"{name}_segmentation.png")
        expected[name], images[name] = lesion.astype(np.uint8), image
    return expected, images


def _write_kvasir(root, n, seed):
    images_dir, masks_dir = _folders(root, "images", "masks")
    (root / "kavsir_bboxes.json").write_text("{}")
    expected, images = {}, {}
    for k in range(n):
        name = f"cju{k}qkwl35piu0993l0dewei2"
        image = blocks(seed * 1000 + k, (42, 54), block=6)
        polyp = image[..., 2] >= 128
        Image.fromarray(image).save(images_dir / f"{name}.jpg", quality=90)
        rgb = np.repeat(np.where(polyp, 255, 0).astype(np.uint8)[..., None], 3, axis=-1)
        Image.fromarray(rgb).save(masks_dir / f"{name}.jpg", quality=75)
        expected[name], images[name] = polyp.astype(np.uint8), image
    return expected, images


def _write_cityscapes(root, n, seed):
    classes = [name for name in CITYSCAPES_LABELS if name != "ignore"]
    index_of = {}
    for name, values in CITYSCAPES_LABELS.items():
        for value in values if isinstance(values, list) else [values]:
            index_of[value] = IGNORE_INDEX if name == "ignore" else classes.index(name)
    expected, images = {}, {}
    for k in range(n):
        city = ("aachen", "bochum")[k % 2]
        image_dir, gt_dir = _folders(root, f"leftImg8bit/train/{city}", f"gtFine/train/{city}")
        name = f"{city}_000000_{19 + k:06d}"
        image = blocks(seed * 1000 + k, (32, 64))
        ids = np.array(CITYSCAPES_IDS, np.uint8)[brightness_band(image, 12)]
        Image.fromarray(image).save(image_dir / f"{name}_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{name}_gtFine_labelIds.png")
        Image.fromarray(ids * 3).save(gt_dir / f"{name}_gtFine_color.png")  # files beside, of no template
        Image.fromarray(ids.astype(np.uint16) * 1000).save(gt_dir / f"{name}_gtFine_instanceIds.png")
        (gt_dir / f"{name}_gtFine_polygons.json").write_text("{}")
        expected[name] = np.vectorize(index_of.get, otypes=[np.uint8])(ids)
        images[name] = image
    return expected, images


def _write_camvid(root, n, seed):
    raw, labelled = _folders(root, "701_StillsRaw_full", "LabeledApproved_full")
    names = list(CAMVID_LABELS)
    colours = np.array([hex_rgb(CAMVID_LABELS[name]) for name in names], np.uint8)
    index = np.array([IGNORE_INDEX if name == "ignore" else k for k, name in enumerate(names)], np.uint8)
    expected, images = {}, {}
    for k in range(n):
        name = f"0001TP_{6690 + 30 * k:06d}"
        image = blocks(seed * 1000 + k, (36, 48))
        band = brightness_band(image, len(names))
        Image.fromarray(image).save(raw / f"{name}.png")
        Image.fromarray(colours[band]).save(labelled / f"{name}_L.png")
        expected[name], images[name] = index[band], image
    return expected, images


def _write_voc(root, n, seed):
    jpeg, segmentation = _folders(root, "JPEGImages", "SegmentationClass")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    expected, images = {}, {}
    for k in range(n + 3):  # the last three images have no mask: VOC annotates a subset of its images
        name = f"2007_{32 + k:06d}"
        image = blocks(seed * 1000 + k, (40, 40))
        Image.fromarray(image).save(jpeg / f"{name}.jpg", quality=95)
        if k >= n:
            continue
        index = brightness_band(image, 4)
        index[::8, :] = 255  # VOC's void border, drawn along the block edges
        mask = Image.fromarray(index, "P")
        mask.putpalette(voc_palette())
        mask.save(segmentation / f"{name}.png")
        expected[name], images[name] = index, image
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(expected) + "\n")
    return expected, images


def _write_rgb_gray(root, n, seed):
    images_dir, masks_dir = _folders(root, "images", "masks")
    expected, images = {}, {}
    for k in range(n):
        image = blocks(seed * 1000 + k, (32, 32), channels=1)
        values = np.digitize(image, (96, 176)).astype(np.uint8)
        Image.fromarray(image).save(images_dir / f"{k}.png")
        Image.fromarray(np.repeat(values[..., None], 3, axis=-1)).save(masks_dir / f"{k}.bmp")
        expected[str(k)], images[str(k)] = values, image
    return expected, images


def _write_large(root, n, seed):
    images_dir, masks_dir = _folders(root, "images", "masks")
    expected, images = {}, {}
    for k in range(n):
        shape = (2048, 1536) if k == n - 1 else (1536, 2048)  # one portrait among landscapes
        image = blocks(seed * 1000 + k, shape, block=64)
        found = (image[..., 0] >= 128).astype(np.uint8)
        Image.fromarray(image).save(images_dir / f"photo{k}.jpg", quality=92)
        Image.fromarray(found).save(masks_dir / f"photo{k}.png")
        expected[f"photo{k}"], images[f"photo{k}"] = found, image
    return expected, images
