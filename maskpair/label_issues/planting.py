"""Planted label errors, to measure how well a ranking finds wrong labels on any dataset: a copy of the data with
known errors of each kind (a structure erased or relabelled, the mask dilated, its lowest structures deleted).
Used by `maskpair label-issues --plant-errors N`, `bench/bench_label_issues.py` and the tests."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from maskpair.atomic import write_atomically
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.loader import DataLoader
from maskpair.data.reading import read_mask_values
from maskpair.errors import DataError

PLANTED_ERRORS = ("erased structure", "relabelled structure", "dilated mask", "lowest structures deleted")
DILATION_PX = 3  # a planted "dilated mask" grows every structure this far into the background
LOWEST_STRUCTURES = 3  # a planted "lowest structures deleted" removes this many


def structures(mask: np.ndarray, index: int):
    """(component map, count) of class `index`'s connected structures (8-neighbourhood)."""
    return ndimage.label(mask == index, structure=np.ones((3, 3), bool))



def foreground_structures(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(class index, boolean region)] of every foreground structure (class 0 is background; ignore is none)."""
    found = []
    for index in np.unique(mask):
        if 0 < index != IGNORE_INDEX:
            components, count = structures(mask, index)
            found += [(int(index), components == k) for k in range(1, count + 1)]
    return found



def inner_structures(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The foreground structures that could lose a planted error visibly: away from the image border (a cut
    structure is half a structure) and at least half the median size of their class."""
    found = [(index, region) for index, region in foreground_structures(mask)
             if not (region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())]
    sizes = {index: np.median([r.sum() for i, r in found if i == index]) for index, _ in found}
    return [(index, region) for index, region in found if region.sum() >= sizes[index] / 2]



def erase_structure(mask: np.ndarray, rng) -> np.ndarray | None:
    """The mask with one structure set to background, of a class it still labels elsewhere (else the class
    would just be "not annotated" under partial labels); None when no structure qualifies."""
    counts = np.bincount([index for index, _ in foreground_structures(mask)], minlength=IGNORE_INDEX + 1)
    candidates = [region for index, region in inner_structures(mask) if counts[index] >= 2]
    if not candidates:
        return None
    planted = mask.copy()
    planted[candidates[rng.integers(len(candidates))]] = 0
    return planted



def relabel_structure(mask: np.ndarray, rng, n_classes: int) -> np.ndarray | None:
    """The mask with one structure given another foreground class; None when there is none, or only one
    foreground class."""
    candidates = inner_structures(mask)
    if not candidates or n_classes < 3:
        return None
    index, region = candidates[rng.integers(len(candidates))]
    planted = mask.copy()
    planted[region] = rng.choice([k for k in range(1, n_classes) if k != index])
    return planted



def dilate_labels(mask: np.ndarray, px: float) -> np.ndarray | None:
    """The mask with every foreground class grown `px` pixels into the background (each background pixel that
    close takes its nearest foreground pixel's class; ignore stays); None when the mask has no foreground."""
    foreground = (mask > 0) & (mask != IGNORE_INDEX)
    if not foreground.any():
        return None
    distance, (rows, cols) = ndimage.distance_transform_edt(~foreground, return_indices=True)
    planted = mask.copy()
    grow = (mask == 0) & (distance <= px)
    planted[grow] = mask[rows[grow], cols[grow]]
    return planted



def delete_lowest(mask: np.ndarray, count: int) -> np.ndarray | None:
    """The mask with its `count` lowest foreground structures (by centre row) set to background, as if the
    annotator stopped early; None when that would leave a class it labels with nothing (then merely "not
    annotated" under partial labels) or nothing at all."""
    found = foreground_structures(mask)
    if len(found) <= count:
        return None
    found.sort(key=lambda item: np.nonzero(item[1])[0].mean())
    kept = {index for index, _ in found[:-count]}
    if kept != {index for index, _ in found}:
        return None
    planted = mask.copy()
    for _, region in found[-count:]:
        planted[region] = 0
    return planted



