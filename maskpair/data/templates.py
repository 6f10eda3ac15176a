"""Name templates: where a dataset's files are, as paths relative to the data root with one `{name}` field.

    "masks": "1st_manual/{name}_manual1.gif"                 21_manual1.gif -> example 21
    "images": "leftImg8bit/train/*/{name}_leftImg8bit.png"   `*`: any one folder level (here, the city)
    "masks": "masks/{name}_mask"                             no extension: any supported file type

`{name}` stands in the file name (the last part) and matches what the pair's files share; `*` stands for a whole
folder level. Without an extension after `{name}`, any supported extension fits and is not part of the name.
A template is compiled once into a `Template`, which lists the files that fit it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

NAME_FIELD = "{name}"
ANY_FOLDER = "*"


def is_template(location: str) -> bool:
    """True for a template (it holds `{name}`), False for a folder name."""
    return NAME_FIELD in location


def template_problem(location: str, allow_any_folder: bool = True) -> str | None:
    """Why `location` is not a valid template (None if it is): one `{name}` in the file name, `*` only as a
    whole folder level, no other braces."""
    parts = PurePosixPath(location).parts
    if location.count(NAME_FIELD) != 1:
        return f"{NAME_FIELD} must appear once, got {location.count(NAME_FIELD)} times"
    if NAME_FIELD not in parts[-1]:
        return f"{NAME_FIELD} must be in the file name (the last part), not in a folder"
    if "{" in location.replace(NAME_FIELD, "") or "}" in location.replace(NAME_FIELD, ""):
        return f"the only field is {NAME_FIELD}"
    for part in parts:
        if ANY_FOLDER in part and (part != ANY_FOLDER or part == parts[-1] or not allow_any_folder):
            return ("* is not allowed here (it names files by folder, and each example has one file here)"
                    if not allow_any_folder else "* stands only for a whole folder level, e.g. train/*/{name}.png")
    return None


@dataclass(frozen=True)
class Template:
    """A compiled template: folder parts (literal or `*`) and a pattern for the file name."""

    text: str
    folders: tuple  # folder parts: literal names or "*"
    pattern: re.Pattern  # fullmatch on a file name; group "name", and group "ext" when the template has none
    fixed_suffix: str | None  # the template's own extension (".gif"), or None: any supported one

    @classmethod
    def compile(cls, text: str) -> Template:
        *folders, file_part = PurePosixPath(text).parts
        before, after = file_part.split(NAME_FIELD)
        stem_after, suffix = os.path.splitext("x" + after)  # "x": ".jpg" alone is an extension, not a hidden file
        stem_after = stem_after[1:]
        if suffix:  # the extension as written, in any case (.JPG files fit ".jpg")
            pattern = f"{re.escape(before)}(?P<name>.+){re.escape(stem_after)}(?i:{re.escape(suffix)})"
        else:  # any extension (checked against the supported ones by the caller), not part of the name
            pattern = f"{re.escape(before)}(?P<name>.+?){re.escape(after)}(?P<ext>\\.[^./]+)"
        return cls(text, tuple(folders), re.compile(pattern, re.DOTALL), suffix.lower() or None)

    def folder_paths(self, root: Path) -> list[Path]:
        """The existing folders this template reaches under `root` (`*` expanded to every visible subfolder)."""
        found = [Path(root)]
        for part in self.folders:
            if part == ANY_FOLDER:
                found = [Path(entry.path) for folder in found for entry in _sorted_entries(folder)
                         if entry.is_dir() and not entry.name.startswith(".")]
            else:
                found = [folder / part for folder in found if (folder / part).is_dir()]
        return found

    def name_of(self, file_name: str, suffixes) -> str | None:
        """The `{name}` of a file name that fits (its extension among `suffixes` when the template gives none)."""
        match = self.pattern.fullmatch(file_name)
        if match is None or file_name.startswith("."):
            return None
        if self.fixed_suffix is None and match.group("ext").lower() not in suffixes:
            return None
        return match.group("name")

    def path_of(self, root: Path, name: str) -> Path:
        """The file of `name` (templates without `*` and with an extension only, such as an ROI's)."""
        return Path(root) / self.text.replace(NAME_FIELD, name)

    def name_of_path(self, root: Path, path: Path) -> str | None:
        """The `{name}` of a file given by its path, or None if the path does not fit."""
        try:
            relative = PurePosixPath(Path(path).relative_to(root).as_posix())
        except ValueError:
            return None
        *folders, file_name = relative.parts
        if len(folders) != len(self.folders) or any(part not in (ANY_FOLDER, folder)
                                                    for part, folder in zip(self.folders, folders)):
            return None
        match = self.pattern.fullmatch(file_name)
        return match.group("name") if match else None


def _sorted_entries(folder: Path) -> list:
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return []
