"""Alignment: how well a mask's label boundaries run along its image's edges, against alternative placements
(shifts, flips, the transpose, other examples' masks), judged across the dataset (`decide_alignment`).

A placement's fit is the mean, over the boundary's pixels, of the image's edge strength there times cos^2 of
the angle between the image's gradient and the boundary's normal: an edge counts where it runs along the
outline, not where a hair, a vessel or a fold merely crosses it (`oriented_edges`, `boundary_normals`)."""
from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.reading import image_to_float

ANALYSIS_SIDE = 1024    # px; larger pairs are judged reduced by a whole factor to at most this on the long side
EDGE_SIGMA = 1.25       # px; gradient scale of the edge map
EDGE_QUANTILE = 0.9     # gradients above this quantile of the image's own count as full-strength edges
NORMAL_SIGMA = 1.0      # px; smoothing of the label map whose gradient gives the boundary's normal
MAX_SHIFT = 10          # shifts measured: every (dy, dx) with |dy|, |dx| <= MAX_SHIFT
TOLERANCE = 1           # px around the dataset offset still counted as "as given" (hand-drawn outlines wander)
MIN_SHIFT = 3           # px from the dataset offset before a shift is an alternative placement
COARSE_SIDE = 64        # the screens of flips and swaps compare on grids about this many cells wide
SWAP_CANDIDATES = 2     # other masks per image scored in full after the swap screen, at most
SCREEN_MARGIN = 0.15    # see screen_bar
MIN_GAIN = 0.1          # least gain of an alternative before it is flagged, however quiet the dataset ...
ABOVE_MEDIAN = 0.25     # ... and at least this much above this dataset's median pair's best gain ...
EVIDENCE = 2.0          # ... and the alternative beats the given by this many standard errors (see fit_noise) ...
EVIDENCE_ABOVE_MEDIAN = 4.0  # ... and by this many more than the median pair's best alternative does (thresholds)
NOISE_CELL = 8          # px; boundary pixels in one cell of this size count as one sample (see fit_noise)


