"""Label problems found by a model: every example predicted by a model that never trained on it (out-of-fold),
its softmax compared with its mask, and the examples ranked by label quality, worst first, each with the kind
of problem and a disagreement picture (`label_issues.json`, format in docs/architecture.md and
docs/label_issues.md, which also has the measurements behind the choices here).

    entry, prediction, disagreement = score_example(mask, softmax, classes, partial_labels)

The out-of-fold predictions themselves, and the runs that write label_issues.json: folds.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from maskpair import figures
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.files import natural_key
from maskpair.training.predict import labels_from_probabilities

KINDS = ("missing structure", "extra structure", "wrong class", "boundary")  # what a disagreement looks like
TOLERANCE_PX = 1.0  # disagreement this close to a mask's class edge is outline noise, not a label problem
WHOLE_SHARE = 0.5  # a structure whose middle the other side covers less than this share of disagrees as a whole
FLAG_BELOW = 0.9  # examples with a class scoring below this get a picture (and `flagged`)


def annotated(mask: np.ndarray, n_classes: int, partial_labels: bool) -> np.ndarray:
    """Per class, whether the mask states where it is: every class, or with partial labels background and the
    classes the mask contains (a class absent from a partial mask is "not annotated here")."""
    if not partial_labels:
        return np.ones(n_classes, bool)
    present = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)[:n_classes] > 0
    present[0] = True
    return present



def merge_unannotated(probabilities: np.ndarray, annotated_classes: np.ndarray) -> np.ndarray:
    """The softmax with each not-annotated class's probability added to background: a background pixel of a
    partial mask means "background or a class not annotated here" (as the loss reads it), so the model finding
    such a class there is no disagreement."""
    merged = np.where(annotated_classes, probabilities, 0.0).astype(np.float32)
    merged[..., 0] += probabilities[..., ~annotated_classes].sum(axis=-1)
    return merged



def near_edge(region: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within `tolerance` of the region's edge, on either side."""
    if not region.any() or region.all():
        return np.zeros_like(region)
    inside = ndimage.distance_transform_edt(region)
    outside = ndimage.distance_transform_edt(~region)
    return np.where(region, inside <= tolerance, outside <= tolerance)



