"""The dataset description: `dataset.json` at the data root (nnU-Net v2's convention plus a few keys of ours),
read and validated here; `inspection.describe` completes it from the files when keys are left out.

    {"name": "EM membranes", "images": "image", "masks": "label", "channel_names": {"0": "EM"},
     "labels": {"membrane": 0, "cell": 255}, "partial_labels": false}

- `images` / `masks`: folder names (default images/, masks/; files paired by stem), or name templates relative
  to the data root (`"masks": "1st_manual/{name}_manual1.gif"`, `*` for one folder level: `templates`); without
  them and with `imagesTr/` present, nnU-Net's raw layout `imagesTr/NAME_0000.EXT` + `labelsTr/NAME.EXT`;
  `file_ending` restricts the files. `unpaired_images: "skip"`: images without a mask are left out, not errors.
- `roi`: a template of region-of-interest masks (`"mask/{name}_training_mask.gif"`): pixels where it is 0 are
  ignore pixels of the pair.
- `labels`: name -> mask value, a list of values (a class is their union, nnU-Net's region syntax without
  overlaps), or colours `"#rrggbb"` (colour-coded masks; a list of colours likewise); a label named `ignore` is
  not a class. Classes of integer labels are ordered by their (smallest) value, colour labels as listed; class
  index = position; IGNORE_INDEX marks ignore (and padding) pixels.
- `lossy_masks`: every mask pixel takes the nearest label value or colour (JPEG masks); a file with more than
  1% of pixels far (more than 32 levels per channel) from every label is refused.
- `max_size`: pairs whose longer side exceeds it are read at a reduced size (area filter for images, nearest
  for masks); `full_size` readers get the files' own size.
- `channel_names`: 1 channel = gray, 3 = RGB (kept as RGB); `partial_labels`: a class absent from a mask
  means "not annotated here"; `audit`: switches for the audit's domain checks, passed through untouched.
- Any key left out is inferred (`inspection.describe`): labels = the distinct mask values (or colours), named by
  value; channels = those of most images. An image with another channel count is an error naming it, whether the
  count was written or inferred: gray and colour are never converted into each other.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskpair.data.templates import is_template, template_problem
from maskpair.errors import DataError
from maskpair.jsonio import dumps

DESCRIPTION_FILE = "dataset.json"
IGNORE_LABEL = "ignore"  # nnU-Net's name for "no target here"
IGNORE_INDEX = 255  # class index of ignore and padding pixels in label maps
MAX_CLASSES = 254  # class indices 0..253 fit uint8 label maps beside IGNORE_INDEX
CHANNEL_COUNTS = {1: "gray", 3: "RGB"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif", ".npy")  # lossless: a JPEG mask invents label values
LOSSY_SUFFIXES = (".jpg", ".jpeg")  # masks of these types are read only with "lossy_masks": true
LAYOUTS = ("folders", "nnunet")
NNUNET_FOLDERS = ("imagesTr", "labelsTr")
UNPAIRED_IMAGES = ("error", "skip")  # an image without a mask: an error naming it, or left out of the dataset
MIN_MAX_SIZE = 32
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
OUR_KEYS = ("images", "masks", "roi", "unpaired_images", "partial_labels", "lossy_masks", "max_size", "audit")
NNUNET_KEYS = ("name", "channel_names", "labels", "file_ending")
# read but not used: nnU-Net's and the Medical Segmentation Decathlon's informational keys
INFORMATIONAL_KEYS = ("description", "reference", "licence", "license", "release", "tensorImageSize",
                      "numTraining", "numTest", "training", "test", "overwrite_image_reader_writer",
                      "dataset_name")


@dataclass(frozen=True)
class DatasetDescription:
    """What a dataset is: where its files are, its labels and channels. Validated on construction.

    Dicts are kept as given (integer labels sorted by value, colours in lower case); treat them as read-only.
    """

    name: str
    channel_names: dict  # {"0": "EM"}: index (as a string) -> channel name
    labels: dict  # {"membrane": 0, "cell": 255}: name -> mask value, list of values, "#rrggbb" or list of colours
    partial_labels: bool = False  # a class absent from a mask means "not annotated here"
    images: str = "images"  # folder or template of the images (imagesTr in the nnU-Net layout)
    masks: str = "masks"  # folder or template of the masks (labelsTr in the nnU-Net layout)
    file_ending: str | None = None  # only files with this ending are considered, e.g. ".png"
    audit: dict = field(default_factory=dict)  # the audit module's switches, untouched here
    layout: str = "folders"  # "folders" (pair by file stem or templates) or "nnunet" (NAME_0000.EXT with NAME.EXT)
    source: str = "inferred"  # path of the dataset.json read, or "inferred"
    roi: str | None = None  # template of the region-of-interest masks (0 = outside: ignore), or None
    unpaired_images: str = "error"  # "skip": images without a mask are left out of the dataset
    lossy_masks: bool = False  # each mask pixel takes the nearest label value or colour
    max_size: int | None = None  # longer side above which pairs are read at a reduced size

    def __post_init__(self):
        where = _where(Path(self.source)) if self.declared else "dataset description"
        object.__setattr__(self, "name", _checked_str(self.name, where, "name"))
        object.__setattr__(self, "channel_names", checked_channel_names(self.channel_names, where))
        object.__setattr__(self, "labels", checked_labels(self.labels, where))
        object.__setattr__(self, "partial_labels", _checked_bool(self.partial_labels, where, "partial_labels"))
        object.__setattr__(self, "images", _checked_location(self.images, where, "images"))
        object.__setattr__(self, "masks", _checked_location(self.masks, where, "masks"))
        object.__setattr__(self, "file_ending", checked_file_ending(self.file_ending, where))
        object.__setattr__(self, "audit", _checked_dict(self.audit, where, "audit"))
        object.__setattr__(self, "roi", checked_roi(self.roi, where))
        object.__setattr__(self, "unpaired_images", checked_unpaired_images(self.unpaired_images, where))
        object.__setattr__(self, "lossy_masks", _checked_bool(self.lossy_masks, where, "lossy_masks"))
        object.__setattr__(self, "max_size", checked_max_size(self.max_size, where))
        if self.layout not in LAYOUTS:
            raise DataError(f"{where}: layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names without ignore, in class-index order (integer labels by value, colours as listed)."""
        return tuple(name for name in self.labels if name != IGNORE_LABEL)

    @property
    def class_values(self) -> tuple:
        """The mask value of each class, in class-index order: its first value (an int, or "#rrggbb")."""
        return tuple(self.values_of(name)[0] for name in self.classes)

    @property
    def ignore_value(self):
        """The (first) mask value whose pixels carry no target, or None."""
        return self.values_of(IGNORE_LABEL)[0] if IGNORE_LABEL in self.labels else None

    @property
    def colour_labels(self) -> bool:
        """True when the labels are colours ("#rrggbb"): masks are colour-coded."""
        return isinstance(self.values_of(next(iter(self.labels)))[0], str)

    def values_of(self, label: str) -> tuple:
        """Every mask value (or colour) of `label`, as given."""
        value = self.labels[label]
        return tuple(value) if isinstance(value, list) else (value,)

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

    @property
    def data_dir(self) -> Path | None:
        """The data root of a declared description (the folder of its dataset.json), else None."""
        return Path(self.source).parent if self.declared else None

    @property
    def templated(self) -> bool:
        """True when images or masks are given as name templates (then both sides are paired by template)."""
        return is_template(self.images) or is_template(self.masks)

    def labels_text(self) -> str:
        """`0 membrane, 255 cell`: the labels as error messages list them (`26/27 vehicle`, `#804080 road`)."""
        return ", ".join(f"{'/'.join(map(str, self.values_of(name)))} {name}" for name in self.labels)

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """A label map (H, W) of class indices (IGNORE_INDEX: ignore) as this dataset's mask values: (H, W) of
        the smallest dtype holding them, or (H, W, 3) uint8 colours for colour labels. A class of several values
        is written as its first; IGNORE_INDEX as the (first) ignore value, or the first class's value when the
        dataset has no ignore label (pixels outside an ROI, which the ROI makes ignore again when read)."""
        from maskpair.data.encoding import encode_labels

        return encode_labels(labels, self)

    def to_json(self) -> str:
        """This description as dataset.json text (what a user saves and edits); reading it back gives the same."""
        keys = {"name": self.name}
        if self.layout == "folders":  # the nnU-Net layout is recognised from its folders
            keys.update(images=self.images, masks=self.masks)
        if self.roi:
            keys["roi"] = self.roi
        if self.unpaired_images != "error":
            keys["unpaired_images"] = self.unpaired_images
        keys.update(channel_names=self.channel_names, labels=self.labels, partial_labels=self.partial_labels)
        if self.lossy_masks:
            keys["lossy_masks"] = True
        if self.max_size is not None:
            keys["max_size"] = self.max_size
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
    fields["roi"] = checked_roi(declared.get("roi"), where)
    fields["unpaired_images"] = checked_unpaired_images(declared.get("unpaired_images", "error"), where)
    fields["lossy_masks"] = _checked_bool(declared.get("lossy_masks", False), where, "lossy_masks")
    fields["max_size"] = checked_max_size(declared.get("max_size"), where)
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
    if "regions_class_order" in declared:
        raise DataError(f"{where}: 'regions_class_order' (nnU-Net's overlapping regions) is not supported: "
                        f"classes are exclusive here (multi-label training is not supported); a class may still "
                        f"be a list of values that no other label has")
    unknown = [key for key in declared if key not in OUR_KEYS + NNUNET_KEYS + INFORMATIONAL_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(NNUNET_KEYS + OUR_KEYS)})")
    return declared


