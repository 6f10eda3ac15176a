"""Drawing one example for the review: image | overlay | labels [| label-issues picture], zoomed and panned, as a
PNG strip; the view settings; the `PairRenderer` that reads pairs, keeps bounded caches of decoded pairs and
rendered strips, and renders the neighbours in a background thread."""
from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from maskpair import figures
from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX
from maskpair.errors import DataError

ZOOMS = (1, 2, 4, 8)
MIN_PANEL_PX = 256          # panels are upscaled by a whole factor to at least this (the browser scales on, crisp)
MAX_PANEL_PX = 512          # larger crops are sampled down to this: PNG size and encoding time stay bounded
GAP_PX = 4                  # white gap between panels
DECODED_CACHE = (32, 256 * 2**20)   # decoded pairs kept (a few neighbours each way): at most 32 and 256 MB
RENDERED_CACHE = (24, 64 * 2**20)   # PNG strips kept, keyed by name and view settings: at most 24 and 64 MB

# ignore pixels: figures' light grey, hatched with a darker grey so they read as "no label", not as a class
IGNORE_RGB = np.round(255 * figures.IGNORE_COLOUR).astype(np.uint8)
HATCH_RGB = np.array([110, 110, 110], np.uint8)


def class_rgb(index: int) -> np.ndarray:
    """8-bit RGB of class index `index` (IGNORE_INDEX: grey): the colour every figure of the project uses."""
    return np.round(255 * figures.class_colour(index)).astype(np.uint8)



@dataclass(frozen=True)
class View:
    """How the current example is drawn; hashable, so rendered strips are cached per view."""

    zoom: int = 1
    centre: tuple[float, float] | None = None  # (row, col) in image pixels the zoom is around; None: the middle
    outline: bool = False                       # overlay: outlines of the labels instead of a tinted fill
    opacity: float = 0.4                        # fill opacity in the overlay panel
    classes: tuple[int, ...] = (1, 2)           # class indices drawn (0 is background and never painted)



def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float in [0, 1], as RGB uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., 0] if image.shape[2] == 1 else image[..., :3]
    if image.ndim not in (2, 3):
        raise ValueError(f"image of shape {image.shape}: expected (H, W) or (H, W, C)")
    if image.dtype != np.uint8:
        image = np.round(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image)



def crop_box(shape, zoom: int, centre=None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the part of an image of `shape` seen at `zoom` around `centre` (kept inside)."""
    height, width = shape[:2]
    crop_h, crop_w = max(1, math.ceil(height / zoom)), max(1, math.ceil(width / zoom))
    row, col = centre if centre is not None else (height / 2, width / 2)
    top = int(np.clip(round(row - crop_h / 2), 0, height - crop_h))
    left = int(np.clip(round(col - crop_w / 2), 0, width - crop_w))
    return top, left, crop_h, crop_w



def panel_size(crop_h: int, crop_w: int) -> tuple[int, int]:
    """Output size of one panel: the crop upscaled by a whole factor to >= MIN_PANEL_PX, or sampled down to MAX."""
    side = max(crop_h, crop_w)
    scale = math.ceil(MIN_PANEL_PX / side) if side < MIN_PANEL_PX else min(1.0, MAX_PANEL_PX / side)
    return max(1, round(crop_h * scale)), max(1, round(crop_w * scale))



def _hatch(shape) -> np.ndarray:
    """Diagonal stripes (True on the dark stripes), the mark of ignore pixels."""
    rows, cols = np.indices(shape[:2])
    return ((rows + cols) // 3) % 2 == 0



def colour_tables(view: View) -> tuple[np.ndarray, np.ndarray]:
    """(colour (256, 3) uint8, shown (256,) bool) by label value: which labels are painted, in what colour."""
    colours = np.zeros((256, 3), np.uint8)
    shown = np.zeros(256, bool)
    for index in view.classes:
        if 0 < index < IGNORE_INDEX:
            colours[index], shown[index] = class_rgb(index), True
    colours[IGNORE_INDEX], shown[IGNORE_INDEX] = IGNORE_RGB, True
    return colours, shown



def render_strip(image: np.ndarray, mask: np.ndarray, view: View = View(), extra: np.ndarray | None = None,
                 prediction: np.ndarray | None = None):
    """One RGB uint8 strip: image | overlay | labels [| extra] [| prediction], each the zoomed crop at display size.

    image: (H, W[, C]) uint8 or float; mask: (H, W) class indices, IGNORE_INDEX drawn hatched grey;
    extra: an RGB picture of the same (H, W) (the label-issues panel) or None; prediction: a model's class-index
    map of the same (H, W), drawn over the image as the mask is (same classes, fill or outline), or None.
    """
    rgb = display_rgb(image)
    top, left, crop_h, crop_w = crop_box(mask.shape, view.zoom, view.centre)
    out_h, out_w = panel_size(crop_h, crop_w)
    rows = top + (np.arange(out_h) * crop_h) // out_h  # nearest neighbour: every pixel stays a crisp block
    cols = left + (np.arange(out_w) * crop_w) // out_w
    picture = rgb[rows[:, None], cols]
    labels = np.asarray(mask)[rows[:, None], cols]
    colours, shown = colour_tables(view)
    hatch = _hatch(labels.shape)

    def overlay(label_map):
        """The picture with `label_map`'s shown classes tinted (or outlined), its ignore pixels hatched."""
        painted = shown[label_map]
        drawn = picture.copy()
        if view.outline:
            line = painted & label_boundaries(label_map)
            drawn[line] = colours[label_map[line]]
        else:
            alpha = np.float32(view.opacity)
            mixed = (1 - alpha) * picture[painted] + alpha * colours[label_map[painted]].astype(np.float32)
            drawn[painted] = np.round(mixed).astype(np.uint8)
        drawn[(label_map == IGNORE_INDEX) & hatch] = HATCH_RGB
        return drawn

    label_panel = colours[np.where(shown[labels], labels, 0)]
    label_panel[(labels == IGNORE_INDEX) & hatch] = HATCH_RGB
    panels = [picture, overlay(labels), label_panel]
    if extra is not None:
        panels.append(display_rgb(extra)[rows[:, None], cols])
    if prediction is not None:
        panels.append(overlay(np.asarray(prediction)[rows[:, None], cols]))
    gap = np.full((out_h, GAP_PX, 3), 255, np.uint8)
    return np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)



