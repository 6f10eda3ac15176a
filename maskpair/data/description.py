"""The dataset description: `dataset.json` at the data root (nnU-Net v2's convention plus a few keys of ours),
read and validated here; `inspection.describe` completes it from the files when keys are left out.

    {"name": "EM membranes", "images": "image", "masks": "label", "channel_names": {"0": "EM"},
     "labels": {"membrane": 0, "cell": 255}, "partial_labels": false}

- `images` / `masks`: folder names (default images/, masks/); without them and with `imagesTr/` present,
  nnU-Net's raw layout `imagesTr/NAME_0000.EXT` + `labelsTr/NAME.EXT`; `file_ending` restricts the files.
- `labels`: name -> mask value (any integers); a label named `ignore` is not a class. Classes are the other
  labels ordered by value; class index = rank of the value; IGNORE_INDEX marks ignore (and padding) pixels.
- `channel_names`: 1 channel = gray, 3 = RGB (kept as RGB); `partial_labels`: a class absent from a mask
  means "not annotated here"; `audit`: switches for the audit's domain checks, passed through untouched.
- Any key left out is inferred (`inspection.describe`): labels = the distinct mask values, named by value;
  channels = those of most images. An image with another channel count is an error naming it, whether the
  count was written or inferred: gray and colour are never converted into each other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskpair.errors import DataError
from maskpair.jsonio import dumps

DESCRIPTION_FILE = "dataset.json"
IGNORE_LABEL = "ignore"  # nnU-Net's name for "no target here"
IGNORE_INDEX = 255  # class index of ignore and padding pixels in label maps
MAX_CLASSES = 254  # class indices 0..253 fit uint8 label maps beside IGNORE_INDEX
CHANNEL_COUNTS = {1: "gray", 3: "RGB"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy")  # lossless only: a JPEG mask invents label values
LAYOUTS = ("folders", "nnunet")
NNUNET_FOLDERS = ("imagesTr", "labelsTr")
OUR_KEYS = ("images", "masks", "partial_labels", "audit")
NNUNET_KEYS = ("name", "channel_names", "labels", "file_ending")
# read but not used: nnU-Net's and the Medical Segmentation Decathlon's informational keys
INFORMATIONAL_KEYS = ("description", "reference", "licence", "license", "release", "tensorImageSize",
                      "numTraining", "numTest", "training", "test", "overwrite_image_reader_writer",
                      "regions_class_order", "dataset_name")


@dataclass(frozen=True)
class DatasetDescription:
    """What a dataset is: where its files are, its labels and channels. Validated on construction.

    Dicts are kept as given (labels sorted by value); treat them as read-only.
    """

    name: str
    channel_names: dict  # {"0": "EM"}: index (as a string) -> channel name
    labels: dict  # {"membrane": 0, "cell": 255}: name -> mask value
    partial_labels: bool = False  # a class absent from a mask means "not annotated here"
    images: str = "images"  # folder of the images (imagesTr in the nnU-Net layout)
    masks: str = "masks"  # folder of the masks (labelsTr in the nnU-Net layout)
    file_ending: str | None = None  # only files with this ending are considered, e.g. ".png"
    audit: dict = field(default_factory=dict)  # the audit module's switches, untouched here
    layout: str = "folders"  # "folders" (pair by file stem) or "nnunet" (NAME_0000.EXT with NAME.EXT)
    source: str = "inferred"  # path of the dataset.json read, or "inferred"

    def __post_init__(self):
        where = _where(Path(self.source)) if self.declared else "dataset description"
        object.__setattr__(self, "name", _checked_str(self.name, where, "name"))
        object.__setattr__(self, "channel_names", checked_channel_names(self.channel_names, where))
        object.__setattr__(self, "labels", checked_labels(self.labels, where))
        object.__setattr__(self, "partial_labels", _checked_bool(self.partial_labels, where, "partial_labels"))
        object.__setattr__(self, "images", _checked_folder(self.images, where, "images"))
        object.__setattr__(self, "masks", _checked_folder(self.masks, where, "masks"))
        object.__setattr__(self, "file_ending", checked_file_ending(self.file_ending, where))
        object.__setattr__(self, "audit", _checked_dict(self.audit, where, "audit"))
        if self.layout not in LAYOUTS:
            raise DataError(f"{where}: layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names without ignore, in value order (class index = position)."""
        return tuple(name for name in self.labels if name != IGNORE_LABEL)

    @property
    def class_values(self) -> tuple[int, ...]:
        """The mask value of each class, in class-index order."""
        return tuple(self.labels[name] for name in self.classes)

    @property
    def ignore_value(self) -> int | None:
        """The mask value whose pixels carry no target, or None."""
        return self.labels.get(IGNORE_LABEL)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def declared(self) -> bool:
        """True when read from a dataset.json (then error messages name it), False when inferred."""
        return self.source != "inferred"

    def encode(self, labels) -> np.ndarray:
        """Class indices (H, W) -> this dataset's mask values, in the smallest unsigned type that holds them (the
        inverse of reading a mask, for writing predictions as the dataset stores its masks)."""
        labels = np.asarray(labels)
        if labels.size and int(labels.max()) >= self.n_classes:
            raise ValueError(f"label map holds class {int(labels.max())}; {self.name} has {self.n_classes} classes")
        values = np.array(self.class_values)
        dtype = next(t for t in (np.uint8, np.uint16, np.int32) if values.min() >= np.iinfo(t).min
                     and values.max() <= np.iinfo(t).max)
        return values.astype(dtype)[labels]

    def labels_text(self) -> str:
        """`0 membrane, 255 cell`: the labels as error messages list them."""
        return ", ".join(f"{value} {name}" for name, value in self.labels.items())

    def to_json(self) -> str:
        """This description as dataset.json text (what a user saves and edits); reading it back gives the same."""
        keys = {"name": self.name}
        if self.layout == "folders":  # the nnU-Net layout is recognised from its folders
            keys.update(images=self.images, masks=self.masks)
        keys.update(channel_names=self.channel_names, labels=self.labels, partial_labels=self.partial_labels)
        if self.file_ending:
            keys["file_ending"] = self.file_ending
        if self.audit:
            keys["audit"] = self.audit
        lines = [f"  {dumps(key)}: {dumps(value)}" for key, value in keys.items()]
        return "{\n" + ",\n".join(lines) + "\n}"  # one key per line, each value on its line: easy to edit


