"""Segmenting files with a saved model (`maskpair predict MODEL INPUT --out OUT`): which images INPUT names, and
for each image `INPUT/a/b.jpg` the mask `OUT/a/b.png` in the dataset's own encoding, optionally its class
probabilities (`OUT/probabilities/a/b.npy`, float16) and an overlay picture (`OUT/overlays/a/b.png`).

An image that cannot be read, or has the wrong number of channels, is reported by name and the others are still
predicted. Every file is written under a temporary name and renamed, so none is ever half-written.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from maskpair import figures
from maskpair.atomic import write_atomically
from maskpair.data.description import IMAGE_SUFFIXES
from maskpair.data.files import natural_key
from maskpair.data.reading import image_to_float
from maskpair.errors import DataError
from maskpair.training.predict import labels_from_probabilities

READ_AHEAD = 8  # images decoded ahead of the model in a thread pool (decoding releases the GIL)


def find_images(source) -> list[tuple[Path, Path]]:
    """[(image file, its output path relative to OUT, without suffix)] for INPUT: a folder (every image file under
    it, recursively, by suffix; names starting with "." skipped), one image file, or a text file listing image
    paths (one per line, relative to the list's folder unless absolute; outputs relative to their common folder)."""
    source = Path(source)
    if source.is_dir():
        found = [path for path in source.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith(".") for part in path.relative_to(source).parts)]
        items = [(path, path.relative_to(source).with_suffix("")) for path in found]
    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        items = [(source, Path(source.stem))]
    elif source.is_file():
        try:
            lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            raise DataError(f"{source}: neither an image file nor a text file listing image paths") from None
        listed = [Path(line) if Path(line).is_absolute() else source.parent / line
                  for line in lines if line and not line.startswith("#")]
        if not listed:
            raise DataError(f"{source}: lists no image path")
        common = Path(os.path.commonpath([path.parent.resolve() for path in listed]))
        items = [(path, path.resolve().relative_to(common).with_suffix("")) for path in listed]
    else:
        raise DataError(f"{source}: no such image, folder or list of images")
    if not items:
        raise DataError(f"{source}: no image files (expected {', '.join(IMAGE_SUFFIXES)})")
    outputs = {}
    for path, output in items:
        if output in outputs:
            raise DataError(f"{outputs[output]} and {path}: both would be written as {output}.png")
        outputs[output] = path
    return sorted(items, key=lambda item: natural_key(str(item[1])))


def save_mask(path: Path, values: np.ndarray) -> None:
    """A mask of the dataset's values as PNG: 8-bit gray, 16-bit gray (values above 255) or RGB (colours)."""
    image = Image.fromarray(values.astype(np.uint16) if values.dtype.itemsize == 2 else values)
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))


def read_ahead(read, items, depth: int = READ_AHEAD):
    """Yield read(item) for each item in order, up to `depth` items being read at once in threads (decoding
    releases the GIL), so memory holds a few images, not the input."""
    with ThreadPoolExecutor(depth) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def predict_files(segmenter, items, out_dir, probabilities: bool = False, overlays: bool = False,
                  tile: int | None = None, progress: bool = True) -> dict:
    """Predict every (image, output) of `items` (`find_images`) into out_dir; returns a summary: "predicted",
    "failed" ({image path: the problem}), "seconds". The model sees images in order, consecutive ones of one size
    together, while the next ones are decoded in threads."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    failed: dict[str, str] = {}
    in_model = deque()  # (item, image) handed to the model and not yet written: its maps come back in this order
    start = time.perf_counter()

    def read(item):
        try:
            return item, segmenter.read(item[0]), None
        except DataError as err:
            return item, None, "; ".join(err.problems)

    def readable_images():
        for item, image, problem in read_ahead(read, items):
            if problem:
                failed[str(item[0])] = problem
                bar.update(1)
                continue
            in_model.append((item, image))
            yield image

    predicted = 0
    with tqdm(total=len(items), desc="predicting", unit="image", disable=not progress) as bar:
        for probability in segmenter.probabilities_many(readable_images(), tile):
            (_, output), image = in_model.popleft()
            labels = segmenter.postprocess(labels_from_probabilities(probability))
            save_mask(out_dir / output.with_suffix(".png"), segmenter.encode(labels))
            if probabilities:
                target = out_dir / "probabilities" / output.with_suffix(".npy")
                write_atomically(target, lambda temporary: np.save(temporary, probability.astype(np.float16)))
            if overlays:
                rgb = figures.overlay_rgb(image_to_float(image), labels)
                picture = Image.fromarray(np.round(255 * rgb).astype(np.uint8))
                write_atomically(out_dir / "overlays" / output.with_suffix(".png"),
                                 lambda temporary: picture.save(temporary, format="PNG"))
            predicted += 1
            bar.update(1)
    return {"predicted": predicted, "failed": failed, "seconds": round(time.perf_counter() - start, 2)}
