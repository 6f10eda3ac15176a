"""Findings about a segmentation dataset without a model: integrity, content, anatomical order, alignment.

`audit_dataset(DATA_DIR)` returns a JSON-ready report; the CLI writes it, a contact sheet and a summary.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

import loader

# Every flag starts with one of these code words, then (where shown) a colon and a detail.
FLAG_CODES = {
    "empty_mask": "the mask has no foreground pixel at all",
    "missing_class": "missing_class:<label> -- a non-empty mask without any pixel of <label>",
    "duplicate_of": "duplicate_of:<name> -- the image or the mask is byte-identical to example <name>'s "
                    "(measures.duplicate says which)",
    "order_gap": "order_gap:<a>-<a>@<top|bottom> -- two <a> levels follow each other along the column with no "
                 "level of the other class between them, in the top or bottom half of the column; "
                 "order_gap:unlabelled_disc@<top|bottom> -- one level beyond that end of the labelled column "
                 "the image looks like a disc (a level seems missing there)",
    "short_column": "short_column:<top|bottom> -- the labelled rows end further from that edge of the image than in "
                    "most of this dataset's masks (by more than SHORT_COLUMN of the image height): the annotation "
                    "may stop short of structures the image still shows",
    "misaligned": "misaligned:<alternative> -- the mask's boundaries fit the image's edges at least as well "
                  "after <alternative>: shift(dy,dx) (move the mask dy rows down, dx columns right), flip_lr, "
                  "flip_ud, transpose, or swapped_with:<name> (the mask stored with example <name>)",
}

MAX_SHIFT = 10          # shifts tried: every (dy, dx) with 3 <= max(|dy|, |dx|) <= MAX_SHIFT
MIN_SHIFT = 3           # 1-2 px is within hand-drawing accuracy, not an alternative placement
MARGIN = 1.02           # the given placement must beat every alternative by 2% to count as clearly best
EDGE_SIGMAS = (1.5, 2.0, 2.5, 3.0)
EDGE_QUANTILES = (0.6, 0.85)  # Canny hysteresis thresholds as quantiles: independent of contrast
ORDER_CLASSES = ("disc", "vertebra")
MIN_LEVEL_AREA = 20     # px; smaller components are specks, not levels
DISC_LIKE = 0.5         # beyond the end, at least half-way from the between-discs intensity to a disc's
SHORT_COLUMN = 0.15     # of the image height: how much further from an edge than the median mask's labels may end
MIN_COLUMNS = 5         # labelled masks needed before "most of this dataset's masks" means anything


# ---------------------------------------------------------------- edges and boundaries


def edge_map(image: np.ndarray) -> np.ndarray:
    """Fraction of Canny scales (sigmas EDGE_SIGMAS) with an edge within 1 px of each pixel, float32."""
    from skimage import feature

    image = loader.image_to_float(np.asarray(image).squeeze())
    total = np.zeros(image.shape, np.float32)
    for sigma in EDGE_SIGMAS:
        edges = feature.canny(image, sigma, *EDGE_QUANTILES, use_quantiles=True)
        total += ndimage.maximum_filter(edges, 3)  # a hand-drawn boundary may sit a pixel off the edge
    return total / len(EDGE_SIGMAS)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1.0 on both sides of every place where the label changes (4-neighbourhood), else 0.0."""
    edge = np.zeros(mask.shape, bool)
    rows, cols = mask[:-1] != mask[1:], mask[:, :-1] != mask[:, 1:]
    edge[:-1] |= rows
    edge[1:] |= rows
    edge[:, :-1] |= cols
    edge[:, 1:] |= cols
    return edge.astype(np.float32)


def fit_score(edges: np.ndarray, boundary: np.ndarray) -> float:
    """Mean edge strength under the boundary pixels (0 for an empty boundary)."""
    return float((edges * boundary).sum() / max(boundary.sum(), 1.0))