# ---------------------------------------------------------------- reading dataset.json


def read_declared(data_dir) -> dict:
    """The validated keys of `data_dir/dataset.json` ({} without one) plus where the files are: `layout`,
    `images`, `masks`, `source`. `labels` and `channel_names` are present only if the file gives them."""
    data_dir = Path(data_dir)
    path = data_dir / DESCRIPTION_FILE
    declared = _parse(path) if path.is_file() else {}
    source = str(path) if path.is_file() else "inferred"
    where = _where(path)
    fields = {"source": source, "name": _checked_str(declared.get("name", data_dir.name), where, "name")}
    if "channel_names" in declared:
        fields["channel_names"] = checked_channel_names(declared["channel_names"], where)
    if "labels" in declared:
        fields["labels"] = checked_labels(declared["labels"], where)
    fields["partial_labels"] = _checked_bool(declared.get("partial_labels", False), where, "partial_labels")
    fields["file_ending"] = checked_file_ending(declared.get("file_ending"), where)
    fields["audit"] = _checked_dict(declared.get("audit", {}), where, "audit")
    fields.update(_folders(data_dir, declared, where))
    return fields


def _where(path: Path) -> str:
    """`d/dataset.json`: the folder and file name, as error messages show them."""
    return f"{path.parent.name}/{path.name}"


def _parse(path: Path) -> dict:
    """The JSON object in `path`; malformed JSON, a non-object, repeated and unknown keys are errors."""
    where = _where(path)

    def no_repeats(pairs):
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise DataError(f"{where}: key {repeated[0]!r} appears twice")
        return dict(pairs)

    try:
        declared = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_repeats)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    if not isinstance(declared, dict):
        raise DataError(f"{where}: expected a JSON object {{...}}, got {type(declared).__name__}")
    if "modality" in declared:
        raise DataError(f"{where}: 'modality' is nnU-Net v1's key; v2 (read here) calls it 'channel_names'")
    unknown = [key for key in declared if key not in OUR_KEYS + NNUNET_KEYS + INFORMATIONAL_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(NNUNET_KEYS + OUR_KEYS)})")
    return declared