def image_point(x: float, y: float, shape, view: View) -> tuple[float, float]:
    """The image pixel (row, col) under strip pixel (x, y), whichever panel it is in."""
    top, left, crop_h, crop_w = crop_box(shape, view.zoom, view.centre)
    out_h, out_w = panel_size(crop_h, crop_w)
    x_in_panel = min(x % (out_w + GAP_PX), out_w - 1)
    return top + (y + 0.5) * crop_h / out_h, left + (x_in_panel + 0.5) * crop_w / out_w



def zoomed(view: View, shape, zoom: int, point=None) -> View:
    """The view at `zoom` keeping `point` (row, col) where it is on screen (default: the current centre)."""
    zoom = int(np.clip(zoom, ZOOMS[0], ZOOMS[-1]))
    if zoom == 1:
        return replace(view, zoom=1, centre=None)
    top, left, crop_h, crop_w = crop_box(shape, view.zoom, view.centre)
    if point is None:
        return replace(view, zoom=zoom, centre=(top + crop_h / 2, left + crop_w / 2))
    row, col = point
    new_h, new_w = shape[0] / zoom, shape[1] / zoom
    centre = (row - (row - top) / crop_h * new_h + new_h / 2, col - (col - left) / crop_w * new_w + new_w / 2)
    return replace(view, zoom=zoom, centre=centre)



def panned(view: View, shape, d_row: float, d_col: float) -> View:
    """The view moved by (d_row, d_col) image pixels, kept inside the image."""
    if view.zoom == 1:
        return view
    top, left, crop_h, crop_w = crop_box(shape, view.zoom, view.centre)
    row = float(np.clip(top + crop_h / 2 + d_row, crop_h / 2, shape[0] - crop_h / 2))
    col = float(np.clip(left + crop_w / 2 + d_col, crop_w / 2, shape[1] - crop_w / 2))
    return replace(view, centre=(row, col))



def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 array as PNG (fast zlib level: these are shown once, not stored)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()