def shift_scores(edges: np.ndarray, boundary: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """fit_score of the boundary moved by every (dy, dx) up to max_shift; entry [max_shift+dy, max_shift+dx].

    The boundary is moved with zero padding: pixels moved out of the frame do not count.
    """
    height, width = edges.shape
    flipped = boundary[::-1, ::-1]
    hits = signal.fftconvolve(edges, flipped, mode="full")
    kept = signal.fftconvolve(np.ones_like(edges), flipped, mode="full")  # boundary pixels still in frame
    window = np.s_[height - 1 - max_shift : height + max_shift, width - 1 - max_shift : width + max_shift]
    return hits[window] / np.maximum(kept[window], 1.0)


# ---------------------------------------------------------------- alignment


def geometric_alternatives(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The flipped and transposed placements of a mask (transpose only for square masks)."""
    found = {"flip_lr": mask[:, ::-1], "flip_ud": mask[::-1]}
    if mask.shape[0] == mask.shape[1]:
        found["transpose"] = mask.T
    return found


def best_shift(scores: np.ndarray) -> tuple[str, float]:
    """The best shift at least MIN_SHIFT away (Chebyshev distance) and its score."""
    reach = (scores.shape[0] - 1) // 2
    dy, dx = np.indices(scores.shape) - reach
    far = np.where(np.maximum(abs(dy), abs(dx)) >= MIN_SHIFT, scores, -np.inf)
    row, col = np.unravel_index(np.argmax(far), far.shape)
    return f"shift({row - reach},{col - reach})", float(far[row, col])


def alignment(edges, mask, other_scores: dict[str, float] | None = None) -> dict:
    """Score the given placement against shifts, flips, transposition and other examples' masks.

    other_scores: {name: fit_score of that example's mask on this image}, precomputed by the caller.
    """
    boundary = boundary_map(mask)
    given = fit_score(edges, boundary)
    candidates = dict([best_shift(shift_scores(edges, boundary))])
    candidates.update({name: fit_score(edges, boundary_map(alt)) for name, alt in geometric_alternatives(mask).items()})
    candidates.update({f"swapped_with:{name}": score for name, score in (other_scores or {}).items()})
    rival = max(candidates, key=candidates.get)
    return {
        "score": round(given, 4),
        "best_alternative": rival,
        "alternative_score": round(candidates[rival], 4),
        "margin": round(given / candidates[rival], 4) if candidates[rival] > 0 else None,
        "misaligned": candidates[rival] * MARGIN >= given,
    }


def cross_scores(edges: list[np.ndarray], boundaries: list[np.ndarray], chunk: int = 256) -> np.ndarray:
    """fit_score of every mask (columns) on every image (rows), by chunked matrix products."""
    flat_b = np.stack([b.ravel() for b in boundaries])
    lengths = np.maximum(flat_b.sum(axis=1), 1.0)
    out = np.empty((len(edges), len(boundaries)), np.float32)
    for start in range(0, len(edges), chunk):
        block = np.stack([e.ravel() for e in edges[start : start + chunk]])
        out[start : start + chunk] = block @ flat_b.T / lengths
    return out


# ---------------------------------------------------------------- content


def class_components(mask: np.ndarray, labels) -> dict[str, dict]:
    """Per non-background class: pixel count, connected-component count and areas (largest first)."""
    found = {}
    for value, label in enumerate(labels[1:], start=1):
        components, count = ndimage.label(mask == value)
        areas = np.bincount(components.ravel())[1:]
        found[label] = {"pixels": int(areas.sum()), "components": int(count),
                        "areas": sorted(areas.tolist(), reverse=True)}
    return found


def content_flags(mask: np.ndarray, labels) -> list[str]:
    """empty_mask, or missing_class:<label> for each class absent from a non-empty mask."""
    if not mask.any():
        return ["empty_mask"]
    present = set(np.unique(mask).tolist())
    return [f"missing_class:{label}" for value, label in enumerate(labels) if value and value not in present]


def digest(array: np.ndarray) -> str:
    """Content hash of an array (shape and dtype included)."""
    return hashlib.sha1(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()


def duplicates(names, arrays) -> dict[str, str]:
    """{name: first earlier name with an identical array}."""
    first, found = {}, {}
    for name, array in zip(names, arrays):
        key = digest(array)
        if key in first:
            found[name] = first[key]
        else:
            first[key] = name
    return found


# ---------------------------------------------------------------- anatomical order


def levels(mask: np.ndarray, labels, classes=ORDER_CLASSES) -> list[dict]:
    """The disc and vertebra components (specks dropped) as levels sorted from top to bottom."""
    found = []
    for label in classes:
        value = labels.index(label)
        components, count = ndimage.label(mask == value)
        for index in range(1, count + 1):
            where = components == index
            if where.sum() >= MIN_LEVEL_AREA:
                row, col = ndimage.center_of_mass(where)
                found.append({"label": label, "row": float(row), "col": float(col), "pixels": where})
    return merge_side_by_side(sorted(found, key=lambda level: level["row"]))


def merge_side_by_side(found: list[dict]) -> list[dict]:
    """Join neighbouring same-class pieces that sit at one height (a disc drawn in two parts is one level)."""
    if len(found) < 3:
        return found
    spacing = np.median(np.diff([level["row"] for level in found]))
    merged = [found[0]]
    for level in found[1:]:
        last = merged[-1]
        if level["label"] == last["label"] and level["row"] - last["row"] < 0.6 * spacing:
            pixels = last["pixels"] | level["pixels"]
            row, col = ndimage.center_of_mass(pixels)
            merged[-1] = {"label": level["label"], "row": float(row), "col": float(col), "pixels": pixels}
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


def beyond_end_disc_likeness(image: np.ndarray, column: list[dict]) -> dict[str, float | None]:
    """How disc-like the image is one level beyond each end of the column (0 = like the gap between discs,
    1 = like the outermost disc).

    The outermost disc's pixels are moved on by half and by one disc-to-disc step; None where that leaves
    the frame or the column has fewer than two discs.
    """
    discs = [level for level in column if level["label"] == "disc"]
    result = {"top": None, "bottom": None}
    if len(discs) < 2:
        return result
    for end, outer, inner in (("top", discs[0], discs[1]), ("bottom", discs[-1], discs[-2])):
        step = np.array([outer["row"] - inner["row"], outer["col"] - inner["col"]])
        at_disc, between, beyond = (_mean_moved(image, outer["pixels"], step * k) for k in (0, 0.5, 1))
        if beyond is not None and between is not None and abs(at_disc - between) > 1e-3:
            result[end] = round((beyond - between) / (at_disc - between), 3)
    return result


def _mean_moved(image, pixels, step):
    """Mean image value under `pixels` moved by step (rows, cols); None if 10% of them leave the frame."""
    rows, cols = np.nonzero(pixels)
    rows, cols = rows + round(step[0]), cols + round(step[1])
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    return float(image[rows[inside], cols[inside]].mean()) if inside.mean() >= 0.9 else None


def anatomical_order(image, mask, labels) -> tuple[list[str], dict]:
    """Flags and measures for the alternation of discs and vertebrae along the column."""
    column = levels(mask, labels)
    both_present = {level["label"] for level in column} == set(ORDER_CLASSES)
    flags = order_gaps(column) if both_present else []  # a class missing altogether is missing_class
    likeness = beyond_end_disc_likeness(loader.image_to_float(image), column)
    flags += [f"order_gap:unlabelled_disc@{end}" for end, value in likeness.items()
              if value is not None and value >= DISC_LIKE]
    measures = {"sequence": "".join(level["label"][0].upper() for level in column),
                "disc_likeness_beyond": likeness}
    return flags, measures


def labelled_rows(mask: np.ndarray) -> tuple[int, int] | None:
    """(first, last) row holding any label; None for an empty mask."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def edge_margins(mask: np.ndarray) -> tuple[float, float] | None:
    """(top, bottom): the unlabelled rows above the first and below the last labelled row, as shares of the
    mask's height; None for an empty mask."""
    span, height = labelled_rows(mask), mask.shape[0]
    return None if span is None else (span[0] / height, (height - 1 - span[1]) / height)


def short_columns(masks) -> list[list[str]]:
    """short_column flags per mask (see `short_column_flags`)."""
    return short_column_flags([edge_margins(mask) for mask in masks])


def short_column_flags(margins) -> list[list[str]]:
    """short_column flags per mask from its `edge_margins` (None: empty): labels that end further from the top or
    bottom of the image than the median non-empty mask's, by more than SHORT_COLUMN of the height. Where most
    masks label the spine up to the frame's edge, this finds the masks whose annotation stops short (what the
    image shows beyond stays unlabelled and is taught, and scored, as background). No flags with fewer than
    MIN_COLUMNS non-empty masks."""
    known = [margin for margin in margins if margin is not None]
    if len(known) < MIN_COLUMNS:
        return [[] for _ in margins]
    typical = np.median(known, axis=0)
    flags = []
    for margin in margins:
        excess = [] if margin is None else [own - usual for own, usual in zip(margin, typical)]
        flags.append([f"short_column:{end}" for end, extra in zip(("top", "bottom"), excess) if extra > SHORT_COLUMN])
    return flags


# ---------------------------------------------------------------- the audit


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
    return lambda done: (bar.update(1), bar.close() if done == total else None)


def audit_arrays(names, images, masks, labels=loader.LABELS, anatomical=True, progress=None, edges=None) -> dict:
    """Audit in-memory pairs (2D images uint8/float, 2D uint8 masks); see `audit_dataset`.

    edges: the `edge_map` of each image, when the caller already has them (they depend on images only).
    """
    labels = tuple(labels)
    anatomical = anatomical and all(label in labels for label in ORDER_CLASSES)
    edges = [edge_map(image) for image in images] if edges is None else edges
    labelled = [i for i, mask in enumerate(masks) if mask.any()]
    cross = cross_scores([edges[i] for i in labelled], [boundary_map(masks[i]) for i in labelled])
    same_image, same_mask = duplicates(names, images), duplicates(names, masks)
    margins = [edge_margins(mask) for mask in masks]
    short = short_column_flags(margins)
    tick = _progress_callback(progress, len(names))
    examples = []
    for i, name in enumerate(names):
        entry = {"name": name, "flags": content_flags(masks[i], labels),
                 "classes": class_components(masks[i], labels)}
        dup = {kind: found[name] for kind, found in (("image", same_image), ("mask", same_mask)) if name in found}
        entry["duplicate"] = dup
        entry["flags"] += sorted({f"duplicate_of:{other}" for other in dup.values()})
        if anatomical and masks[i].any():
            flags, entry["order"] = anatomical_order(images[i], masks[i], labels)
            entry["order"]["edge_margins"] = [round(float(share), 3) for share in margins[i]]
            entry["flags"] += flags + short[i]
        if i in labelled:
            row = labelled.index(i)
            others = {names[j]: float(cross[row, col]) for col, j in enumerate(labelled) if j != i}
            entry["alignment"] = alignment(edges[i], masks[i], others)
            if entry["alignment"]["misaligned"]:
                entry["flags"].append(f"misaligned:{entry['alignment']['best_alternative']}")
        examples.append(entry)
        tick(i + 1)
    return {"labels": list(labels), "anatomical_order": anatomical, "flag_codes": FLAG_CODES,
            "settings": {"max_shift": MAX_SHIFT, "min_shift": MIN_SHIFT, "margin": MARGIN,
                         "short_column": SHORT_COLUMN},
            "examples": examples, "counts": flag_counts(examples)}


def flag_counts(examples) -> dict[str, int]:
    """How many examples carry each flag code."""
    counts = {code: 0 for code in FLAG_CODES}
    for entry in examples:
        for code in {flag.split(":")[0] for flag in entry["flags"]}:
            counts[code] += 1
    return counts


def read_dataset(data_dir, labels=loader.LABELS):
    """(names, images, masks) of every pair under data_dir, validated by the loader."""
    data = loader.DataLoader(data_dir, batch_size=1, labels=labels, progress=False)
    raw = [data.raw_pair(name) for name in data.names]
    return data.names, [image for image, _ in raw], [mask for _, mask in raw]


def audit_dataset(data_dir, anatomical_order: bool = True, labels=loader.LABELS, progress=None) -> dict:
    """Audit every pair under data_dir; returns {"examples": [{"name", "flags", measures...}], ...}.

    anatomical_order: check that discs and vertebrae alternate and that each mask's labels reach about as far
    up and down as most masks' (off for data without such structure).
    progress: None (a bar from 200 pairs), True/False, or a callable(done, total). Raises loader.DataError.
    """
    names, images, masks = read_dataset(data_dir, labels)
    report = audit_arrays(names, images, masks, labels, anatomical_order, progress)
    report["data_dir"] = str(data_dir)
    return report


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
    """A readable summary: counts per flag code, then one line per flagged example."""
    examples = report["examples"]
    lines = [f"{report.get('data_dir', 'dataset')}: {len(examples)} pairs, "
             f"{len(flagged(report))} with flags"]
    lines += [f"  {code:<14}{count:>4}" for code, count in report["counts"].items()]
    lines += [f"  {entry['name']:>8}: {', '.join(entry['flags'])}" for entry in examples if entry["flags"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- contact sheet


def contact_sheet(report, data_dir, path, columns: int = 5, max_examples: int = 200) -> Path:
    """Save a PNG grid: every pair (up to max_examples) with its mask outlined and its flags as caption."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names, images, masks = read_dataset(data_dir, report["labels"])
    entries = {entry["name"]: entry for entry in report["examples"]}
    shown = names[:max_examples]
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.4 * rows), squeeze=False)
    colours = plt.cm.tab10.colors
    for ax, name, image, mask in zip(axes.flat, shown, images, masks):
        ax.imshow(image, cmap="gray")
        for value in range(1, len(report["labels"])):
            if (mask == value).any():
                ax.contour(mask == value, [0.5], colors=[colours[value % 10]], linewidths=0.6)
        flags = entries[name]["flags"]
        ax.set_title(f"{name}\n" + "\n".join(flags[:3]) + ("\n..." if len(flags) > 3 else ""),
                     fontsize=7, color="crimson" if flags else "black")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audit.py", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--json", dest="json_path", help="write the report here (default: DATA_DIR/../audit.json)")
    parser.add_argument("--sheet", help="contact-sheet PNG (default: next to the JSON report, .png)")
    parser.add_argument("--no-order", action="store_true", help="skip the spine-specific checks (disc/vertebra alternation, short labelled columns)")
    args = parser.parse_args(argv)
    json_path = Path(args.json_path or Path(args.data_dir).resolve().parent / "audit.json")
    try:
        report = audit_dataset(args.data_dir, anatomical_order=not args.no_order)
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