def plant(error: str, mask: np.ndarray, rng, n_classes: int) -> np.ndarray | None:
    """The mask with one planted error of kind `error` (one of PLANTED_ERRORS), or None where it cannot take it."""
    if error == "erased structure":
        return erase_structure(mask, rng)
    if error == "relabelled structure":
        return relabel_structure(mask, rng, n_classes)
    if error == "dilated mask":
        return dilate_labels(mask, DILATION_PX)
    if error == "lowest structures deleted":
        return delete_lowest(mask, LOWEST_STRUCTURES)
    raise ValueError(f"planted errors are {PLANTED_ERRORS}, got {error!r}")



def write_mask(path: Path, labels: np.ndarray, description, like: Path) -> None:
    """Write a label map (class indices, IGNORE_INDEX) as the mask values of `description`
    (`DatasetDescription.encode`: values, colours, ROI-outside pixels), in the file type and value type of the
    mask `like`; the bytes go to `path` in one step (`write_atomically`)."""
    array = description.encode(labels)
    if array.ndim == 2:
        array = array.astype(read_mask_values(like).dtype)
    if path.suffix.lower() == ".npy":
        write_atomically(path, lambda temporary: np.save(temporary, array))
        return
    with Image.open(like) as original:
        palette = original.getpalette() if original.mode == "P" else None
    image = Image.fromarray(array)
    if palette is not None:  # a palette mask is read as its indices: write the indices under the same palette
        image = Image.frombytes("P", image.size, array.astype(np.uint8).tobytes())
        image.putpalette(palette)
    # optimize=False: PIL would otherwise drop unused palette entries and renumber the indices
    write_atomically(path, lambda temporary: image.save(temporary, optimize=False))


def plant_errors(data_dir, copy_dir, per_kind: int, seed: int = 0) -> dict[str, str]:
    """Copy the dataset into copy_dir (which must not exist) with label errors planted: `per_kind` examples of
    each of PLANTED_ERRORS, one error per example, examples drawn at random (`seed`); returns {name: error}."""
    data_dir, copy_dir = Path(data_dir), Path(copy_dir)
    data = DataLoader(data_dir, cache=False)
    rng = np.random.default_rng(seed)
    order = [data.names[i] for i in rng.permutation(len(data.names))]
    shutil.copytree(data_dir, copy_dir)
    planted = {}
    for error in PLANTED_ERRORS:
        done = 0
        for name in (name for name in order if name not in planted):
            if done == per_kind:
                break
            mask = plant(error, data.get_mask(name), rng, data.n_classes)
            if mask is not None:
                source = Path(data.pairs[name][1])
                write_mask(copy_dir / os.path.relpath(source, data_dir), mask, data.description, source)
                planted[name] = error
                done += 1
        if done < per_kind:
            raise DataError(f"{data_dir}: only {done} examples can take a planted {error!r} ({per_kind} asked)")
    return planted



def planted_copy(data_dir, out_dir, per_kind: int, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """(out_dir/planted-data, {name: error}): a copy of the dataset with `per_kind` planted errors of each kind
    (`plant_errors`). The copy is made beside and renamed into place: one already there with the same files
    (the same data, errors and seed: fold jobs of one run each make the copy, and all use the first one in
    place) is kept, another one replaced."""
    from maskpair.label_issues.folds import data_identity, replace_folder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_dir = out_dir / "planted-data"
    staging = Path(tempfile.mkdtemp(prefix=".planted-data-", dir=out_dir))
    try:
        planted = plant_errors(data_dir, staging / copy_dir.name, per_kind, seed)
        try:
            os.rename(staging / copy_dir.name, copy_dir)  # fails if another job's copy is there (not empty)
        except OSError:
            if data_identity(copy_dir) != data_identity(staging / copy_dir.name):
                replace_folder(staging / copy_dir.name, copy_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copy_dir, planted



def planted_recall(report: dict, planted: dict[str, str]) -> dict:
    """Where the planted errors rank: per planted example its error, rank and found kind, and the share of them
    in the top k for k = 1, 2 and 3 times their number."""
    entries = {entry["name"]: entry for entry in report["examples"]}
    found = {name: {"error": error, "rank": entries[name]["rank"], "kind": entries[name]["kind"]}
             for name, error in sorted(planted.items(), key=lambda item: entries[item[0]]["rank"])}
    ranks = [entry["rank"] for entry in found.values()]
    return {"examples": found,
            "recall_at_k": {str(k): round(float(np.mean([r <= k for r in ranks])), 3)
                            for k in sorted({len(ranks), 2 * len(ranks), 3 * len(ranks)})}}
