"""Finding and pairing files: which image goes with which mask, by name, never by position."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from maskpair.data.description import (
    DESCRIPTION_FILE,
    IMAGE_SUFFIXES,
    LOSSY_SUFFIXES,
    MASK_SUFFIXES,
    read_declared,
)
from maskpair.data.templates import NAME_FIELD, Template, is_template
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



def _files_by_name(folder: Path, suffixes, file_ending, name_of=_plain_name, problems=None,
                   lossy=True) -> dict[str, Path]:
    """Map pair name -> file for the visible files of `folder`; refuse unknown types and clashing names (into
    `problems` when given, else raised).

    With a `file_ending`, files with another ending are not considered (nnU-Net's convention)."""
    raise_here, found = problems is None, {}
    problems = [] if problems is None else problems
    # scandir tells folders from files without a stat per file, and names are split as strings, not by pathlib:
    # with many pairs this listing is most of what reopening a disk cache costs (bench/README.md)
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
            problems.append(jpeg_mask_problem(path) if not lossy and suffix.lower() in LOSSY_SUFFIXES else
                            f"{short_path(path)}: unsupported file type (expected one of {', '.join(suffixes)})")
            continue
        name, problem = name_of(path, stem)
        if problem:
            problems.append(problem)
        elif name in found:
            problems.append(f"{short_path(path)} and {short_path(found[name])}: two files for example {name}")
        else:
            found[name] = path
    if problems and raise_here:
        raise DataError(problems)
    return found



def pair_files(data_dir) -> dict[str, tuple[Path, Path]]:
    """Pair each image with its mask by name, never by position: {name: (image, mask)} in natural order.

    Folders and layout come from `data_dir/dataset.json` if there is one: images/NAME.* with masks/NAME.*
    (or the folders or name templates it gives), or nnU-Net's imagesTr/NAME_0000.EXT with labelsTr/NAME.EXT."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    return pair_declared(data_dir, read_declared(data_dir))


def pair_declared(data_dir: Path, declared: dict) -> dict[str, tuple[Path, Path]]:
    """{name: (image, mask)} of the files `declared` (read_declared's fields) describes; DataError lists every
    problem (orphans, clashing names, unsupported types, missing ROI files)."""
    return find_pairs(data_dir, declared).pairs


@dataclass
class FoundFiles:
    """What pairing found: the pairs, and what is left out of them."""

    pairs: dict  # {name: (image, mask)} in natural order
    unpaired_images: list = field(default_factory=list)  # images without a mask ("unpaired_images": "skip")
    outside: int = 0  # files where the templates look that fit none of them (left alone)


def find_pairs(data_dir, declared: dict) -> FoundFiles:
    """Pair the files `declared` (read_declared's fields, or a description's) describes: by file stem in two
    folders, by nnU-Net's names, or by name templates. Every problem is listed in one DataError."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    if is_template(declared["images"]) or is_template(declared["masks"]):
        images, masks, outside = _files_by_template(data_dir, declared)
        empty = [f"{data_dir}: no file fits {kind} {declared[kind]!r}{_no_folder(data_dir, declared[kind])}"
                 for kind, found in (("images", images), ("masks", masks)) if not found]
    else:
        images, masks = _files_in_folders(data_dir, declared)
        outside = 0
        empty = [f"{data_dir / declared[kind]}: empty folder" for kind, found in (("images", images), ("masks", masks))
                 if not found]
    if empty:
        raise DataError(empty)
    problems, unpaired = [], []
    for name in sorted(images.keys() - masks, key=natural_key):
        if declared.get("unpaired_images", "error") == "skip":
            unpaired.append(images[name])
        else:
            problems.append(f"{short_path(images[name])}: no matching mask for example {name}")
    for name in sorted(masks.keys() - images, key=natural_key):
        problems.append(f"{short_path(masks[name])}: no matching image for example {name}")
    if problems:
        raise DataError(problems)
    pairs = {name: (images[name], masks[name]) for name in sorted(masks, key=natural_key)}
    if declared.get("roi"):
        roi = Template.compile(declared["roi"])
        missing = [roi.path_of(data_dir, name) for name in pairs]
        missing = [path for path in missing if not path.is_file()]
        if missing:
            raise DataError([f"{short_path(path)}: no such ROI file (roi {declared['roi']!r})" for path in missing])
    return FoundFiles(pairs, unpaired, outside)


def _no_folder(data_dir: Path, location: str) -> str:
    """` (no folder X/)` when the folders a template names are not there, else ""."""
    template = Template.compile(side_template(location))
    if template.folder_paths(data_dir):
        return ""
    return f" (no folder {'/'.join(template.folders)}/)"


def _files_in_folders(data_dir: Path, declared: dict):
    """({name: image}, {name: mask}) of two folders paired by file stem (or nnU-Net's names)."""
    folders = {kind: data_dir / declared[kind] for kind in ("images", "masks")}
    missing = [f"{data_dir}: no {declared[kind]}/ folder" for kind, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise DataError(missing)
    name_of = _nnunet_image_name if declared["layout"] == "nnunet" else _plain_name
    problems = []
    images = _files_by_name(folders["images"], IMAGE_SUFFIXES, declared["file_ending"], name_of, problems=problems)
    masks = _files_by_name(folders["masks"], mask_suffixes(declared), declared["file_ending"], problems=problems,
                           lossy=declared.get("lossy_masks", False))
    if problems:
        raise DataError(problems)
    return images, masks


def mask_suffixes(declared) -> tuple:
    """The mask file types a description reads: lossless ones, and JPEG with lossy_masks."""
    lossy = declared.get("lossy_masks", False) if isinstance(declared, dict) else declared.lossy_masks
    return MASK_SUFFIXES + (LOSSY_SUFFIXES if lossy else ())


def jpeg_mask_problem(path: Path) -> str:
    return (f"{short_path(path)}: JPEG mask (lossy compression changes label values); set \"lossy_masks\": true in "
            f"{DESCRIPTION_FILE} to read each pixel as its nearest label")


def side_template(location: str) -> str:
    """A side's template: as given, or `folder/{name}` (any supported file type) for a folder."""
    return location if is_template(location) else f"{location.rstrip('/')}/{NAME_FIELD}"


def _files_by_template(data_dir: Path, declared: dict):
    """({name: image}, {name: mask}, files that fit no template) by the sides' templates. A file that fits the
    masks' (or the ROI's) template is no image, so images and masks may share a folder."""
    templates = {kind: Template.compile(side_template(declared[kind])) for kind in ("images", "masks")}
    roi = Template.compile(declared["roi"]) if declared.get("roi") else None
    known = tuple(sorted(set(IMAGE_SUFFIXES + MASK_SUFFIXES + LOSSY_SUFFIXES)))
    found = {"images": {}, "masks": {}}
    problems, fits_any = [], set()
    listed = {}
    for kind in ("masks", "images"):  # masks first: what they claim is not an image
        template = templates[kind]
        for folder in template.folder_paths(data_dir):
            entries = listed.setdefault(folder, _visible_files(folder))
            for entry_name in entries:
                path = folder / entry_name
                name = template.name_of(entry_name, known)
                if name is None or (kind == "images" and (path in fits_any or
                                                          (roi and roi.name_of_path(data_dir, path)))):
                    continue
                fits_any.add(path)
                problem = _type_problem(path, kind, declared)
                if problem:
                    problems.append(problem)
                elif name in found[kind]:
                    problems.append(f"{short_path(path)} and {short_path(found[kind][name])}: two files for "
                                    f"example {name}")
                else:
                    found[kind][name] = path
    if roi:
        fits_any.update(roi.path_of(data_dir, name) for name in found["masks"])
        for folder in roi.folder_paths(data_dir):
            listed.setdefault(folder, _visible_files(folder))
    if problems:
        raise DataError(problems)
    outside = sum(1 for folder, names in listed.items() for n in names if folder / n not in fits_any)
    return found["images"], found["masks"], outside


def _type_problem(path: Path, kind: str, declared: dict) -> str | None:
    suffix = path.suffix.lower()
    if kind == "masks" and suffix in LOSSY_SUFFIXES and not declared.get("lossy_masks", False):
        return jpeg_mask_problem(path)
    suffixes = IMAGE_SUFFIXES if kind == "images" else mask_suffixes(declared)
    if suffix not in suffixes:
        return f"{short_path(path)}: unsupported file type (expected one of {', '.join(suffixes)})"
    return None


def _visible_files(folder: Path) -> list[str]:
    """Names of the visible files of `folder` (not folders), sorted."""
    with os.scandir(folder) as listing:
        return sorted(entry.name for entry in listing if not entry.name.startswith(".") and not entry.is_dir())


def pair_name(mask_path, description) -> str:
    """The example name of a mask file under a description (its stem, or what its template's {name} matched)."""
    mask_path = Path(mask_path)
    if description.layout == "folders" and description.templated:
        name = Template.compile(side_template(description.masks)).name_of_path(description.data_dir, mask_path)
        if name is None:
            raise DataError(f"{short_path(mask_path)}: does not fit masks {description.masks!r}")
        return name
    return os.path.splitext(mask_path.name)[0]


def roi_path(mask_path, description) -> Path | None:
    """The ROI file of the pair whose mask is `mask_path`, or None when the description has no ROI."""
    if not description.roi:
        return None
    if description.data_dir is None:  # the template is relative to the folder of the dataset.json
        raise DataError(f"dataset description: roi {description.roi!r} needs the {DESCRIPTION_FILE} it came from "
                        f"(source)")
    return Template.compile(description.roi).path_of(description.data_dir, pair_name(mask_path, description))


def dataset_files(data_dir) -> dict[str, tuple[Path, ...]]:
    """{name: (image, mask) or (image, mask, ROI)}: every file each example is read from, for keys that must change
    when any of them does (a report's, a cache's)."""
    data_dir = Path(data_dir)
    declared = read_declared(data_dir)
    pairs = find_pairs(data_dir, declared).pairs
    if not declared.get("roi"):
        return pairs
    roi = Template.compile(declared["roi"])
    return {name: (*paths, roi.path_of(data_dir, name)) for name, paths in pairs.items()}


def source_folders(data_dir, declared: dict) -> list[Path]:
    """The folders whose files make the dataset (images, masks, ROI; every folder a `*` reaches): what the disk
    cache's key lists and stats."""
    data_dir = Path(data_dir)
    if not (is_template(declared["images"]) or is_template(declared["masks"])):
        return [data_dir / declared["images"], data_dir / declared["masks"]]
    locations = [side_template(declared[kind]) for kind in ("images", "masks")] + [declared.get("roi")]
    folders = []
    for location in filter(None, locations):
        for folder in Template.compile(location).folder_paths(data_dir):
            if folder not in folders:
                folders.append(folder)
    return folders
