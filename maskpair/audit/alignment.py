"""Alignment: how well a mask's label boundaries sit on its image's edges, against alternative placements (shifts,
flips, the transpose, other examples' masks), judged across the dataset (`decide_alignment`)."""
from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.reading import image_to_float

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


def edge_map(image: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1], float32 (H, W): the gradient magnitude at EDGE_SIGMA of the strongest channel,
    divided by its EDGE_QUANTILE (contrast-free) and capped at 1."""
    image = image_to_float(np.asarray(image))
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
    return label_boundaries(mask, IGNORE_INDEX).astype(np.float32)


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