def placeholder_strip(message: str, n_panels: int = 3) -> np.ndarray:
    """A grey strip standing in for a pair that cannot be read (the reason is shown beside it)."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (n_panels * (MIN_PANEL_PX + GAP_PX) - GAP_PX, MIN_PANEL_PX), (200, 200, 200))
    ImageDraw.Draw(picture).text((10, 10), message[:120], fill=(120, 0, 0))
    return np.asarray(picture)



class LRU:
    """A small thread-safe least-recently-used mapping, bounded in items and in bytes (`sizeof(value)`)."""

    def __init__(self, items: int, max_bytes: int, sizeof):
        self.items, self.max_bytes, self.sizeof = items, max_bytes, sizeof
        self._values, self._bytes, self._lock = OrderedDict(), 0, threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return None

    def put(self, key, value):
        with self._lock:
            if key in self._values:
                self._bytes -= self.sizeof(self._values.pop(key))
            self._values[key] = value
            self._bytes += self.sizeof(value)
            while len(self._values) > 1 and (len(self._values) > self.items or self._bytes > self.max_bytes):
                self._bytes -= self.sizeof(self._values.popitem(last=False)[1])

    def __contains__(self, key):
        with self._lock:
            return key in self._values

    def __len__(self):
        with self._lock:
            return len(self._values)

    @property
    def nbytes(self) -> int:
        return self._bytes



class PairRenderer:
    """The PNG strip of any example for any view, read and drawn on demand: decoded pairs and rendered strips are
    kept in bounded caches (DECODED_CACHE, RENDERED_CACHE), and `prefetch` renders the examples the reviewer will
    probably see next in a background thread, so a step usually finds its picture ready.

    data: anything with `raw_pair(name)` -> (image, mask) (a DataLoader); issues: {name: label-issue entry},
    whose `picture` (an absolute path) becomes a panel; segmenter: a trained model (`Segmenter`) whose prediction
    becomes the last panel; with neither, three panels.
    """

    def __init__(self, data, issues: dict | None = None, segmenter=None):
        self.data, self.issues, self.segmenter = data, issues or {}, segmenter
        self.panels = 3 + bool(self.issues) + (segmenter is not None)
        self.decoded = LRU(*DECODED_CACHE, sizeof=lambda pair: sum(a.nbytes for a in pair if a is not None))
        self.rendered = LRU(*RENDERED_CACHE, sizeof=len)
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="review-prefetch")
        self._wanted: set = set()

    def pair(self, name: str):
        """(image RGB uint8, mask, label-issues picture or None, the model's prediction or None) of `name`, read
        (and predicted) once while it stays in the cache."""
        pair = self.decoded.get(name)
        if pair is None:
            image, mask = self.data.raw_pair(name)
            extra = self._issue_picture(name, mask.shape) if self.issues else None
            prediction = self.segmenter.predict(image) if self.segmenter is not None else None
            pair = (display_rgb(image), np.asarray(mask, np.uint8), extra, prediction)
            self.decoded.put(name, pair)
        return pair

    def _issue_picture(self, name: str, shape) -> np.ndarray:
        """The label-issues picture of `name` at the image's size (black when there is none)."""
        from PIL import Image

        picture = self.issues.get(name, {}).get("picture")
        if not picture or not Path(picture).is_file():
            return np.zeros((*shape[:2], 3), np.uint8)
        with Image.open(picture) as img:
            return np.asarray(img.convert("RGB").resize((shape[1], shape[0]), Image.NEAREST))

    def shape(self, name: str) -> tuple[int, int]:
        """(H, W) of example `name`."""
        return self.pair(name)[1].shape

    def png(self, name: str, view: View) -> bytes:
        """The PNG strip of `name` drawn with `view`, from the cache or rendered now; a pair that cannot be read
        gives a placeholder naming the reason, so the review can go on past it."""
        key = (name, view)
        png = self.rendered.get(key)
        if png is None:
            try:
                image, mask, extra, prediction = self.pair(name)
                png = png_bytes(render_strip(image, mask, view, extra, prediction))
            except DataError as err:
                png = png_bytes(placeholder_strip(f"cannot read {name}: {err}", self.panels))
            self.rendered.put(key, png)
        return png

    def prefetch(self, names, view: View):
        """Render `names` with `view` in the background thread; earlier requests not started yet are dropped."""
        self._wanted = {(name, view) for name in names}
        for name in names:
            if (name, view) not in self.rendered:
                self._prefetcher.submit(self._render_if_wanted, name, view)

    def _render_if_wanted(self, name, view):
        """Prefetch task: skipped when the reviewer has moved on since it was queued."""
        if (name, view) in self._wanted and (name, view) not in self.rendered:
            try:
                self.png(name, view)
            except Exception:  # noqa: BLE001, S110  shown when the reviewer gets there (rendered in the foreground)
                pass

    def wait(self):
        """Until the prefetches queued so far are done (tests, benchmarks)."""
        self._prefetcher.submit(lambda: None).result()
