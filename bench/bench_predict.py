"""Images per second of `maskpair predict` (files in, masks out: decoding, the model with mirror averaging,
encoding and writing PNGs) against the bound: the same model called on arrays already in memory, as
`model.predict_on_batch` in batches of the same size, mirror averaging included (the same forward passes).

    python bench/bench_predict.py            # 64 images of 256x256 and 4 of 2048x2048 (a few minutes on 2 cores)
    python bench/bench_predict.py --quick    # 8 and 1: a smoke run

The model is the default UNet (TrainConfig's backbone and decoder) with untrained weights, on gray images with 3
classes: speed does not depend on what the weights are. Each figure is the median of --repeats runs after one
warm-up run; the machine's load is printed with them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data.description import DatasetDescription
from maskpair.training import model as unet
from maskpair.training.config import TrainConfig
from maskpair.training.inference import find_images, predict_files
from maskpair.training.segmenter import Segmenter, batch_size


class Images:
    """A data stand-in for `Segmenter.from_training`: what it reads of a DataLoader."""

    def __init__(self, folder: Path):
        self.description = DatasetDescription(name="bench", channel_names={"0": "gray"},
                                              labels={"background": 0, "a": 1, "b": 2})
        self.labels, self.n_channels = self.description.classes, 1
        self.splits, self.data_dir = {"train": [], "val": [], "test": []}, folder

        class Store:
            eight_bit = True

        self.store = Store()


def write_images(folder: Path, count: int, side: int, seed: int = 0) -> Path:
    """`count` gray PNGs of side x side: smooth random shapes, so PNG decoding costs what it does on real images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        small = rng.integers(0, 256, (side // 16 + 1, side // 16 + 1), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((side, side), Image.BILINEAR))
        Image.fromarray(image).save(folder / f"{k}.png")
    return folder


def bound_rate(segmenter: Segmenter, images: list[np.ndarray]) -> float:
    """Images/s of the model alone on arrays in memory, batched as predict batches them, mirror averaging
    included (two forward passes per batch)."""
    size = batch_size(images[0].shape)
    start = time.perf_counter()
    for first in range(0, len(images), size):
        batch = np.stack(images[first:first + size]).astype(np.float32) * np.float32(1 / 255)
        segmenter.model.predict_on_batch(batch)
        segmenter.model.predict_on_batch(batch[:, :, ::-1])
    return len(images) / (time.perf_counter() - start)


def predict_rate(segmenter: Segmenter, folder: Path, out: Path) -> float:
    """Images/s of `predict_files` (what `maskpair predict` runs after loading the model)."""
    items = find_images(folder)
    summary = predict_files(segmenter, items, out, progress=False)
    assert summary["predicted"] == len(items) and not summary["failed"]
    return len(items) / summary["seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 small and 1 large image, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    small, large, repeats = (8, 1, 1) if args.quick else (64, 4, args.repeats)
    config = TrainConfig()
    model = unet.build_model(1, 3, config.backbone, config.decoder_filters)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        segmenter = Segmenter.from_training(model, Images(scratch), config)
        print("| images | maskpair predict (images/s) | model on arrays in memory (images/s) | ratio |")
        print("|---|---:|---:|---:|")
        for count, side in ((small, 256), (large, 2048)):
            folder = write_images(scratch / f"in-{side}", count, side)
            arrays = [np.asarray(Image.open(path))[..., None] for path, _ in find_images(folder)]
            predict_rate(segmenter, folder, scratch / "warm-up")  # traces the model at this size
            bound_rate(segmenter, arrays)
            files = [predict_rate(segmenter, folder, scratch / f"out-{side}-{k}") for k in range(repeats)]
            bound = [bound_rate(segmenter, arrays) for _ in range(repeats)]
            rate, best = statistics.median(files), statistics.median(bound)
            print(f"| {count} x {side}x{side} | {rate:.2f} | {best:.2f} | {rate / best:.2f} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; median of {repeats} after a warm-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