def _folders(data_dir: Path, declared: dict, where: str) -> dict:
    """layout, images and masks (folders or templates): as declared, else nnU-Net's raw layout if imagesTr/ is
    there, else images/ + masks/."""
    if "images" in declared or "masks" in declared:
        return {"layout": "folders",
                "images": _checked_location(declared.get("images", "images"), where, "images"),
                "masks": _checked_location(declared.get("masks", "masks"), where, "masks")}
    nnunet = (data_dir / NNUNET_FOLDERS[0]).is_dir()
    if nnunet and (data_dir / "images").is_dir():
        raise DataError(f"{data_dir}: both images/ and imagesTr/; say which in {DESCRIPTION_FILE} "
                        f'("images": ..., "masks": ...)')
    if nnunet:
        return {"layout": "nnunet", "images": NNUNET_FOLDERS[0], "masks": NNUNET_FOLDERS[1]}
    return {"layout": "folders", "images": "images", "masks": "masks"}


# ---------------------------------------------------------------- one check per key


def checked_labels(labels, where: str) -> dict:
    """`labels` as {name: value(s)}: integers (or lists of integers) sorted by smallest value, or colours
    "#rrggbb" (or lists of them) in lower case as listed. A value (or colour) in two labels, an empty list and
    a mix of integers and colours are refused."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{where}: labels must be a non-empty object {{name: value}}, got {labels!r}")
    normal, kinds = {}, set()
    for name, value in labels.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise DataError(f"{where}: labels: {name!r} is an empty list")
        for item in values:
            if isinstance(item, str) and COLOUR.fullmatch(item):
                kinds.add("colour")
            elif isinstance(item, int) and not isinstance(item, bool):
                kinds.add("integer")
            else:
                raise DataError(f"{where}: labels: {name!r} has value {item!r}, expected an integer, a colour "
                                f"\"#rrggbb\" or a list of either")
        normal[str(name)] = ([v.lower() if isinstance(v, str) else v for v in values] if isinstance(value, list)
                             else (value.lower() if isinstance(value, str) else value))
    if len(kinds) > 1:
        raise DataError(f"{where}: labels mix integers and colours; give every label as values, or every label "
                        f"as colours \"#rrggbb\"")
    owner = {}
    for name, value in normal.items():
        for item in value if isinstance(value, list) else [value]:
            if item in owner and owner[item] != name:
                raise DataError(f"{where}: labels: {owner[item]!r} and {name!r} both have value {item} "
                                f"(overlapping regions: multi-label training is not supported; give each value "
                                f"to one label)")
            if item in owner:
                raise DataError(f"{where}: labels: {name!r} lists value {item} twice")
            owner[item] = name
    n_classes = len(normal) - (IGNORE_LABEL in normal)
    if n_classes < 1:
        raise DataError(f"{where}: labels: no class besides {IGNORE_LABEL!r}")
    if n_classes > MAX_CLASSES:
        raise DataError(f"{where}: labels: {n_classes} classes, at most {MAX_CLASSES} are supported")
    if kinds == {"colour"}:
        return normal  # colour labels keep the order they are listed in
    smallest = {name: min(value) if isinstance(value, list) else value for name, value in normal.items()}
    return {name: normal[name] for name in sorted(normal, key=smallest.__getitem__)}


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


def checked_roi(roi, where: str) -> str | None:
    """None, or a template of the region-of-interest masks: one `{name}`, no `*` (one ROI file per name)."""
    if roi is None:
        return None
    if not _inside(roi) or not is_template(roi):
        raise DataError(f"{where}: roi must be a template inside the data folder with {{name}}, e.g. "
                        f"\"mask/{{name}}_mask.gif\", got {roi!r}")
    problem = template_problem(roi, allow_any_folder=False)
    if problem:
        raise DataError(f"{where}: roi {roi!r}: {problem}")
    return roi


def checked_unpaired_images(value, where: str) -> str:
    if value not in UNPAIRED_IMAGES:
        raise DataError(f"{where}: unpaired_images must be one of {', '.join(map(repr, UNPAIRED_IMAGES))}, "
                        f"got {value!r}")
    return value


def checked_max_size(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_MAX_SIZE:
        raise DataError(f"{where}: max_size must be an integer of at least {MIN_MAX_SIZE} (pixels of the longer "
                        f"side) or null, got {value!r}")
    return value


def _inside(location) -> bool:
    return (isinstance(location, str) and bool(location) and not Path(location).is_absolute()
            and ".." not in Path(location).parts and "\\" not in location)


def _checked_location(location, where: str, key: str) -> str:
    """A folder name, or a template with {name} (see `templates`), inside the data folder."""
    if not _inside(location):
        raise DataError(f"{where}: {key} must be a folder name or a template inside the data folder, "
                        f"got {location!r}")
    if is_template(location):
        problem = template_problem(location)
        if problem:
            raise DataError(f"{where}: {key} {location!r}: {problem}")
    elif "*" in location or "{" in location or "}" in location:
        raise DataError(f"{where}: {key} {location!r}: a folder name, or a template with {{name}} for the file "
                        f"name (e.g. \"{location.rstrip('/')}/{{name}}.png\")")
    return location


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
