"""Findings about a segmentation dataset without a model: integrity, content, alignment, optional domain checks.

`audit_dataset(DATA_DIR)` returns a JSON-ready report; `current_report(PATH, DATA_DIR)` gives back a saved report
while the data and the audit's settings are unchanged; the CLI writes a report, a contact sheet and a summary.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np
from scipy import fft, ndimage

import loader
from description import DESCRIPTION_FILE, IGNORE_INDEX, read_declared

REPORT_FORMAT = 2   # part of the report's key: a report of another format is never reused

# Every flag starts with one of these code words, then (where shown) a colon and a detail.
FLAG_CODES = {
    "empty_mask": "the mask has no pixel of any class but the background (ignore pixels do not count)",
    "missing_class": "missing_class:<label> -- a non-empty mask without any pixel of <label>, a class that most of "
                     "this dataset's non-empty masks hold (MISSING_CLASS_SHARE of them) as a sizeable part of their "
                     "labels (MAJOR_CLASS_SHARE)",
    "duplicate_of": "duplicate_of:<name> -- the image or the mask is byte-identical to example <name>'s "
                    "(the entry's duplicate says which)",
    "order_gap": "only with the description's audit switch \"alternating\": [<a>, <b>]: "
                 "order_gap:<a>-<a>@<top|bottom> -- two <a> levels follow each other along the column with no "
                 "<b> level between them, in the top or bottom half of the column; "
                 "order_gap:unlabelled_<a>@<top|bottom> -- one step beyond that end of the labelled column the "
                 "image looks like an <a> level (one seems missing there)",
    "short_column": "only with the description's audit switch \"extent\": true: short_column:<top|bottom> -- the "
                    "labels end further from that edge of the image than in most of this dataset's masks (by "
                    "more than SHORT_COLUMN of the image height): the annotation may stop short",
    "misaligned": "misaligned:<alternative> -- another placement of a mask fits the image's edges clearly better "
                  "than the given one (after the dataset-wide offset, if any; see alignment.gain): shift(dy,dx) "
                  "(move the mask dy rows down, dx columns right), flip_lr, flip_ud, transpose, or "
                  "swapped_with:<name> (the mask stored with example <name>)",
}
DATASET_FINDING_CODES = {
    "dataset_offset": "the masks fit the images best when all are moved by the same shift [dy, dx]: a "
                      "dataset-wide offset (of the labelling tool or a conversion), judged once, not per pair",
}

# ---- alignment: how well a mask's label boundaries sit on the image's edges, against alternative placements
EDGE_SIGMA = 1.25       # px; gradient scale of the edge map
EDGE_QUANTILE = 0.9     # gradients above this quantile of the image's own count as full-strength edges
MAX_SHIFT = 10          # shifts measured: every (dy, dx) with |dy|, |dx| <= MAX_SHIFT
TOLERANCE = 1           # px around the dataset offset still counted as "as given" (hand-drawn outlines wander)
MIN_SHIFT = 3           # px from the dataset offset before a shift is an alternative placement
COARSE_SIDE = 64        # the screens of flips and swaps compare on grids about this many cells wide
SWAP_CANDIDATES = 2     # other masks per image scored in full after the swap screen, at most
SCREEN_MARGIN = 0.15    # see screen_bar
MIN_GAIN = 0.1          # least gain of an alternative before it is flagged, however quiet the dataset ...
ABOVE_MEDIAN = 0.25     # ... and at least this much above this dataset's median pair's best gain ...
EVIDENCE = 2.0          # ... and the alternative beats the given by this many standard errors (see fit_noise)
SAMPLE_PIXELS = 4       # boundary pixels per independent sample (both sides of a label change, ~2 px along it)
# ---- content
MISSING_CLASS_SHARE = 0.8  # of the non-empty masks that hold a class before its absence is flagged ...
MAJOR_CLASS_SHARE = 0.1    # ... and of their labelled pixels it typically covers
MIN_MASKS = 5           # non-empty masks needed before "most of this dataset's masks" means anything
# ---- domain checks, when the description's "audit" switches ask for them
MIN_LEVEL_AREA = 20     # px; smaller components are specks, not levels
LEVEL_LIKE = 0.5        # beyond the end, at least half-way from the between-levels intensity to a level's
SHORT_COLUMN = 0.15     # of the image height: how much further from an edge than the median mask's labels may end
# ---- scale
CAPTION_HEIGHT = 40     # px under each contact-sheet thumbnail: the name and two flags (the default font: ~6 px a
                        # character, so lines are cut to the thumbnail's width)
POOL_FROM = 64          # pairs from which audit_dataset measures them in worker processes
CHUNK = 16              # pairs per worker task


# ---------------------------------------------------------------- edges and boundaries


def gray(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1]: the mean of the channels of an (H, W) or (H, W, C) uint8/float image."""
    image = loader.image_to_float(np.asarray(image))
    return image.mean(axis=2) if image.ndim == 3 else image


def edge_map(image: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1], float32 (H, W): the gradient magnitude at EDGE_SIGMA of the strongest channel,
    divided by its EDGE_QUANTILE (contrast-free) and capped at 1."""
    image = loader.image_to_float(np.asarray(image))
    channels = image.reshape(*image.shape[:2], -1)
    strength = np.zeros(image.shape[:2], np.float32)
    for c in range(channels.shape[2]):  # colour edges: a red car on a green tree of the same brightness
        gradient = ndimage.gaussian_gradient_magnitude(channels[..., c], EDGE_SIGMA, truncate=3)  # 99.7% of it
        np.maximum(strength, gradient, out=strength)
    scale = np.quantile(strength[::3, ::3], EDGE_QUANTILE)  # every 9th pixel: the same quantile, 7x faster
    return np.minimum(strength / scale, 1, out=strength) if scale > 0 else strength


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1.0 on both sides of every place where the label changes (4-neighbourhood), else 0.0; changes to or from
    ignore pixels (IGNORE_INDEX) are not boundaries."""
    mask = np.asarray(mask)
    labelled = mask != IGNORE_INDEX
    edge = np.zeros(mask.shape, bool)
    rows = (mask[:-1] != mask[1:]) & labelled[:-1] & labelled[1:]
    cols = (mask[:, :-1] != mask[:, 1:]) & labelled[:, :-1] & labelled[:, 1:]
    edge[:-1] |= rows
    edge[1:] |= rows
    edge[:, :-1] |= cols
    edge[:, 1:] |= cols
    return edge.astype(np.float32)


