"""Finding and pairing files: which image goes with which mask, by name, never by position."""
from __future__ import annotations

import os
import re
from pathlib import Path

from maskpair.data.description import IMAGE_SUFFIXES, MASK_SUFFIXES, read_declared
from maskpair.errors import DataError

NNUNET_IMAGE_NAME = re.compile(r"(.+)_(\d{4})")  # imagesTr/NAME_0000.png: case NAME, channel 0000
DIGIT_RUNS = re.compile(r"(\d+)")


def natural_key(name: str):
    """Sort key that puts `2` before `10` (digits compare as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in DIGIT_RUNS.split(name)]



def short_path(path: Path) -> str:
    """`images/7.png`: the folder and file name, as error messages show them."""
    return f"{path.parent.name}/{path.name}"



def _plain_name(path: Path, stem: str):
    """(pair name, problem): a file's name without its extension."""
    return stem, None



def _nnunet_image_name(path: Path, stem: str):
    """(pair name, problem): NAME of `imagesTr/NAME_0000.EXT`; other channel files are refused."""
    match = NNUNET_IMAGE_NAME.fullmatch(stem)
    if not match:
        return None, f"{short_path(path)}: nnU-Net image names end in _0000 before the extension (NAME_0000{path.suffix})"
    if match.group(2) != "0000":
        return None, (f"{short_path(path)}: channel file _{match.group(2)}: separate channel files are not supported "
                      f"(one _0000 file per case, RGB in one file)")
    return match.group(1), None



def _files_by_name(folder: Path, suffixes, file_ending, name_of=_plain_name) -> dict[str, Path]:
    """Map pair name -> file for the visible files of `folder`; refuse unknown types and clashing names.

    With a `file_ending`, files with another ending are not considered (nnU-Net's convention)."""
    problems, found = [], {}
    # scandir tells folders from files without a stat per file, and names are split as strings, not by pathlib:
    # at 20,000 pairs this listing is most of what reopening a disk cache costs (3x faster than iterdir/is_dir)
    with os.scandir(folder) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.name.startswith("."):  # .DS_Store, .ipynb_checkpoints, editor swap files
            continue
        path = folder / entry.name
        if entry.is_dir():
            problems.append(f"{short_path(path)}: unexpected folder inside {folder.name}/")
            continue
        stem, suffix = os.path.splitext(entry.name)
        if file_ending and suffix.lower() != file_ending.lower():
            continue
        if suffix.lower() not in suffixes:
            problems.append(f"{short_path(path)}: unsupported file type (expected one of {', '.join(suffixes)})")
            continue
        name, problem = name_of(path, stem)
        if problem:
            problems.append(problem)
        elif name in found:
            problems.append(f"{short_path(path)} and {short_path(found[name])}: two files for example {name}")
        else:
            found[name] = path
    if problems:
        raise DataError(problems)
    return found



def pair_files(data_dir) -> dict[str, tuple[Path, Path]]:
    """Pair each image with its mask by name, never by position: {name: (image, mask)} in natural order.

    Folders and layout come from `data_dir/dataset.json` if there is one: images/NAME.* with masks/NAME.*
    (or the folders it names), or nnU-Net's imagesTr/NAME_0000.EXT with labelsTr/NAME.EXT."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    return pair_declared(data_dir, read_declared(data_dir))



def pair_declared(data_dir: Path, declared: dict) -> dict[str, tuple[Path, Path]]:
    folders = {kind: data_dir / declared[kind] for kind in ("images", "masks")}
    missing = [f"{data_dir}: no {declared[kind]}/ folder" for kind, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise DataError(missing)
    name_of = _nnunet_image_name if declared["layout"] == "nnunet" else _plain_name
    images = _files_by_name(folders["images"], IMAGE_SUFFIXES, declared["file_ending"], name_of)
    masks = _files_by_name(folders["masks"], MASK_SUFFIXES, declared["file_ending"])
    problems = [f"{folders[kind]}: empty folder" for kind, found in (("images", images), ("masks", masks)) if not found]
    if problems:
        raise DataError(problems)
    for found, other_found, other in ((images, masks, "mask"), (masks, images, "image")):
        for name in sorted(found.keys() - other_found, key=natural_key):
            problems.append(f"{short_path(found[name])}: no matching {other} for example {name}")
    if problems:
        raise DataError(problems)
    return {name: (images[name], masks[name]) for name in sorted(images, key=natural_key)}


def source_folders(data_dir, declared: dict) -> tuple[Path, Path]:
    """The folders whose files make the dataset (images, masks): what the disk cache's key lists and stats."""
    data_dir = Path(data_dir)
    return data_dir / declared["images"], data_dir / declared["masks"]
