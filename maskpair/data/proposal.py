"""What `check` proposes when a folder does not read as described but what it sees suggests a description that
does: name templates when one consistent rule pairs every file (a suffix or prefix on either side), lossy
masks for JPEG masks, colour labels for colour-coded masks and for palette masks whose colours are the labels.

    proposal = propose_description(data_dir)    # None, or (description that reads, notes for the user)

A proposal is made only when the whole folder, read with it, passes `check` (so it is never a guess that fails).
"""
from __future__ import annotations

import os
from collections import Counter
from itertools import product
from pathlib import Path

from maskpair.data.check import check_declared
from maskpair.data.description import (
    DESCRIPTION_FILE,
    IMAGE_SUFFIXES,
    LOSSY_SUFFIXES,
    MASK_SUFFIXES,
    read_declared,
)
from maskpair.data.files import find_pairs
from maskpair.data.templates import NAME_FIELD, is_template
from maskpair.errors import DataError

SEPARATORS = "_-. "  # where a name's affix may begin or end: ISIC_0014568 | _segmentation
MASK_WORDS = ("mask", "label", "annot", "gt", "ground", "segm", "manual", "truth")  # how mask folders are named


def propose_description(data_dir):
    """(description, notes) of a dataset.json that reads `data_dir` when the folder as described does not, or
    None. Notes say, one line each, what was changed and why."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return None
    try:
        declared = read_declared(data_dir)
    except DataError:  # an unreadable dataset.json: its own error says what to fix
        return None
    # paired as if JPEG masks were allowed: whether they are is decided below, from the masks found
    candidate, notes = {**declared, "lossy_masks": True}, []
    found = _found_or_none(data_dir, candidate)
    if found is None:
        rule = pairing_rule(data_dir, candidate)
        if rule is None:
            return None
        keys, note = rule
        candidate.update(keys)
        notes.append(note)
        found = _found_or_none(data_dir, candidate)
        if found is None:
            return None
    jpeg_masks = any(mask.suffix.lower() in LOSSY_SUFFIXES for _, mask in found.pairs.values())
    candidate["lossy_masks"] = declared["lossy_masks"] or jpeg_masks
    if jpeg_masks and not declared["lossy_masks"]:
        notes.append('the masks are JPEG files: "lossy_masks": true reads each pixel as its nearest label')
    description, _, problems = check_declared(data_dir, candidate, progress=False)
    if problems:
        description, note = _with_readable_labels(data_dir, candidate, problems)
        if description is None:
            return None
        notes.append(note)
    if not notes:
        return None
    return description, notes


def _found_or_none(data_dir, declared):
    try:
        return find_pairs(data_dir, declared)
    except DataError:
        return None


def _with_readable_labels(data_dir, candidate: dict, problems: list[str]):
    """(description, note) with labels that read the masks when the labels were the problem, else (None, "")."""
    text = "\n".join(problems)
    labels = candidate.get("labels")
    if labels and "it is a palette image" in text and not _colour(labels):
        gray = {name: _gray_colour(value) for name, value in labels.items()}
        if all(colour is not None for colour in gray.values()):
            description, _, more = check_declared(data_dir, {**candidate, "labels": gray}, progress=False)
            if not more:
                return description, ("the masks are palette images whose colours are the labels' values: labels "
                                     "given as colours")
    if "colour mask" in text:
        inferred = {key: value for key, value in candidate.items() if key != "labels"}
        description, _, more = check_declared(data_dir, inferred, progress=False)
        if not more:
            kind = "colours" if description.colour_labels else "values"
            return description, (f"the masks are colour-coded: labels given as the {len(description.labels)} "
                                 f"{kind} found in them (name them)")
    return None, ""


def _colour(labels: dict) -> bool:
    first = next(iter(labels.values()))
    return isinstance(first[0] if isinstance(first, list) else first, str)


def _gray_colour(value):
    """A label value 0..255 (or a list of them) as the gray colour(s) "#vvvvvv"; None when out of range."""
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
        return None
    colours = [f"#{v:02x}{v:02x}{v:02x}" for v in values]
    return colours if isinstance(value, list) else colours[0]


# ---------------------------------------------------------------- pairing rules


def pairing_rule(data_dir: Path, declared: dict):
    """({"images": ..., "masks": ...[, "unpaired_images": "skip"]}, note) when one consistent rule (a prefix or
    suffix on each side) pairs every mask with one image and, unless images without masks are allowed to be
    skipped, every image with a mask; else None. Only for folders (a template is what the user already wrote)."""
    if declared["layout"] != "folders" or is_template(declared["images"]) or is_template(declared["masks"]):
        return None
    folders = _pair_of_folders(data_dir, declared)
    if folders is None:
        return None
    image_folder, mask_folder = folders
    images = _stems(data_dir / image_folder, IMAGE_SUFFIXES)
    masks = _stems(data_dir / mask_folder, MASK_SUFFIXES + LOSSY_SUFFIXES)
    if not images or not masks:  # none, or two files of one stem (3.png, 3.npy): which one is meant is not seen
        return None
    best = None
    for image_affix, mask_affix in product(_affixes(images), _affixes(masks)):
        image_names, mask_names = _names(images, image_affix), _names(masks, mask_affix)
        if image_names is None or mask_names is None or not mask_names <= image_names:
            continue
        exact = mask_names == image_names
        cost = (not exact, sum(map(len, image_affix + mask_affix)))
        if best is None or cost < best[0]:
            best = (cost, image_affix, mask_affix, exact)
    if best is None:
        return None
    # even with the stems as they are: templates leave alone the files that fit them not (LICENSE.txt)
    _, image_affix, mask_affix, exact = best
    keys = {"images": _template(image_folder, image_affix, images), "masks": _template(mask_folder, mask_affix, masks)}
    if not exact and declared.get("unpaired_images") != "skip":
        keys["unpaired_images"] = "skip"
    note = (f'the files pair by name with "images": "{keys["images"]}", "masks": "{keys["masks"]}"'
            + ("" if exact else f' ({len(images) - len(masks)} images without a mask, left out by '
                                f'"unpaired_images": "skip")'))
    return keys, note


def _pair_of_folders(data_dir: Path, declared: dict):
    """(image folder, mask folder): as declared when both exist, else the data root's only two subfolders of
    image files, the one named like masks (mask, label, gt, ...) as the masks."""
    if (data_dir / declared["images"]).is_dir() and (data_dir / declared["masks"]).is_dir():
        return declared["images"], declared["masks"]
    with os.scandir(data_dir) as listing:
        candidates = sorted(entry.name for entry in listing if entry.is_dir() and not entry.name.startswith(".")
                            and _stems(Path(entry.path), IMAGE_SUFFIXES + MASK_SUFFIXES))
    if len(candidates) != 2:
        return None
    masky = [name for name in candidates if any(word in name.lower() for word in MASK_WORDS)]
    if len(masky) != 1:
        return None
    return next(name for name in candidates if name != masky[0]), masky[0]


def _stems(folder: Path, suffixes) -> dict:
    """{stem: suffix} of the visible files of `folder` with one of `suffixes` (others are left alone); {} when
    two of them share a stem."""
    try:
        with os.scandir(folder) as listing:
            names = [entry.name for entry in listing if not entry.name.startswith(".") and entry.is_file()]
    except OSError:
        return {}
    stems = {}
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in suffixes:
            if stem in stems:
                return {}
            stems[stem] = suffix
    return stems


def _affixes(stems: dict) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs every stem has, each empty or ending (prefix) / starting (suffix) at a separator."""
    prefixes = suffixes = None
    for stem in stems:
        mine_p = {""} | {stem[: k + 1] for k in range(len(stem) - 1) if stem[k] in SEPARATORS}
        mine_s = {""} | {stem[k:] for k in range(1, len(stem)) if stem[k] in SEPARATORS}
        prefixes = mine_p if prefixes is None else prefixes & mine_p
        suffixes = mine_s if suffixes is None else suffixes & mine_s
    return sorted(product(prefixes, suffixes), key=lambda affix: (len(affix[0]) + len(affix[1]), affix))


def _names(stems: dict, affix) -> set | None:
    """The names the stems give without `affix`, or None if two stems give one name or a name is empty."""
    prefix, suffix = affix
    names = {stem[len(prefix): len(stem) - len(suffix)] for stem in stems}
    if len(names) != len(stems) or "" in names:
        return None
    return names


def _template(folder: str, affix, stems: dict) -> str:
    """`folder/PREFIX{name}SUFFIX.ext` (the extension when every file has the same one)."""
    prefix, suffix = affix
    extensions = Counter(stems.values())
    extension = next(iter(extensions)) if len(extensions) == 1 else ""
    return f"{folder.rstrip('/')}/{prefix}{NAME_FIELD}{suffix}{extension}"


def proposal_text(description, notes) -> list[str]:
    """The lines `check` writes on stderr before a proposal (the proposal itself goes to stdout)."""
    return ([f"{DESCRIPTION_FILE} as proposed below reads this folder:"] + [f"  - {note}" for note in notes]
            + [f"save stdout as {DESCRIPTION_FILE} (and name the labels), then run check again"])

