"""Scores of predicted label maps against masks, per class and per example, and metrics.json (numpy only).

Label maps are uint8 class indices; `IGNORE_INDEX` pixels of a mask count nowhere. Class 0 is background.
With partial labels, a class is scored only on the examples whose mask contains it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from maskpair.boundaries import label_boundaries
from maskpair.data.description import IGNORE_INDEX
from maskpair.jsonio import write_json


def pooled_overlap(truths, predictions, index: int, partial_labels: bool):
    """(intersection, |truth|, |prediction|) of one class, pixels pooled over the examples and over the labelled
    pixels of each; with partial_labels only over the examples whose mask contains the class."""
    intersection = truth_total = prediction_total = 0
    for truth, prediction in zip(truths, predictions):
        labelled = truth != IGNORE_INDEX
        truth_is, predicted_is = truth == index, (prediction == index) & labelled
        if partial_labels and not truth_is.any():
            continue
        intersection += int(np.count_nonzero(truth_is & predicted_is))
        truth_total += int(np.count_nonzero(truth_is))
        prediction_total += int(np.count_nonzero(predicted_is))
    return intersection, truth_total, prediction_total


def pooled_scores(truths, predictions, classes, partial_labels: bool) -> dict:
    """{"dice": {class: ...}, "iou": {class: ...}} for every class; NaN where no pixel of it is labelled or predicted."""
    scores = {"dice": {}, "iou": {}}
    for index, name in enumerate(classes):
        intersection, truth, prediction = pooled_overlap(truths, predictions, index, partial_labels)
        union = truth + prediction - intersection
        scores["dice"][name] = 2 * intersection / (truth + prediction) if truth + prediction else float("nan")
        scores["iou"][name] = intersection / union if union else float("nan")
    return scores


def foreground_mean(per_class: dict) -> float:
    """Mean over the classes but the first (background), NaNs left out; NaN when nothing is left."""
    values = [v for v in list(per_class.values())[1:] if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def evaluate(truths: dict, predictions: dict, classes, partial_labels: bool) -> dict:
    """Pooled Dice and IoU per class and their foreground means; with partial labels also the naive scores
    (every example counts for every class) and which examples were scored for each class."""
    names = list(truths)
    truth_maps, prediction_maps = [truths[n] for n in names], [predictions[n] for n in names]
    scores = pooled_scores(truth_maps, prediction_maps, classes, partial_labels)
    scores["mean_dice"], scores["mean_iou"] = foreground_mean(scores["dice"]), foreground_mean(scores["iou"])
    if partial_labels:
        naive = pooled_scores(truth_maps, prediction_maps, classes, partial_labels=False)
        scores["dice_naive"], scores["iou_naive"] = naive["dice"], naive["iou"]
        scores["scored_examples"] = {name: [n for n in names if (truths[n] == index).any()]
                                     for index, name in enumerate(classes)}
    return scores


def format_scores(scores: dict) -> str:
    """A text table: Dice and IoU per class (and the naive ones when there are), then the foreground means."""
    naive = "dice_naive" in scores
    lines = [f"{'class':<16}{'Dice':>8}{'IoU':>8}" + (f"{'naive Dice':>12}{'naive IoU':>11}  scored on" if naive else "")]
    for name in scores["dice"]:
        line = f"{name:<16}{scores['dice'][name]:>8.4f}{scores['iou'][name]:>8.4f}"
        if naive:
            line += (f"{scores['dice_naive'][name]:>12.4f}{scores['iou_naive'][name]:>11.4f}  "
                     f"{len(scores['scored_examples'][name])} examples")
        lines.append(line)
    lines.append(f"{'foreground mean':<16}{scores['mean_dice']:>8.4f}{scores['mean_iou']:>8.4f}")
    return "\n".join(lines)


def error_share_on_mask_edges(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Share of the wrongly labelled pixels that lie on a label change of the mask (within one pixel); NaN when
    none is wrong. Near 1: model and mask disagree only about where boundaries run; lower: whole pieces missed
    or invented."""
    wrong = (truth != prediction) & (truth != IGNORE_INDEX)
    wrong_count = np.count_nonzero(wrong)
    return np.count_nonzero(wrong & label_boundaries(truth)) / wrong_count if wrong_count else float("nan")


def example_scores(truths: dict, predictions: dict, classes, partial_labels: bool) -> list[dict]:
    """Per example: Dice of each class (NaN where not scored), their foreground mean, the worst class and the share
    of errors on mask edges; worst mean first, to show where the pooled errors come from."""
    rows = []
    for name in truths:
        dice = pooled_scores([truths[name]], [predictions[name]], classes, partial_labels)["dice"]
        foreground = {c: v for c, v in list(dice.items())[1:] if not np.isnan(v)}
        rows.append({"name": name, "dice": dice, "mean_dice": foreground_mean(dice),
                     "worst_class": min(foreground, key=foreground.get) if foreground else None,
                     "errors_on_edges": error_share_on_mask_edges(truths[name], predictions[name])})
    return sorted(rows, key=lambda row: np.inf if np.isnan(row["mean_dice"]) else row["mean_dice"])


def format_example_scores(rows: list[dict], flags: dict | None = None) -> str:
    """A text table of `example_scores` rows, with each example's audit flags when `flags` (name -> list) is given."""
    def number(value, spec):
        return "-" if value is None or np.isnan(value) else format(value, spec)

    lines = [f"{'example':<14}{'mean Dice':>10}  {'worst class':<22}{'errors on mask edges':>21}"
             + ("   audit flags" if flags is not None else "")]
    for row in rows:
        worst = f"{row['worst_class']} {number(row['dice'][row['worst_class']], '.3f')}" if row["worst_class"] else "-"
        line = f"{row['name']:<14}{number(row['mean_dice'], '.4f'):>10}  {worst:<22}{number(row['errors_on_edges'], '.0%'):>21}"
        if flags is not None:
            line += f"   {', '.join(flags.get(row['name'], [])) or '-'}"
        lines.append(line)
    return "\n".join(lines)


def conclusion(metrics: dict) -> str:
    """What the metrics support, in sentences computed from them."""
    dice = metrics["dice"]
    classes = list(dice)[1:] or list(dice)
    ranked = sorted((c for c in classes if not np.isnan(dice[c])), key=dice.get)
    lines = [f"Held-out foreground Dice {metrics['mean_dice']:.3f} (mean over {len(classes)} classes)"
             + (f"; weakest {ranked[0]} {dice[ranked[0]]:.3f}, strongest {ranked[-1]} {dice[ranked[-1]]:.3f}." if ranked else ".")]
    if "dice_naive" in metrics:
        gaps = ", ".join(f"{c} {metrics['dice_naive'][c] - dice[c]:+.3f}" for c in classes)
        lines.append(f"Naive pooled Dice differs by {gaps} (negative: predictions on examples whose mask lacks "
                     "the class count as errors).")
    post = metrics.get("largest_structure")
    if post:
        lines.append(f"Keeping only the largest predicted structure was {'applied' if post['applied'] else 'not applied'}"
                     f" ({post['reason']}).")
    training = metrics["training"]
    lines.append(f"Training ran {training['epochs_run']} epochs in {training['train_seconds'] / 60:.1f} min (kept epoch "
                 f"{training['best_epoch']}); steps waited for their input {100 * training['input_wait_share']:.1f}% "
                 "of the time.")
    return "\n".join(lines)


def write_metrics(metrics: dict, output_dir) -> Path:
    """Write output_dir/metrics.json (NaN written as null, so any JSON reader accepts it)."""
    return write_json(Path(output_dir) / "metrics.json", metrics, indent=2)
