"""The contact sheet: a grid of pairs with their labels' outlines and their flags, flagged pairs first."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from maskpair import figures
from maskpair.audit.dataset import open_dataset
from maskpair.audit.report import flagged
from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.reading import image_to_float

CAPTION_HEIGHT = 40     # px under each contact-sheet thumbnail: the name and two flags (the default font: ~6 px a


def sheet_order(report, max_examples: int) -> list[str]:
    """The names a contact sheet shows: every flagged pair first, then the others, in report order."""
    entries = report["examples"]
    return [e["name"] for e in entries if e["flags"]][:max_examples] + \
        [e["name"] for e in entries if not e["flags"]][:max(0, max_examples - len(flagged(report)))]



def contact_sheet(report, data_dir, path, columns: int = 6, max_examples: int = 60, thumb: int = 160) -> Path:
    """Save a PNG grid of up to max_examples pairs (`sheet_order`), each with its labels' boundaries drawn in the
    class colours (as every figure of the project) and its first flags as caption. Reads only the pairs shown."""
    entries = {entry["name"]: entry for entry in report["examples"]}
    shown = sheet_order(report, max_examples)
    captions = [[name] + entries[name]["flags"][:2] + (["..."] if len(entries[name]["flags"]) > 2 else [])
                for name in shown]
    return draw_sheet(open_dataset(data_dir), shown, captions, path, columns, thumb,
                      marked=[bool(entries[name]["flags"]) for name in shown])



def draw_sheet(data, names, captions, path, columns: int = 6, thumb: int = 160, marked=None) -> Path:
    """Save a PNG grid of the pairs `names` (read from `data`, a DataLoader), each with its labels' boundaries in
    the class colours and its caption lines under it (red where `marked`, else black; lines too long for the tile
    cut with "~"; CAPTION_HEIGHT holds three). Reads only the pairs shown."""
    from PIL import Image, ImageDraw

    marked = marked if marked is not None else [False] * len(names)
    colours = np.round(np.array([figures.class_colour(k) for k in range(256)]) * 255).astype(np.uint8)
    sheet = Image.new("RGB", (columns * thumb, -(-len(names) // columns) * (thumb + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(names):
        image, mask = data.raw_pair(name)
        rgb = np.round(figures.as_rgb(image_to_float(image)) * 255).astype(np.uint8)
        outline = label_boundaries(mask, IGNORE_INDEX)
        rgb[outline] = colours[mask[outline]]
        tile = Image.fromarray(rgb)
        tile.thumbnail((thumb, thumb))
        x, y = (k % columns) * thumb, (k // columns) * (thumb + CAPTION_HEIGHT)
        sheet.paste(tile, (x, y))
        caption = "\n".join(line if len(line) <= thumb // 6 else line[:thumb // 6 - 1] + "~" for line in captions[k])
        draw.multiline_text((x + 2, y + thumb + 1), caption, fill=(200, 0, 40) if marked[k] else (0, 0, 0), spacing=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