def _folders(data_dir: Path, declared: dict, where: str) -> dict:
    """layout, images and masks folder: as declared, else nnU-Net's raw layout if imagesTr/ is there, else
    images/ + masks/."""
    if "images" in declared or "masks" in declared:
        return {"layout": "folders", "images": _checked_folder(declared.get("images", "images"), where, "images"),
                "masks": _checked_folder(declared.get("masks", "masks"), where, "masks")}
    nnunet = (data_dir / NNUNET_FOLDERS[0]).is_dir()
    if nnunet and (data_dir / "images").is_dir():
        raise DataError(f"{data_dir}: both images/ and imagesTr/; say which in {DESCRIPTION_FILE} "
                        f'("images": ..., "masks": ...)')
    if nnunet:
        return {"layout": "nnunet", "images": NNUNET_FOLDERS[0], "masks": NNUNET_FOLDERS[1]}
    return {"layout": "folders", "images": "images", "masks": "masks"}


# ---------------------------------------------------------------- one check per key


def checked_labels(labels, where: str) -> dict:
    """`labels` as {name: int value} sorted by value; lists (regions), non-integers, repeats refused."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{where}: labels must be a non-empty object {{name: value}}, got {labels!r}")
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(f"{where}: labels: {name!r} is a list of values (nnU-Net region-based training), "
                            f"not supported; give each label one value")
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: labels: {name!r} has value {value!r}, expected an integer")
    by_value = {}
    for name, value in labels.items():
        if value in by_value:
            raise DataError(f"{where}: labels: {by_value[value]!r} and {name!r} both have value {value}")
        by_value[value] = name
    n_classes = len(labels) - (IGNORE_LABEL in labels)
    if n_classes < 1:
        raise DataError(f"{where}: labels: no class besides {IGNORE_LABEL!r}")
    if n_classes > MAX_CLASSES:
        raise DataError(f"{where}: labels: {n_classes} classes, at most {MAX_CLASSES} are supported")
    return {str(by_value[value]): value for value in sorted(by_value)}


def checked_channel_names(channel_names, where: str) -> dict:
    """`channel_names` as {"0": name, ...}: keys 0..C-1, C = 1 (gray) or 3 (RGB)."""
    if not isinstance(channel_names, dict) or not all(isinstance(v, str) for v in channel_names.values()):
        raise DataError(f"{where}: channel_names must be an object {{\"0\": name}}, got {channel_names!r}")
    expected = [str(k) for k in range(len(channel_names))]
    if sorted(channel_names, key=lambda k: (len(k), k)) != expected:
        raise DataError(f"{where}: channel_names keys must be {', '.join(expected) or '0'}, "
                        f"got {', '.join(channel_names) or 'none'}")
    if len(channel_names) not in CHANNEL_COUNTS:
        raise DataError(f"{where}: channel_names has {len(channel_names)} channels; supported: "
                        f"{', '.join(f'{n} ({kind})' for n, kind in CHANNEL_COUNTS.items())}")
    return {key: channel_names[key] for key in expected}


def checked_file_ending(file_ending, where: str) -> str | None:
    """None, or a supported file ending such as ".png"."""
    if file_ending is None:
        return None
    if not isinstance(file_ending, str) or file_ending.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: file_ending must be one of {', '.join(IMAGE_SUFFIXES)}, got {file_ending!r}")
    return file_ending


def _checked_folder(folder, where: str, key: str) -> str:
    if not isinstance(folder, str) or not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise DataError(f"{where}: {key} must be a folder name inside the data folder, got {folder!r}")
    return folder


def _checked_str(value, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _checked_bool(value, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise DataError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _checked_dict(value, where: str, key: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{where}: {key} must be an object, got {value!r}")
    return value