def reduced(image: np.ndarray | None, mask: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, int]:
    """(image, mask, factor): a pair whose longer side exceeds ANALYSIS_SIDE reduced by the smallest whole factor
    that brings it within (image: mean of each factor x factor block; mask: the label at each block's centre),
    else as given with factor 1; image None: the mask alone. A lesion's soft border spans tens of pixels in a
    2592x1936 photograph: its gradient at EDGE_SIGMA is lost in skin texture at full size and plain at a third
    of it; and a shift of a few full-size pixels is not a misplacement anyone trains differently for."""
    factor = math.ceil(max(mask.shape) / ANALYSIS_SIDE)
    if factor <= 1:
        return image, mask, 1
    height, width = (side // factor * factor for side in mask.shape)
    mask = np.asarray(mask)[factor // 2:height:factor, factor // 2:width:factor]
    if image is None:
        return None, mask, factor
    blocks = image_to_float(np.asarray(image))[:height, :width]
    blocks = blocks.reshape(height // factor, factor, width // factor, factor, *blocks.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32), mask, factor



def oriented_edges(image: np.ndarray) -> np.ndarray:
    """The image's edges by orientation, float32 (3, H, W): E u_y^2, E u_x u_y, E u_x^2, where E is the gradient
    magnitude at EDGE_SIGMA (all colour channels, from their summed structure tensor: a red car on a green tree
    of the same brightness has an edge), divided by its EDGE_QUANTILE (contrast-free) and capped at 1, and u the
    unit vector of the gradient's dominant direction. E cos^2 of the angle to a normal n is then
    n_y^2 [0] + 2 n_x n_y [1] + n_x^2 [2]; [0] + [2] is E."""
    image = image_to_float(np.asarray(image))
    channels = image.reshape(*image.shape[:2], -1)
    tensor = np.zeros((3, *image.shape[:2]), np.float32)  # summed gy^2, gx gy, gx^2
    for c in range(channels.shape[2]):
        gy = ndimage.gaussian_filter(channels[..., c], EDGE_SIGMA, order=(1, 0), truncate=3)  # 99.7% of it
        gx = ndimage.gaussian_filter(channels[..., c], EDGE_SIGMA, order=(0, 1), truncate=3)
        tensor[0] += gy * gy
        tensor[1] += gx * gy
        tensor[2] += gx * gx
    strength = np.sqrt(tensor[0] + tensor[2])
    scale = np.quantile(strength[::3, ::3], EDGE_QUANTILE)  # every 9th pixel: the same quantile, for less work
    edge = np.minimum(strength / scale, 1) if scale > 0 else strength
    # the dominant direction's cos^2, sin cos, sin^2 from the tensor (Di Zenzo): (1 +- cos 2t) / 2, sin 2t / 2
    spread = np.maximum(np.hypot(tensor[2] - tensor[0], 2 * tensor[1]), 1e-12)
    cos2, sin2 = (tensor[2] - tensor[0]) / spread, 2 * tensor[1] / spread
    return np.stack([edge * (1 - cos2) / 2, edge * sin2 / 2, edge * (1 + cos2) / 2]).astype(np.float32)



def edge_strength(edges: np.ndarray) -> np.ndarray:
    """E (H, W) of an `oriented_edges` tensor."""
    return edges[0] + edges[2]



def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1.0 on both sides of every place where the label changes (4-neighbourhood), else 0.0; changes to or from
    ignore pixels (IGNORE_INDEX) are not boundaries."""
    return label_boundaries(mask, IGNORE_INDEX).astype(np.float32)



def boundary_normals(mask: np.ndarray) -> np.ndarray:
    """The boundary's normals as weights, float32 (3, H, W): n_y^2, 2 n_x n_y, n_x^2 on `boundary_map`'s pixels
    (summing to 1 there), 0 elsewhere. The normal is the direction in which the label map, smoothed by
    NORMAL_SIGMA with ignore pixels left out, changes fastest: across the outline wherever two classes meet
    (their values' order does not matter; only at the few pixels where three meet is it a compromise)."""
    mask = np.asarray(mask)
    boundary = boundary_map(mask) > 0
    labels = mask.astype(np.float32)
    labelled = mask != IGNORE_INDEX
    if labelled.all():
        smooth = ndimage.gaussian_filter(labels, NORMAL_SIGMA, truncate=3)
    else:  # normalised convolution: the ignore pixels' value 255 must not pull the normals towards them
        weight = ndimage.gaussian_filter(labelled.astype(np.float32), NORMAL_SIGMA, truncate=3)
        smooth = ndimage.gaussian_filter(np.where(labelled, labels, 0), NORMAL_SIGMA, truncate=3) / np.maximum(weight, 1e-6)
    gy, gx = np.gradient(smooth)
    length = np.hypot(gy, gx)
    boundary &= length > 0
    ny, nx = (np.where(boundary, g / np.maximum(length, 1e-12), 0).astype(np.float32) for g in (gy, gx))
    return np.stack([ny * ny, 2 * nx * ny, nx * nx])



def shift_surfaces(edges: np.ndarray, normals: np.ndarray, reach: int = MAX_SHIFT) -> np.ndarray:
    """The fit of each boundary on the edges, the mean of E cos^2 under its pixels (see `oriented_edges`), with
    the boundary moved by every (dy, dx) up to reach: normals (K, 3, H, W) of K boundaries give
    (K, 2 reach+1, 2 reach+1), entry [k, reach+dy, reach+dx]. Pixels moved out of the frame do not count. One
    FFT correlation per component: all 441 shifts for the cost of a few."""
    height, width = edges.shape[1:]
    size = (fft.next_fast_len(height + reach, True), fft.next_fast_len(width + reach, True))  # no wrap-around
    spectra = fft.rfft2(edges, size)
    hits = fft.irfft2((spectra * np.conj(fft.rfft2(normals, size))).sum(axis=1), size)
    steps = np.arange(-reach, reach + 1)
    hits = hits[:, steps[:, None] % size[0], steps % size[1]]
    counts = kept_counts(normals[:, 0] + normals[:, 2], steps)
    return (hits / np.maximum(counts, 1)).astype(np.float32)



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



def placement_values(edges: np.ndarray, normals: np.ndarray, pixels, shift) -> np.ndarray:
    """The fit at each boundary pixel (rows, cols) moved by shift (dy, dx), E cos^2; NaN where moved out of the
    frame."""
    rows, cols = pixels
    y, x = rows + shift[0], cols + shift[1]
    inside = (y >= 0) & (y < edges.shape[1]) & (x >= 0) & (x < edges.shape[2])
    values = np.full(rows.shape, np.nan, np.float32)
    values[inside] = np.einsum("kn,kn->n", edges[:, y[inside], x[inside]], normals[:, rows[inside], cols[inside]])
    return values



def fit_noise(edges: np.ndarray, normals: np.ndarray, surface: np.ndarray) -> float:
    """The standard error of the difference between two placements' fits: of the given placement against its
    best alternative shift (at least MIN_SHIFT away), pixel by pixel, with the boundary pixels in one NOISE_CELL
    x NOISE_CELL cell taken as one sample (a cluster-robust standard error: neighbouring pixels see the same
    texture, hair or fold, so they are not independent evidence). An alternative must beat the given placement
    by EVIDENCE of these: with a short boundary on an image that barely shows it (a faint lesion), the best of
    hundreds of placements beats the given one by chance."""
    pixels = np.nonzero(normals[0] + normals[2])
    shift, _ = best_far_shift(surface, (0, 0))
    diff = placement_values(edges, normals, pixels, shift) - placement_values(edges, normals, pixels, (0, 0))
    inside = np.isfinite(diff)
    cells = (pixels[0][inside] // NOISE_CELL) * (normals.shape[2] // NOISE_CELL + 1) + pixels[1][inside] // NOISE_CELL
    _, cell = np.unique(cells, return_inverse=True)
    count, total = np.bincount(cell), np.bincount(cell, diff[inside])
    if len(count) < 2:
        return np.inf
    mean = total.sum() / count.sum()
    variance = len(count) / (len(count) - 1) * float(((total - mean * count) ** 2).sum()) / float(count.sum()) ** 2
    return max(math.sqrt(variance), 1e-6)



def fit_measures(edges: np.ndarray, mask: np.ndarray, factor: int = 1) -> dict | None:
    """What the alignment decision needs of one pair (None if the mask has no boundary): the shift surface of the
    given placement, the fit a random placement of its boundary would get (base), the noise of a difference
    between two placements (`fit_noise`), coarse edges and boundary for the screens of other placements, and
    the factor the pair was reduced by (`reduced`). edges: `oriented_edges` of the (reduced) image."""
    normals = boundary_normals(mask)
    if not normals[0].any() and not normals[2].any():
        return None
    boundary = normals[0] + normals[2]
    surface = shift_surfaces(edges, normals[None])[0]
    # base: the expected fit of this boundary anywhere in the image, its orientation mix on the mean edges
    base = float(np.einsum("k,k->", edges.mean(axis=(1, 2)), normals.sum(axis=(1, 2))) / boundary.sum())
    coarse_by = coarse_factor(mask.shape)
    return {"surface": surface, "base": base, "noise": fit_noise(edges, normals, surface), "factor": factor,
            "coarse_edges": coarse(edge_strength(edges), coarse_by), "coarse_boundary": coarse(boundary, coarse_by)}



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
    """The dataset-wide offset in the images' own pixels: the median of every pair's best shift (small ones
    included, reduced pairs' scaled up), and how many pairs fit best within TOLERANCE of it. Judging each pair
    against it keeps a labelling tool's 1-px habit from flagging every pair, and still finds the pair that is
    off by more than the rest."""
    if not fits:
        return (0, 0), 0
    shifts = np.array([best_shift(fit["surface"]) for fit in fits])
    factors = np.array([fit.get("factor", 1) for fit in fits])[:, None]
    offset = tuple(int(v) for v in np.round(np.median(shifts * factors, axis=0)))
    near = int((np.abs(shifts - own_offset(offset, factors)).max(axis=1) <= TOLERANCE).sum())
    return offset, near



def own_offset(offset, factor):
    """The dataset offset (the images' own pixels) in the pixels of a pair reduced by factor."""
    return np.round(np.asarray(offset) / factor).astype(int)



def gain(alternative: float, given: float, base: float, typical: float) -> float:
    """How much better an alternative placement fits than the given one, as a share of the edge signal it
    carries (its fit above the base), and never of less than the dataset's typical signal: a pair whose labels
    barely follow its edges cannot produce a large gain from noise."""
    return (alternative - given) / max(alternative - base, typical, 1e-6)



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
    best alternative of its kind reaches (so only a few pairs are scored in full, and a misplacement, whose
    alternative gains at least about as much as the given placement, is), within +-SCREEN_MARGIN: a placement
    that gains SCREEN_MARGIN on the coarse grids is always worth a full look, however many pairs have one (the
    misplaced pairs raise the median themselves: with 4 of 17 pairs swapped and 4 more misplaced it rose above
    the swaps of partial masks)."""
    if len(best_gains) < 2:
        return -np.inf
    return min(max(float(np.median(best_gains)) + SCREEN_MARGIN, -SCREEN_MARGIN), SCREEN_MARGIN)



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
    fits the two images' coarse edges nearly as well, or better: {i: [j, ...]}, the most promising first.

    The screen ranks an exchange by the mean of both images' coarse gains: a true swap helps both (where one of
    the masks is partial, on these coarse grids one a lot and the other little, while the full fit shows both),
    while a near-duplicate neighbour (the next video frame, the next slice of a stack) whose mask fits this
    image about as well, or better, loses as much on its own image. In full, both images must gain.
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
        both = (forward + backward.T) / 2
        both[np.arange(both.shape[0]), np.arange(start, start + both.shape[0])] = -np.inf
        top = np.argpartition(-both, min(k, both.shape[1] - 1), axis=1)[:, :k]
        best[block], score[block] = top, np.take_along_axis(both, top, axis=1)
    bar = screen_bar(score.max(axis=1))
    order = np.argsort(-score, axis=1)
    return {rows[i]: [rows[best[i, n]] for n in order[i] if score[i, n] > bar] for i in range(len(rows))}



def window_fit(edges: np.ndarray, normals: np.ndarray, centre, radius: int = TOLERANCE) -> float:
    """The best fit of a boundary (its `boundary_normals`) moved by any shift within Chebyshev distance radius of
    centre (dy, dx): the mean of E cos^2 under its pixels still inside the frame. Gathers at its pixels only,
    cheaper than `shift_surfaces` for a handful of shifts."""
    pixels = np.nonzero(normals[0] + normals[2])
    best = 0.0
    for dy in range(centre[0] - radius, centre[0] + radius + 1):
        for dx in range(centre[1] - radius, centre[1] + radius + 1):
            values = placement_values(edges, normals, pixels, (dy, dx))
            if np.isfinite(values).any():
                best = max(best, float(np.nanmean(values)))
    return best



def full_scores(requests: dict, centres: dict, edges_of, mask_of) -> dict:
    """{(i, alternative): fit on image i within TOLERANCE of centres[i] (the dataset offset in pair i's pixels)}
    for each requested alternative: a name of `geometric_alternatives` (of mask i) or the index j of another
    pair (its mask). edges_of(i) and mask_of(i) give the `oriented_edges` of image i and its mask, as `reduced`
    (masks of one shape by the same factor). Each image's edges are computed once, and the masks are read
    again only here (the pairs were measured without keeping them)."""
    found = {}
    for i, alternatives in requests.items():
        edges, placements = edges_of(i), geometric_alternatives(mask_of(i))
        for alternative in alternatives:
            mask = placements[alternative] if isinstance(alternative, str) else mask_of(alternative)
            found[i, alternative] = window_fit(edges, boundary_normals(mask), tuple(centres[i]))
    return found

def decide_alignment(names, fits, score_in_full) -> tuple[dict, dict]:
    """Per labelled pair its alignment entry (scores, best alternative, gain, evidence, misaligned) and a summary
    with the dataset findings. score_in_full(requests, centres) scores the few other placements the screens
    pass, as `full_scores` does. Shifts are reported in the images' own pixels."""
    scored = [i for i, fit in enumerate(fits) if fit is not None]
    offset, near = dataset_offset([fits[i] for i in scored])
    centres = {i: tuple(int(v) for v in own_offset(offset, fits[i]["factor"])) for i in scored}
    given = {i: window_max(fits[i]["surface"], centres[i], TOLERANCE) for i in scored}
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
    full = score_in_full({i: wanted for i, wanted in requests.items() if wanted}, centres)

    def gain_of(i, score):
        return gain(score, given[i], fits[i]["base"], typical)

    def evidence_of(i, score):
        return (score - given[i]) / fits[i]["noise"]

    entries = {}
    for i in scored:
        factor = fits[i]["factor"]
        shift, shift_score = best_far_shift(fits[i]["surface"], centres[i])
        alternatives = {f"shift({shift[0] * factor},{shift[1] * factor})": shift_score}
        alternatives.update({name: full[i, name] for name in sorted(requests[i] - swapped[i])})
        gains = {name: gain_of(i, score) for name, score in alternatives.items()}
        evidence = {name: evidence_of(i, score) for name, score in alternatives.items()}
        for j in sorted(swapped[i]):  # an exchange: both images must gain, and both images' evidence counts
            name = f"swapped_with:{names[j]}"
            alternatives[name] = full[i, j]
            gains[name] = min(gain_of(i, full[i, j]), gain_of(j, full[j, i]))
            evidence[name] = (evidence_of(i, full[i, j]) + evidence_of(j, full[j, i])) / math.sqrt(2)  # Stouffer
        rival = max(gains, key=gains.get)
        entries[i] = {"score": round(given[i], 4), "best_alternative": rival,
                      "alternative_score": round(alternatives[rival], 4),
                      "margin": round(given[i] / alternatives[rival], 4) if alternatives[rival] > 0 else None,
                      "gain": round(gains[rival], 4), "evidence": round(float(evidence[rival]), 2),
                      "best_shift": [v * factor for v in best_shift(fits[i]["surface"])]}
    gain_bar, evidence_bar = thresholds([entry["gain"] for entry in entries.values()],
                                        [entry["evidence"] for entry in entries.values()])
    for entry in entries.values():
        entry["misaligned"] = entry["gain"] > gain_bar and entry["evidence"] >= evidence_bar
    findings = []
    if offset != (0, 0) and near * 2 >= len(scored):
        findings.append({"code": "dataset_offset", "shift": list(offset), "pairs": near,
                         "detail": f"{near} of {len(scored)} labelled pairs fit best within {TOLERANCE} px of "
                                   f"moving every mask by {list(offset)} (rows down, columns right)"})
    return entries, {"offset": list(offset), "typical_signal": round(typical, 4),
                     "gain_threshold": round(float(gain_bar), 4), "evidence_threshold": round(float(evidence_bar), 2),
                     "scored_in_full": len(full), "findings": findings}



def thresholds(gains, evidence) -> tuple[np.float64, np.float64]:
    """(gain, evidence) a pair's best alternative must exceed to be flagged, judged against this dataset's median
    pair (an empirical null, valid while fewer than half the pairs are misplaced).

    Gain: MIN_GAIN, raised where the median pair already has an alternative that nearly ties (noisy but
    consistently noisy labels, repetitive scenes) to ABOVE_MEDIAN over that median.
    Evidence: EVIDENCE standard errors (`fit_noise`), raised to EVIDENCE_ABOVE_MEDIAN over the median pair's.
    Where outlines show, an untouched pair's alternatives fall short of its given placement (evidence below 0)
    and EVIDENCE holds. Where they barely show (faint polyps, soft lesions), every pair's best of hundreds of
    placements beats the given one by 1-2 standard errors as a matter of course, and the median pair says so.
    A z-score's own spread is 1, but the standard error counts the correlation within NOISE_CELL cells, not the
    image's large-scale structure (light falling off, a scope's rim) that a shifted or flipped outline meets:
    on the polyp look-alikes untouched pairs' best alternatives came close to 4 above the median (docs/audit.md).
    Medians, not spreads: a spread estimate would widen with the misplacements (the example-pair test plants 8
    among 17), and where outlines show, the spread below the median says nothing of the tail above it."""
    if not len(gains):
        return np.float64(MIN_GAIN), np.float64(EVIDENCE)
    return (np.float64(max(MIN_GAIN, float(np.median(gains)) + ABOVE_MEDIAN)),
            np.float64(max(EVIDENCE, float(np.median(evidence)) + EVIDENCE_ABOVE_MEDIAN)))