def whole_structures(region: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The pixels of `region`'s structures (8-connected) whose middle `other` mostly leaves out.

    A structure's middle is its pixels at least half its greatest depth from its edge: a mask drawn a few
    pixels too large still has the model's structure in its middle (a boundary problem, however thin the
    structure), a structure the model does not see at all does not."""
    components, count = ndimage.label(region, structure=np.ones((3, 3), bool))
    if not count:
        return np.zeros_like(region)
    depth = ndimage.distance_transform_edt(region)
    deepest = np.zeros(count + 1)
    deepest[1:] = ndimage.maximum(depth, components, np.arange(1, count + 1))
    middle = depth >= deepest[components] / 2
    covered = np.bincount(components[middle & other], minlength=count + 1)
    uncovered = covered < WHOLE_SHARE * np.bincount(components[middle], minlength=count + 1)
    uncovered[0] = False
    return uncovered[components]



def class_disagreement(mask, prediction, labelled, index: int, tolerance: float = TOLERANCE_PX) -> np.ndarray:
    """uint8 map of how mask and prediction disagree about class `index`: 0 where they agree (or within
    `tolerance` of the mask's edge of the class, unless a whole structure is at stake), else 1 + the kind's
    position in KINDS."""
    truth, seen = mask == index, (prediction == index) & labelled
    kinds = np.zeros(mask.shape, np.uint8)
    kinds[(truth ^ seen) & labelled & ~near_edge(truth, tolerance)] = 1 + KINDS.index("boundary")
    unlabelled = whole_structures(seen, truth) & ~truth  # the model's structure, which the mask lacks
    kinds[unlabelled & (mask == 0)] = 1 + KINDS.index("missing structure")
    kinds[unlabelled & (mask != 0)] = 1 + KINDS.index("wrong class")
    unseen = whole_structures(truth, seen) & ~seen  # the mask's structure, of which the model sees little
    kinds[unseen & (prediction == 0)] = 1 + KINDS.index("extra structure")
    kinds[unseen & (prediction != 0)] = 1 + KINDS.index("wrong class")
    return kinds



def label_quality(mask: np.ndarray, merged: np.ndarray) -> tuple[float, float]:
    """cleanlab's two label quality measures of one mask, over its labelled pixels (ignore pixels are left out by
    scoring the labelled ones as one row of pixels): (softmin, mislabelled share).

    - softmin: the model's probability of each given label, pooled by a soft minimum (`method="softmin"` at
      cleanlab's default temperature; 0..1, low = likely wrong): a few confidently contradicted pixels pull it down.
    - mislabelled share: the share of the labelled pixels that cleanlab's confident learning finds mislabelled
      (`method="num_pixel_issues"`): a pixel counts when the model gives another class more than that class's
      typical confidence on its own pixels (thresholds per class, from this mask's pixels), so a class the model
      is never sure of still shows its errors.
    Each finds errors the other misses (docs/label_issues.md); `ranked` orders by the more suspicious of the two."""
    from cleanlab.segmentation.rank import (
        get_label_quality_scores,  # here: scoring hand-made arrays needs none
    )

    labelled = mask != IGNORE_INDEX
    if not labelled.any():
        return 1.0, 0.0
    labels = mask[labelled][None, None, :].astype(np.int64)               # (1, 1, P)
    probabilities = np.moveaxis(merged[labelled], -1, 0)[None, :, None, :]  # (1, K, 1, P)
    softmin, _ = get_label_quality_scores(labels, probabilities, method="softmin", verbose=False)
    # n_jobs=1: one mask's pixels are quick, and cleanlab's default forks a pool inside a TensorFlow process
    issues, _ = get_label_quality_scores(labels, probabilities, method="num_pixel_issues", verbose=False, n_jobs=1)
    return float(softmin[0]), 1.0 - float(issues[0])



def score_example(mask: np.ndarray, probabilities: np.ndarray, classes, partial_labels: bool):
    """(entry, compared prediction, disagreement map) of one example. entry: softmin and mislabelled_share
    (cleanlab's label quality, `label_quality`: what the ranking orders by), flagged, kind, per-class figures.
    The prediction is the argmax once not-annotated classes are merged into background; the map is 0 where
    nothing disagrees, else 1 + the kind's position.

    Each annotated class also gets its own score, which says where and how much: 1 - (the model's probability
    against the given label, summed over the disagreeing pixels) / (its labelled + its predicted pixels): Dice
    (1 - disagreeing / (labelled + predicted)) with each disagreeing pixel weighted by how sure the model is, and
    outline noise left out. The example is flagged (a picture is drawn) when its worst class scores below
    FLAG_BELOW, and its kind is what weighs most in that class's doubt. As a ranking it puts planted errors
    first less often than cleanlab's measures (docs/label_issues.md)."""
    stated = annotated(mask, len(classes), partial_labels)
    merged = merge_unannotated(probabilities, stated)
    prediction = labels_from_probabilities(merged)
    labelled = mask != IGNORE_INDEX
    given = np.take_along_axis(merged, np.where(labelled, mask, 0)[..., None].astype(np.intp), -1)[..., 0]
    doubt = np.where(labelled, 1.0 - given, 0.0)  # the model's probability that the given label is wrong
    disagreement = np.zeros(mask.shape, np.uint8)
    per_class, kinds_of = {}, {}
    for index in range(1, len(classes)):
        if not stated[index]:
            per_class[classes[index]] = {"annotated": False}
            continue
        kinds = class_disagreement(mask, prediction, labelled, index)
        disagreement = np.maximum(disagreement, kinds)
        labelled_px = int(np.count_nonzero(mask == index))
        predicted_px = int(np.count_nonzero((prediction == index) & labelled))
        pixels = np.bincount(kinds.ravel(), minlength=1 + len(KINDS))[1:]
        in_doubt = np.bincount(kinds.ravel(), weights=doubt.ravel(), minlength=1 + len(KINDS))[1:]
        per_class[classes[index]] = {
            "annotated": True, "labelled_px": labelled_px, "predicted_px": predicted_px,
            "score": round(1.0 - float(in_doubt.sum()) / (labelled_px + predicted_px), 4) if labelled_px + predicted_px else 1.0,
            "disagreement_px": {kind: int(count) for kind, count in zip(KINDS, pixels)}}
        kinds_of[classes[index]] = in_doubt
    softmin, share = label_quality(mask, merged)
    quality = {"softmin": round(softmin, 4), "mislabelled_share": round(share, 5)}
    if not kinds_of:
        entry = {**quality, "flagged": False, "kind": "not annotated", "classes": per_class}
        return entry, prediction, disagreement
    worst = min(kinds_of, key=lambda name: per_class[name]["score"])
    kind = KINDS[int(np.argmax(kinds_of[worst]))] if kinds_of[worst].any() else "none"
    entry = {**quality, "flagged": per_class[worst]["score"] < FLAG_BELOW, "kind": kind, "classes": per_class}
    return entry, prediction, disagreement



def examine(data, name: str, probabilities: np.ndarray, fold: int, folder: Path) -> dict:
    """Score one example, save its out-of-fold label map and, when it is flagged, its pictures;
    returns its entry (without rank)."""
    mask = data.get_mask(name)
    entry, compared, disagreement = score_example(mask, probabilities, data.labels, data.description.partial_labels)
    raw = labels_from_probabilities(probabilities)
    np.save(folder / "predictions" / f"{name}.npy", raw)
    entry = {"name": name, **entry, "fold": fold, "prediction": f"predictions/{name}.npy", "picture": None,
             "sheet": None}
    if entry["flagged"]:
        image = data.get_image(name)
        picture = disagreement_picture(image, mask, disagreement, compared)
        Image.fromarray(picture).save(folder / "pictures" / f"{name}.png")
        title = f"{name}: {entry['kind']}; {entry['mislabelled_share']:.1%} of its pixels look mislabelled"
        sheet = disagreement_sheet(image, mask, raw, picture, title, data.labels)
        sheet.savefig(folder / "pictures" / f"{name}.sheet.png", dpi=100)
        entry.update(picture=f"pictures/{name}.png", sheet=f"pictures/{name}.sheet.png")
    return entry



def suspicion(softmin, mislabelled_share) -> list[tuple[float, float]]:
    """Per example, (score, tie-break): where it stands among these examples by the more suspicious of cleanlab's
    two measures (`label_quality`). Each measure ranks the examples (ties share a place); an example's place
    in a ranking is 0 for the most suspect to 1 for the least; score = the lower of its two places (0: the most
    suspect of all by at least one measure), ties broken by the sum of both. On every dataset measured this
    ranks planted errors nearly as well as the better of the two measures there, which differs from dataset
    to dataset (docs/label_issues.md)."""
    from scipy.stats import rankdata

    n = len(softmin)
    if n < 2:
        return [(1.0, 2.0)] * n
    places = [(rankdata(values) - 1) / (n - 1) for values in (softmin, -np.asarray(mislabelled_share))]
    return [(float(min(a, b)), float(a + b)) for a, b in zip(*places)]



def ranked(entries: list[dict]) -> list[dict]:
    """The entries worst first, each with its rank (1 = most suspect) and score (`suspicion`: 0..1, 0 = the most
    suspect by one of cleanlab's measures); ties in natural name order."""
    keys = suspicion([entry["softmin"] for entry in entries], [entry["mislabelled_share"] for entry in entries])
    order = sorted(zip(keys, entries), key=lambda item: (*item[0], natural_key(item[1]["name"])))
    return [{"name": entry["name"], "rank": rank, "score": round(key[0], 4),
             **{k: v for k, v in entry.items() if k != "name"}}
            for rank, (key, entry) in enumerate(order, 1)]



def format_ranking(report: dict, top: int = 10) -> str:
    """A text table of the `top` most suspect examples: rank, name, score, cleanlab's two measures, kind, worst
    class, fold."""
    lines = [(f"{'rank':>4}  {'example':<16}{'score':>6}{'softmin':>9}{'mislabelled':>13}  {'kind':<18}"
              f"{'worst class':<16}{'fold':>4}")]
    for entry in report["examples"][:top]:
        scored = {name: c["score"] for name, c in entry["classes"].items() if c["annotated"]}
        worst = min(scored, key=scored.get) if scored else "-"
        lines.append(f"{entry['rank']:>4}  {entry['name']:<16}{entry['score']:>6.3f}{entry['softmin']:>9.3f}"
                     f"{entry['mislabelled_share']:>13.2%}  {entry['kind']:<18}{worst:<16}{entry['fold']:>4}")
    flagged = sum(entry["flagged"] for entry in report["examples"])
    lines.append(f"{flagged} of {len(report['examples'])} examples have a class scoring below {FLAG_BELOW} (pictures/)")
    if "planted" in report:
        recall = ", ".join(f"top {k}: {share:.0%}" for k, share in report["planted"]["recall_at_k"].items())
        ranks = ", ".join(f"{name} ({found['error']}) {found['rank']}"
                          for name, found in report["planted"]["examples"].items())
        lines += [f"planted errors found in the {recall}", f"their ranks: {ranks}"]
    return "\n".join(lines)



def disagreement_picture(image, mask, disagreement, prediction) -> np.ndarray:
    """uint8 RGB (H, W, 3), pixel for pixel over the image: the image dimmed, the mask's class outlines, and
    every disagreement beyond outline noise filled: solid in the model's class where the model sees a structure
    the mask does not label so, dotted in the mask's class where the model sees none of it; ignore grey."""
    rgb = figures.overlay_rgb(0.5 * figures.as_rgb(image), mask, contour=True)
    model_sees = (disagreement > 0) & (prediction > 0)
    for index in np.unique(prediction[model_sees]):
        rgb[model_sees & (prediction == index)] = figures.class_colour(int(index))
    rows, cols = np.indices(mask.shape)
    dotted = (disagreement > 0) & (prediction == 0) & ((rows + cols) % 2 == 0)
    for index in np.unique(mask[dotted]):
        rgb[dotted & (mask == index)] = figures.class_colour(int(index))
    rgb[mask == IGNORE_INDEX] = figures.IGNORE_COLOUR
    return np.round(255 * rgb.clip(0, 1)).astype(np.uint8)



def disagreement_sheet(image, mask, prediction, picture, title: str, classes):
    """A matplotlib Figure (no pyplot state): mask | out-of-fold prediction | differences, and a legend."""
    from matplotlib.figure import Figure

    width, height = figures.panel_size(mask.shape, 3.2)
    fig = Figure(figsize=(3 * width, height + 1.0))
    panels = (("mask", figures.overlay_rgb(image, mask)),
              ("out-of-fold prediction", figures.overlay_rgb(image, prediction)), ("differences", picture))
    for ax, (label, rgb) in zip(fig.subplots(1, 3), panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    figures.add_legend(fig, classes, bool((mask == IGNORE_INDEX).any()))
    fig.text(0.5, 0.09, "differences: solid = the model's class where the mask disagrees; dotted = the mask's "
             "class where the model sees none; outlines = the mask", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    return fig