def shift_surfaces(edges: np.ndarray, boundaries: np.ndarray, reach: int = MAX_SHIFT) -> np.ndarray:
    """The fit of each boundary (K, H, W) on the edges, the mean edge strength under its pixels, with the boundary
    moved by every (dy, dx) up to reach: (K, 2 reach+1, 2 reach+1), entry [k, reach+dy, reach+dx]. Pixels moved
    out of the frame do not count. One FFT correlation per boundary: all 441 shifts for the cost of a few."""
    height, width = edges.shape
    size = (fft.next_fast_len(height + reach, True), fft.next_fast_len(width + reach, True))  # no wrap-around
    hits = fft.irfft2(fft.rfft2(edges, size) * np.conj(fft.rfft2(boundaries, size)), size)
    steps = np.arange(-reach, reach + 1)
    hits = hits[:, steps[:, None] % size[0], steps % size[1]]
    return (hits / np.maximum(kept_counts(boundaries, steps), 1)).astype(np.float32)


def kept_counts(boundaries: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Boundary pixels of each map (K, H, W) still inside the frame after every shift (dy, dx), dy and dx in
    steps: (K, S, S). All pixels, less the rows and the columns pushed out, plus the corner counted twice; from
    the maps' row and column sums and their corners (a full integral image costs more than the FFTs)."""
    count, height, width = boundaries.shape
    total = boundaries.sum(axis=(1, 2), dtype=np.float64)
    rows = _pushed_out(boundaries.sum(axis=2, dtype=np.float64), steps)   # (K, S): by dy
    cols = _pushed_out(boundaries.sum(axis=1, dtype=np.float64), steps)   # (K, S): by dx
    corner = np.zeros((count, len(steps), len(steps)))
    for sy in (-1, 1):
        for sx in (-1, 1):
            dy, dx = steps[steps * sy > 0], steps[steps * sx > 0]
            block = boundaries[:, ::-sy, ::-sx][:, :min(abs(dy).max(), height), :min(abs(dx).max(), width)]
            sums = block.cumsum(1, dtype=np.float64).cumsum(2)  # rows and columns nearest the edge first
            found = sums[:, np.minimum(abs(dy), height)[:, None] - 1, np.minimum(abs(dx), width) - 1]
            corner[:, np.flatnonzero(steps * sy > 0)[:, None], np.flatnonzero(steps * sx > 0)] = found
    return total[:, None, None] - rows[:, :, None] - cols[:, None, :] + corner


def _pushed_out(profile: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Sum of the profile entries (K, N) pushed past either end by each step (positive: past the far end)."""
    size = profile.shape[1]
    before = np.concatenate([np.zeros((len(profile), 1)), profile.cumsum(axis=1)], axis=1)  # [:, n]: first n
    far = before[:, -1:] - before[:, np.maximum(size - np.maximum(steps, 0), 0)]
    near = before[:, np.minimum(np.maximum(-steps, 0), size)]
    return np.where(steps > 0, far, near)


def geometric_alternatives(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The flipped and transposed placements of a mask (transpose only for square masks)."""
    found = {"flip_lr": mask[:, ::-1], "flip_ud": mask[::-1]}
    if mask.shape[0] == mask.shape[1]:
        found["transpose"] = mask.T
    return found


def coarse(array: np.ndarray, factor: int) -> np.ndarray:
    """Block means over factor x factor blocks (the last partial blocks dropped), float16."""
    height, width = (side // factor * factor for side in array.shape)
    blocks = array[:height, :width].reshape(height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32).astype(np.float16)


def coarse_factor(shape) -> int:
    """Block size that makes the coarse grid about COARSE_SIDE cells along the longer side."""
    return max(1, round(max(shape) / COARSE_SIDE))


# ---------------------------------------------------------------- per-pair measures


def class_components(mask: np.ndarray, labels) -> dict[str, dict]:
    """Per non-background class: pixel count, connected-component count, the largest areas (up to 5)."""
    found = {}
    for value, label in enumerate(labels[1:], start=1):
        components, count = ndimage.label(mask == value)
        areas = np.bincount(components.ravel())[1:] if count else np.zeros(0, int)
        found[label] = {"pixels": int(areas.sum()), "components": int(count),
                        "areas": sorted(areas.tolist(), reverse=True)[:5]}
    return found


def digest(array: np.ndarray) -> str:
    """Content hash of an array (shape and dtype included)."""
    array = np.ascontiguousarray(array)
    return hashlib.sha1(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()


def fit_measures(edges: np.ndarray, mask: np.ndarray) -> dict | None:
    """What the alignment decision needs of one pair (None if the mask has no boundary): the shift surface of the
    given placement, the edge density, the spread and count of edge values under the boundary, and coarse edges
    and boundary for the screens of other placements."""
    boundary = boundary_map(mask)
    if not boundary.any():
        return None
    factor = coarse_factor(mask.shape)
    on_boundary = edges[boundary > 0]
    return {"surface": shift_surfaces(edges, boundary[None])[0], "base": float(edges.mean()),
            "edge_spread": float(on_boundary.std()), "boundary_pixels": int(on_boundary.size),
            "coarse_edges": coarse(edges, factor), "coarse_boundary": coarse(boundary, factor)}


def measure_pair(image, mask, labels, options: dict, edges=None) -> dict:
    """Everything the audit needs of one pair, compact (no full-size arrays kept)."""
    mask = np.asarray(mask)
    labelled = (mask != 0) & (mask != IGNORE_INDEX)
    measures = {"classes": class_components(mask, labels), "image_digest": digest(image),
                "mask_digest": digest(mask), "labelled": bool(labelled.any()),
                "foreground": int(np.count_nonzero(labelled)),
                "present": [int(v) for v in np.flatnonzero(np.bincount(mask.ravel(), minlength=256)[:IGNORE_INDEX])],
                "margins": edge_margins(mask),
                "fit": fit_measures(edge_map(image) if edges is None else edges, mask)}
    if options.get("alternating") and measures["labelled"]:
        measures["order"] = anatomical_order(image, mask, labels, tuple(options["alternating"]))
    return measures


# ---------------------------------------------------------------- alignment across the dataset


def window_max(surface: np.ndarray, centre, radius: int) -> float:
    """Largest entry of a shift surface within Chebyshev distance radius of shift centre (dy, dx)."""
    reach = (surface.shape[-1] - 1) // 2
    rows = slice(max(reach + centre[0] - radius, 0), reach + centre[0] + radius + 1)
    cols = slice(max(reach + centre[1] - radius, 0), reach + centre[1] + radius + 1)
    return float(surface[rows, cols].max())


def best_far_shift(surface: np.ndarray, offset) -> tuple[tuple[int, int], float]:
    """The best shift at least MIN_SHIFT from the offset (Chebyshev distance) and its score."""
    reach = (surface.shape[-1] - 1) // 2
    dy, dx = np.indices(surface.shape) - reach
    far = np.where(np.maximum(abs(dy - offset[0]), abs(dx - offset[1])) >= MIN_SHIFT, surface, -np.inf)
    row, col = np.unravel_index(np.argmax(far), far.shape)
    return (int(row - reach), int(col - reach)), float(far[row, col])


def best_shift(surface: np.ndarray) -> tuple[int, int]:
    """The shift (dy, dx) at which the given placement fits best."""
    reach = (surface.shape[-1] - 1) // 2
    row, col = np.unravel_index(np.argmax(surface), surface.shape)
    return int(row - reach), int(col - reach)


def dataset_offset(fits: list[dict]) -> tuple[tuple[int, int], int]:
    """The dataset-wide offset: the median of every pair's best shift (small ones included), and how many pairs
    fit best within TOLERANCE of it. Judging each pair against it keeps a labelling tool's 1-px habit from
    flagging every pair, and still finds the pair that is off by more than the rest."""
    if not fits:
        return (0, 0), 0
    shifts = np.array([best_shift(fit["surface"]) for fit in fits])
    offset = tuple(int(v) for v in np.round(np.median(shifts, axis=0)))
    near = int((np.abs(shifts - offset).max(axis=1) <= TOLERANCE).sum())
    return offset, near


def gain(alternative: float, given: float, base: float, typical: float) -> float:
    """How much better an alternative placement fits than the given one, as a share of the edge signal it
    carries (its fit above the edge density), and never of less than the dataset's typical signal: a pair whose
    labels barely follow its edges cannot produce a large gain from noise."""
    return (alternative - given) / max(alternative - base, typical, 1e-6)


def fit_noise(fit: dict) -> float:
    """The standard error of the difference of two placements' fit scores: the spread of the edge strength
    under the boundary, over the square root of its independent samples (boundary pixels / SAMPLE_PIXELS, twice:
    one mean for each placement). An alternative must beat the given placement by EVIDENCE of these: with a
    short boundary on an image that barely shows it (a faint lesion), the best of hundreds of placements beats
    the given one by chance."""
    return max(fit["edge_spread"] * np.sqrt(2 * SAMPLE_PIXELS / max(fit["boundary_pixels"], 1)), 1e-6)


# -- screens: which other placements to score in full (few), judged on coarse grids (cheap)


def coarse_arrays(fit: dict) -> tuple[np.ndarray, np.ndarray]:
    """(coarse edges, coarse boundary as weights summing to 1), float32."""
    boundary = fit["coarse_boundary"].astype(np.float32)
    return fit["coarse_edges"].astype(np.float32), boundary / max(float(boundary.sum()), 1e-6)


def coarse_typical(fits, rows) -> float:
    """The median coarse edge signal of the masks on their own images (coarse fit above the edge density)."""
    signal = [float((edges * weights).sum() - edges.mean()) for edges, weights in map(coarse_arrays, map(fits.__getitem__, rows))]
    return max(float(np.median(signal)), 1e-6)


def screen_bar(best_gains) -> float:
    """The coarse gain a placement must exceed to be scored in full: SCREEN_MARGIN above what the median pair's
    best alternative of its kind reaches, and never below -SCREEN_MARGIN (so at most a few pairs are scored in
    full, and a misplacement, whose alternative gains at least about as much as the given placement, is)."""
    return max(float(np.median(best_gains)) + SCREEN_MARGIN, -SCREEN_MARGIN) if len(best_gains) > 1 else -np.inf


def flip_screen(fits, rows, typical: float) -> dict[int, list[str]]:
    """For each pair, the geometric alternatives (`geometric_alternatives`) worth scoring in full: those whose
    coarse boundary, flipped or transposed, fits the coarse edges nearly as well as the given one, or better."""
    gains = {}
    for i in rows:
        edges, weights = coarse_arrays(fits[i])
        own = float((edges * weights).sum())
        scale = max(own - float(edges.mean()), typical)
        gains[i] = {name: (float((edges * alt).sum()) - own) / scale
                    for name, alt in geometric_alternatives(weights).items() if alt.shape == edges.shape}
    bar = screen_bar([max(found.values()) for found in gains.values()])
    return {i: [name for name, value in found.items() if value > bar] for i, found in gains.items()}


def swap_screen(fits, rows, typical: float, k: int = SWAP_CANDIDATES, chunk: int = 256) -> dict[int, list[int]]:
    """For each pair (index into fits), up to k other masks of the same shape whose exchange with its own mask
    fits both images' coarse edges nearly as well, or better: {i: [j, ...]}, the most promising first.

    Both images must gain: a true swap helps both, while a near-duplicate neighbour (the next video frame, the
    next slice of a stack) whose mask fits this image about as well, or better, loses as much on its own image.
    All pairs are compared in a few chunked matrix products of coarse grids (COARSE_SIDE), in memory
    proportional to chunk x pairs."""
    edges, weights = (np.stack([array.ravel() for array in arrays])
                      for arrays in zip(*(coarse_arrays(fits[i]) for i in rows)))
    own = np.einsum("ij,ij->i", edges, weights)  # each mask on its own image
    scale = np.maximum(own - edges.mean(axis=1), typical)
    best, score = np.zeros((len(rows), k), int), np.full((len(rows), k), -np.inf)
    for start in range(0, len(rows), chunk):
        block = slice(start, start + chunk)
        forward = (edges[block] @ weights.T - own[block, None]) / scale[block, None]   # mask j on image i
        backward = ((weights[block] @ edges.T).T - own[:, None]) / scale[:, None]      # mask i on image j
        both = np.minimum(forward, backward.T)
        both[np.arange(both.shape[0]), np.arange(start, start + both.shape[0])] = -np.inf
        top = np.argpartition(-both, min(k, both.shape[1] - 1), axis=1)[:, :k]
        best[block], score[block] = top, np.take_along_axis(both, top, axis=1)
    bar = screen_bar(score.max(axis=1))
    order = np.argsort(-score, axis=1)
    return {rows[i]: [rows[best[i, n]] for n in order[i] if score[i, n] > bar] for i in range(len(rows))}


# -- the decision


def window_fit(edges: np.ndarray, boundary: np.ndarray, centre, radius: int = TOLERANCE) -> float:
    """The best fit of the boundary moved by any shift within Chebyshev distance radius of centre (dy, dx):
    the mean edge strength under its pixels still inside the frame. Gathers at its pixels only, cheaper than
    `shift_surfaces` for a handful of shifts."""
    rows, cols = np.nonzero(boundary)
    best = 0.0
    for dy in range(centre[0] - radius, centre[0] + radius + 1):
        for dx in range(centre[1] - radius, centre[1] + radius + 1):
            y, x = rows + dy, cols + dx
            inside = (y >= 0) & (y < edges.shape[0]) & (x >= 0) & (x < edges.shape[1])
            if inside.any():
                best = max(best, float(edges[y[inside], x[inside]].mean()))
    return best


def full_scores(requests: dict, offset, edges_of, mask_of) -> dict:
    """{(i, alternative): fit on image i within TOLERANCE of the offset} for each requested alternative: a name
    of `geometric_alternatives` (of mask i) or the index j of another pair (its mask). Each image's edges are
    computed once, and the masks are read again only here (the pairs were measured without keeping them)."""
    found = {}
    for i, alternatives in requests.items():
        edges, placements = edges_of(i), geometric_alternatives(mask_of(i))
        for alternative in alternatives:
            mask = placements[alternative] if isinstance(alternative, str) else mask_of(alternative)
            found[i, alternative] = window_fit(edges, boundary_map(mask), offset)
    return found


def decide_alignment(names, fits, score_in_full) -> tuple[dict, dict]:
    """Per labelled pair its alignment entry (scores, best alternative, gain, evidence, misaligned) and a summary
    with the dataset findings. score_in_full(requests, offset) scores the few other placements the screens pass,
    as `full_scores` does."""
    scored = [i for i, fit in enumerate(fits) if fit is not None]
    offset, near = dataset_offset([fits[i] for i in scored])
    given = {i: window_max(fits[i]["surface"], offset, TOLERANCE) for i in scored}
    typical = float(np.median([given[i] - fits[i]["base"] for i in scored])) if scored else 0.0
    requests = {i: set() for i in scored}
    swaps = set()
    for shape in {fits[i]["coarse_edges"].shape for i in scored}:
        rows = [i for i in scored if fits[i]["coarse_edges"].shape == shape]
        coarse_signal = coarse_typical(fits, rows)
        for i, names_found in flip_screen(fits, rows, coarse_signal).items():
            requests[i].update(names_found)
        for i, others in swap_screen(fits, rows, coarse_signal).items():
            swaps.update(tuple(sorted((i, j))) for j in others)
    swapped = {i: set() for i in scored}
    for i, j in swaps:
        swapped[i].add(j)
        swapped[j].add(i)
        requests[i].add(j)
        requests[j].add(i)
    full = score_in_full({i: wanted for i, wanted in requests.items() if wanted}, offset)
    entries = {}
    for i in scored:
        shift, shift_score = best_far_shift(fits[i]["surface"], offset)
        alternatives = {f"shift({shift[0]},{shift[1]})": shift_score}
        alternatives.update({name: full[i, name] for name in sorted(requests[i] - swapped[i])})
        gains = {name: gain(score, given[i], fits[i]["base"], typical) for name, score in alternatives.items()}
        for j in sorted(swapped[i]):  # an exchange: the smaller of both images' gains
            alternatives[f"swapped_with:{names[j]}"] = full[i, j]
            gains[f"swapped_with:{names[j]}"] = min(gain(full[i, j], given[i], fits[i]["base"], typical),
                                                    gain(full[j, i], given[j], fits[j]["base"], typical))
        rival = max(gains, key=gains.get)
        entries[i] = {"score": round(given[i], 4), "best_alternative": rival,
                      "alternative_score": round(alternatives[rival], 4),
                      "margin": round(given[i] / alternatives[rival], 4) if alternatives[rival] > 0 else None,
                      "gain": round(gains[rival], 4),
                      "evidence": round((alternatives[rival] - given[i]) / fit_noise(fits[i]), 2),
                      "best_shift": list(best_shift(fits[i]["surface"]))}
    threshold = gain_threshold([entry["gain"] for entry in entries.values()])
    for entry in entries.values():
        entry["misaligned"] = entry["gain"] > threshold and entry["evidence"] >= EVIDENCE
    findings = []
    if offset != (0, 0) and near * 2 >= len(scored):
        findings.append({"code": "dataset_offset", "shift": list(offset), "pairs": near,
                         "detail": f"{near} of {len(scored)} labelled pairs fit best within {TOLERANCE} px of "
                                   f"moving every mask by {list(offset)} (rows down, columns right)"})
    return entries, {"offset": list(offset), "typical_signal": round(typical, 4),
                     "gain_threshold": round(threshold, 4), "scored_in_full": len(full), "findings": findings}


def gain_threshold(gains) -> float:
    """The gain above which a pair is flagged: MIN_GAIN, raised where this dataset's median pair already has an
    alternative that nearly ties (noisy but consistently noisy labels, repetitive scenes) to ABOVE_MEDIAN over
    that median. The median ignores up to half the pairs being misplaced; a spread estimate would not (a few
    misplacements among twenty pairs widen it), and the upper tail of untouched pairs' gains is short anyway:
    an alternative rarely beats a placement that is right."""
    return max(MIN_GAIN, float(np.median(gains)) + ABOVE_MEDIAN) if len(gains) else MIN_GAIN


# ---------------------------------------------------------------- content


def content_flags(measures: list[dict], labels) -> list[list[str]]:
    """empty_mask, or missing_class:<label> for each class this non-empty mask lacks that most non-empty masks
    hold (MISSING_CLASS_SHARE) as a sizeable part of their labels (MAJOR_CLASS_SHARE): a vertebra class absent
    from a spine mask is worth a look, a bicyclist absent from a street frame is not."""
    holding = [m for m in measures if m["labelled"]]
    common = []
    if len(holding) >= MIN_MASKS:
        for value, label in enumerate(labels[1:], start=1):
            shares = [m["classes"][label]["pixels"] / m["foreground"] for m in holding if value in m["present"]]
            if len(shares) >= MISSING_CLASS_SHARE * len(holding) and np.median(shares) >= MAJOR_CLASS_SHARE:
                common.append(value)
    return [["empty_mask"] if not m["labelled"] else
            [f"missing_class:{labels[value]}" for value in common if value not in m["present"]] for m in measures]


def duplicates(names, digests) -> dict[str, str]:
    """{name: first earlier name with the same digest}."""
    first, found = {}, {}
    for name, key in zip(names, digests):
        if key in first:
            found[name] = first[key]
        else:
            first[key] = name
    return found


# ---------------------------------------------------------------- domain checks: alternating levels, extent


def levels(mask: np.ndarray, labels, classes) -> list[dict]:
    """The components of the two alternating classes (specks dropped) as levels sorted from top to bottom, each
    with its centre, size and parts ((component map, index) pairs; `level_pixels` gives their pixels)."""
    found = []
    rows, cols = np.indices(mask.shape)
    for label in classes:
        components, _ = ndimage.label(mask == labels.index(label))
        flat = components.ravel()
        sizes = np.bincount(flat)
        row_sums, col_sums = np.bincount(flat, rows.ravel()), np.bincount(flat, cols.ravel())
        for index in np.flatnonzero(sizes[1:] >= MIN_LEVEL_AREA) + 1:
            found.append({"label": label, "row": row_sums[index] / sizes[index], "col": col_sums[index] / sizes[index],
                          "size": int(sizes[index]), "parts": [(components, index)]})
    return merge_side_by_side(sorted(found, key=lambda level: level["row"]))


def level_pixels(level: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a level's pixels."""
    rows, cols = zip(*(np.nonzero(components == index) for components, index in level["parts"]))
    return np.concatenate(rows), np.concatenate(cols)


def merge_side_by_side(found: list[dict]) -> list[dict]:
    """Join neighbouring same-class pieces that sit at one height (a level drawn in two parts is one level)."""
    if len(found) < 3:
        return found
    spacing = np.median(np.diff([level["row"] for level in found]))
    merged = [found[0]]
    for level in found[1:]:
        last = merged[-1]
        if level["label"] == last["label"] and level["row"] - last["row"] < 0.6 * spacing:
            size = last["size"] + level["size"]
            merged[-1] = {"label": level["label"], "size": size, "parts": last["parts"] + level["parts"],
                          **{axis: (last[axis] * last["size"] + level[axis] * level["size"]) / size
                             for axis in ("row", "col")}}
        else:
            merged.append(level)
    return merged


def order_gaps(column: list[dict]) -> list[str]:
    """order_gap flags for consecutive same-class levels, each placed in the top or bottom half."""
    flags = []
    for k in range(1, len(column)):
        if column[k]["label"] == column[k - 1]["label"]:
            end = "top" if k <= len(column) / 2 else "bottom"
            flags.append(f"order_gap:{column[k]['label']}-{column[k]['label']}@{end}")
    return flags


def beyond_end_likeness(image: np.ndarray, column: list[dict], label: str) -> dict[str, float | None]:
    """How much the image one level beyond each end of the column looks like a `label` level (0 = like the gap
    between two of them, 1 = like the outermost one).

    The outermost level's pixels are moved on by half and by one level-to-level step; None where that leaves
    the frame or the column has fewer than two `label` levels.
    """
    ones = [level for level in column if level["label"] == label]
    result = {"top": None, "bottom": None}
    if len(ones) < 2:
        return result
    for end, outer, inner in (("top", ones[0], ones[1]), ("bottom", ones[-1], ones[-2])):
        step = np.array([outer["row"] - inner["row"], outer["col"] - inner["col"]])
        pixels = level_pixels(outer)
        at_level, between, beyond = (_mean_moved(image, pixels, step * k) for k in (0, 0.5, 1))
        if beyond is not None and between is not None and abs(at_level - between) > 1e-3:
            result[end] = round((beyond - between) / (at_level - between), 3)
    return result


def _mean_moved(image, pixels, step):
    """Mean image value under `pixels` (rows, cols) moved by step; None if 10% of them leave the frame."""
    rows, cols = pixels[0] + round(step[0]), pixels[1] + round(step[1])
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    return float(image[rows[inside], cols[inside]].mean()) if inside.mean() >= 0.9 else None


def anatomical_order(image, mask, labels, alternating) -> tuple[list[str], dict]:
    """Flags and measures for the alternation of two classes' levels along the column (e.g. discs and
    vertebrae): same-class neighbours, and an unlabelled level of the first class beyond either end."""
    column = levels(mask, labels, alternating)
    both_present = {level["label"] for level in column} == set(alternating)
    flags = order_gaps(column) if both_present else []  # a class missing altogether is missing_class
    likeness = beyond_end_likeness(gray(image), column, alternating[0])
    flags += [f"order_gap:unlabelled_{alternating[0]}@{end}" for end, value in likeness.items()
              if value is not None and value >= LEVEL_LIKE]
    measures = {"sequence": "".join(level["label"][0].upper() for level in column),
                f"{alternating[0]}_likeness_beyond": likeness}
    return flags, measures


def labelled_rows(mask: np.ndarray) -> tuple[int, int] | None:
    """(first, last) row holding any class but the background (ignore pixels do not count); None if none does."""
    mask = np.asarray(mask)
    rows = np.flatnonzero(((mask != 0) & (mask != IGNORE_INDEX)).any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def edge_margins(mask: np.ndarray) -> tuple[float, float] | None:
    """(top, bottom): the unlabelled rows above the first and below the last labelled row, as shares of the
    mask's height; None for an empty mask."""
    span, height = labelled_rows(mask), mask.shape[0]
    return None if span is None else (span[0] / height, (height - 1 - span[1]) / height)


def short_column_flags(margins) -> list[list[str]]:
    """short_column flags per mask from its `edge_margins` (None: empty): labels that end further from the top or
    bottom of the image than the median non-empty mask's, by more than SHORT_COLUMN of the height. Where most
    masks label a structure up to the frame's edge, this finds the masks whose annotation stops short (what the
    image shows beyond stays unlabelled and is taught, and scored, as background). No flags with fewer than
    MIN_MASKS non-empty masks."""
    known = [margin for margin in margins if margin is not None]
    if len(known) < MIN_MASKS:
        return [[] for _ in margins]
    typical = np.median(known, axis=0)
    flags = []
    for margin in margins:
        excess = [] if margin is None else [own - usual for own, usual in zip(margin, typical)]
        flags.append([f"short_column:{end}" for end, extra in zip(("top", "bottom"), excess) if extra > SHORT_COLUMN])
    return flags


# ---------------------------------------------------------------- the audit


AUDIT_SWITCHES = {"alternating": "two class names whose levels alternate top to bottom (order_gap)",
                  "extent": "true: flag labels that end far short of where most masks' labels end (short_column)"}


def checked_options(options, labels) -> dict:
    """The description's audit switches, validated against AUDIT_SWITCHES and the class names (DataError)."""
    options = dict(options or {})
    problems = [f"{DESCRIPTION_FILE}: audit switch {key!r} is unknown (known: {', '.join(AUDIT_SWITCHES)})"
                for key in options if key not in AUDIT_SWITCHES]
    pair = options.get("alternating")
    if pair is not None and (not isinstance(pair, (list, tuple)) or len(pair) != 2
                             or not set(pair) <= set(labels[1:]) or pair[0] == pair[1]):
        problems.append(f"{DESCRIPTION_FILE}: audit.alternating must name two different classes other than the "
                        f"background ({', '.join(labels[1:])}), got {pair!r}")
    if not isinstance(options.get("extent", False), bool):
        problems.append(f"{DESCRIPTION_FILE}: audit.extent must be true or false, got {options['extent']!r}")
    if problems:
        raise loader.DataError(problems)
    return options


def settings(options: dict) -> dict:
    """Everything the findings depend on besides the data: thresholds and the description's audit switches."""
    return {"format": REPORT_FORMAT, "audit": dict(sorted(options.items())), "edge_sigma": EDGE_SIGMA,
            "edge_quantile": EDGE_QUANTILE, "max_shift": MAX_SHIFT, "min_shift": MIN_SHIFT,
            "tolerance": TOLERANCE, "coarse_side": COARSE_SIDE, "screen_margin": SCREEN_MARGIN,
            "swap_candidates": SWAP_CANDIDATES, "min_gain": MIN_GAIN, "above_median": ABOVE_MEDIAN,
            "evidence": EVIDENCE, "sample_pixels": SAMPLE_PIXELS,
            "missing_class_share": MISSING_CLASS_SHARE,
            "major_class_share": MAJOR_CLASS_SHARE, "short_column": SHORT_COLUMN}


def _progress_callback(progress, total):
    """A callable(n_done) from progress: None (auto: a bar from 200 examples), bool, or callable(done, total)."""
    if callable(progress):
        return lambda done: progress(done, total)
    if progress is None:
        progress = total >= 200
    if not progress:
        return lambda done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="auditing", unit="pair")
    return lambda done: (bar.update(done - bar.n), bar.close() if done == total else None)


def build_report(names, measures, labels, options, score_in_full) -> dict:
    """The report from every pair's measures (see `measure_pair`); score_in_full: see `decide_alignment`."""
    labels = tuple(labels)
    content = content_flags(measures, labels)
    same_image = duplicates(names, [m["image_digest"] for m in measures])
    same_mask = duplicates(names, [m["mask_digest"] for m in measures])
    short = short_column_flags([m["margins"] for m in measures]) if options.get("extent") else [[]] * len(names)
    alignment, summary = decide_alignment(names, [m["fit"] for m in measures], score_in_full)
    examples = []
    for i, (name, m) in enumerate(zip(names, measures)):
        dup = {kind: found[name] for kind, found in (("image", same_image), ("mask", same_mask)) if name in found}
        entry = {"name": name, "flags": content[i] + sorted({f"duplicate_of:{other}" for other in dup.values()}),
                 "classes": m["classes"], "duplicate": dup}
        if "order" in m:
            entry["flags"] += m["order"][0]
            entry["order"] = m["order"][1]
        if options.get("extent") and m["margins"] is not None:
            entry["edge_margins"] = [round(float(share), 3) for share in m["margins"]]  # (top, bottom) unlabelled
        entry["flags"] += short[i]
        if i in alignment:
            entry["alignment"] = alignment[i]
            if alignment[i]["misaligned"]:
                entry["flags"].append(f"misaligned:{alignment[i]['best_alternative']}")
        examples.append(entry)
    return {"labels": list(labels), "flag_codes": FLAG_CODES, "finding_codes": DATASET_FINDING_CODES,
            "settings": settings(options),
            "alignment": {key: value for key, value in summary.items() if key != "findings"},
            "dataset_findings": summary["findings"], "examples": examples, "counts": flag_counts(examples)}


def audit_arrays(names, images, masks, labels, options: dict | None = None, progress=None, edges=None) -> dict:
    """Audit in-memory pairs: images (H, W) or (H, W, C) uint8/float in [0, 1], masks (H, W) class indices with
    IGNORE_INDEX for ignore pixels; labels: class names by index; options: the description's "audit" switches.

    edges: the `edge_map` of each image, when the caller already has them (they depend on images only).
    """
    options = checked_options(options, tuple(labels))
    tick = _progress_callback(progress, len(names))
    measures = []
    for i in range(len(names)):
        measures.append(measure_pair(images[i], masks[i], labels, options, None if edges is None else edges[i]))
        tick(i + 1)
    edges_of = (lambda i: edge_map(images[i])) if edges is None else edges.__getitem__
    return build_report(names, measures, labels, options,
                        lambda requests, offset: full_scores(requests, offset, edges_of, masks.__getitem__))


def flag_counts(examples) -> dict[str, int]:
    """How many examples carry each flag code."""
    counts = {code: 0 for code in FLAG_CODES}
    for entry in examples:
        for code in {flag.split(":")[0] for flag in entry["flags"]}:
            counts[code] += 1
    return counts


# ---------------------------------------------------------------- reading a dataset


def open_dataset(data_dir):
    """A streaming loader over data_dir: the description and the pairs, every header checked, no pixel kept."""
    return loader.DataLoader(data_dir, batch_size=1, cache=False, progress=False)


def data_key(data_dir, pairs: dict, options: dict) -> str:
    """Digest of the data files (names, sizes, modification times), dataset.json and the audit's settings."""
    parts = [json.dumps(settings(options), sort_keys=True)]
    description_file = Path(data_dir) / DESCRIPTION_FILE
    if description_file.is_file():
        parts.append(description_file.read_text())
    for name, paths in pairs.items():
        for path in paths:
            stat = Path(path).stat()
            parts.append(f"{name}\t{Path(path).name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _measure_or_problems(pair_paths, description, options):
    """measure_pair of one pair read from its files, or the DataError's problem lines."""
    try:
        image, mask = loader.read_pair(*pair_paths, description)
    except loader.DataError as err:
        return err.problems
    return measure_pair(image, mask, description.classes, options)


def _measure_chunk(chunk, description, options):
    """_measure_or_problems of each pair in a chunk (one worker task)."""
    return [_measure_or_problems(paths, description, options) for paths in chunk]


def worker_context():
    """How worker processes start: forked (instantly, and without running the caller's script again, which a
    script without an `if __name__ == "__main__"` guard would not survive) unless other threads run here (a
    notebook kernel, the review UI's background audit): a fork copies no thread but may copy a lock one of them
    holds, so then from a fork server that has imported this module once."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["audit"])
    return context


def worker_pool(n_pairs: int):
    """A process pool, one worker per core (at most 8), from POOL_FROM pairs; below that (or on one core) a
    context holding None: the pairs are measured in this process."""
    workers = min(len(os.sched_getaffinity(0)), 8)
    if n_pairs < POOL_FROM or workers < 2:
        return contextlib.nullcontext()
    return ProcessPoolExecutor(workers, mp_context=worker_context())


def measure_dataset(data, options, tick, pool) -> list[dict]:
    """measure_pair of every pair, in CHUNK-pair tasks of the pool (or here, with pool None); DataError lists
    every pair that cannot be read."""
    paths = [data.pairs[name] for name in data.names]
    if pool is None:
        parts = ([_measure_or_problems(pair_paths, data.description, options)] for pair_paths in paths)
    else:
        chunks = [paths[k:k + CHUNK] for k in range(0, len(paths), CHUNK)]
        parts = pool.map(_measure_chunk, chunks, repeat(data.description), repeat(options))
    measures = []
    for part in parts:
        measures += part
        tick(len(measures))
    problems = [line for found in measures if isinstance(found, list) for line in found]
    if problems:
        raise loader.DataError(problems)
    return measures


def _full_scores_from_files(requests, paths, description, offset):
    """full_scores of the requests, each pair read from its files at most once (one worker task)."""
    pair = lru_cache(maxsize=None)(lambda i: loader.read_pair(*paths[i], description))
    return full_scores(requests, offset, lambda i: edge_map(pair(i)[0]), lambda i: pair(i)[1])


def full_scorer(data, pool):
    """score_in_full(requests, offset) for a dataset's pairs (see full_scores), in tasks of CHUNK images."""

    def score_in_full(requests: dict, offset) -> dict:
        items = sorted(requests.items())
        groups = [dict(items[k:k + CHUNK]) for k in range(0, len(items), CHUNK)]
        paths = [{k: data.pairs[data.names[k]]
                  for k in set(group) | {j for wanted in group.values() for j in wanted if not isinstance(j, str)}}
                 for group in groups]
        found = {}
        for part in (map if pool is None else pool.map)(_full_scores_from_files, groups, paths,
                                                         repeat(data.description), repeat(offset)):
            found.update(part)
        return found

    return score_in_full


def audit_dataset(data_dir, progress=None, options: dict | None = None) -> dict:
    """Audit every pair under data_dir; returns {"examples": [{"name", "flags", measures...}], ...}.

    options: the domain checks to run (the description's "audit" switches unless given, {} for none).
    progress: None (a bar from 200 pairs), True/False, or a callable(done, total), called as pairs are measured.
    Raises loader.DataError listing every pair that cannot be read.
    """
    data = open_dataset(data_dir)
    options = checked_options(data.description.audit if options is None else options, data.labels)
    with worker_pool(len(data.names)) as pool:
        measures = measure_dataset(data, options, _progress_callback(progress, len(data.names)), pool)
        report = build_report(list(data.names), measures, data.labels, options, full_scorer(data, pool))
    report["data_dir"] = str(data_dir)
    report["key"] = data_key(data_dir, data.pairs, options)
    return report


def current_report(path, data_dir, options: dict | None = None) -> dict | None:
    """The report saved at path if it was made from the data now under data_dir with today's settings (and the
    same options as `audit_dataset`'s), else None: the review UI reuses it instead of auditing again. Lists and
    stats the files, reads none of them."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    options = read_declared(data_dir)["audit"] if options is None else options
    key = data_key(data_dir, loader.pair_files(data_dir), dict(options))
    return report if isinstance(report, dict) and report.get("key") == key else None


def flagged(report, code: str | None = None) -> list[str]:
    """Names of the examples with any flag (or with a flag of the given code)."""
    return [entry["name"] for entry in report["examples"]
            if any(code is None or flag.split(":")[0] == code for flag in entry["flags"])]


def write_report(report, path) -> Path:
    """Write the report as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def format_summary(report) -> str:
    """A readable summary: dataset findings, counts per flag code, then one line per flagged example."""
    examples = report["examples"]
    lines = [f"{report.get('data_dir', 'dataset')}: {len(examples)} pairs, {len(flagged(report))} with flags"]
    lines += [f"  dataset: {finding['code']} {finding.get('shift', '')} -- {finding['detail']}"
              for finding in report["dataset_findings"]]
    lines += [f"  {code:<14}{count:>4}" for code, count in report["counts"].items()]
    lines += [f"  {entry['name']:>8}: {', '.join(entry['flags'])}" for entry in examples if entry["flags"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- contact sheet


def sheet_order(report, max_examples: int) -> list[str]:
    """The names a contact sheet shows: every flagged pair first, then the others, in report order."""
    entries = report["examples"]
    return [e["name"] for e in entries if e["flags"]][:max_examples] + \
        [e["name"] for e in entries if not e["flags"]][:max(0, max_examples - len(flagged(report)))]


def contact_sheet(report, data_dir, path, columns: int = 6, max_examples: int = 60, thumb: int = 160) -> Path:
    """Save a PNG grid of up to max_examples pairs (`sheet_order`), each with its labels' boundaries drawn in the
    class colours (as every figure of the project) and its first flags as caption. Reads only the pairs shown."""
    from PIL import Image, ImageDraw

    import figures

    data = open_dataset(data_dir)
    entries = {entry["name"]: entry for entry in report["examples"]}
    shown = sheet_order(report, max_examples)
    colours = np.round(np.array([figures.class_colour(k) for k in range(256)]) * 255).astype(np.uint8)
    sheet = Image.new("RGB", (columns * thumb, -(-len(shown) // columns) * (thumb + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(shown):
        image, mask = data.raw_pair(name)
        rgb = np.round(figures.as_rgb(loader.image_to_float(image)) * 255).astype(np.uint8)
        outline = boundary_map(mask) > 0
        rgb[outline] = colours[mask[outline]]
        tile = Image.fromarray(rgb)
        tile.thumbnail((thumb, thumb))
        x, y = (k % columns) * thumb, (k // columns) * (thumb + CAPTION_HEIGHT)
        sheet.paste(tile, (x, y))
        flags = entries[name]["flags"]
        lines = [name] + flags[:2] + (["..."] if len(flags) > 2 else [])
        caption = "\n".join(line if len(line) <= thumb // 6 else line[:thumb // 6 - 1] + "~" for line in lines)
        draw.multiline_text((x + 2, y + thumb + 1), caption, fill=(200, 0, 40) if flags else (0, 0, 0), spacing=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audit.py", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--json", dest="json_path", help="write the report here (default: DATA_DIR/../audit.json)")
    parser.add_argument("--sheet", help="contact-sheet PNG (default: next to the JSON report, .png)")
    args = parser.parse_args(argv)
    json_path = Path(args.json_path or Path(args.data_dir).resolve().parent / "audit.json")
    try:
        report = audit_dataset(args.data_dir)
        write_report(report, json_path)
        sheet = contact_sheet(report, args.data_dir, args.sheet or json_path.with_suffix(".png"))
    except loader.DataError as err:
        print(err, file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    print(format_summary(report))
    print(f"report: {json_path}\ncontact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
