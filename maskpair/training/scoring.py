"""Scores of a Segmenter on labelled examples: per class and per example, after the post-processing chosen on val
and before it. Training's test scores and `maskpair evaluate` (`evaluate_model`) both come from `score_examples`,
so evaluating a saved model on its test split reproduces training's scores exactly."""
from __future__ import annotations

from pathlib import Path

from maskpair import evaluate
from maskpair.errors import DataError
from maskpair.training.predict import labels_from_probabilities, removed_pixels


def predict_at_own_size(segmenter, data, names) -> tuple[dict, dict]:
    """({name: label map before post-processing}, {name: its mask}) of `names` of `data` (a DataLoader), both at
    each pair's own size: images read as their files hold them (a `max_size` reduction is the Segmenter's)."""
    pairs = {name: data.read_full_size(name) for name in names}
    maps = segmenter.probabilities_many(image for image, _ in pairs.values())
    return ({name: labels_from_probabilities(p) for name, p in zip(pairs, maps)},
            {name: labels for name, (_, labels) in pairs.items()})


def score_examples(segmenter, data, names) -> tuple[dict, dict]:
    """(scores, final label maps) of `names` of `data` (a DataLoader), at each pair's own size: pooled Dice and IoU
    per class and their foreground means (with partial labels also the naive ones), Dice per class before
    post-processing, the pixels it removed, and per-example scores (worst first)."""
    raw, truths = predict_at_own_size(segmenter, data, list(names))
    final = {name: segmenter.postprocess(labels) for name, labels in raw.items()}
    classes, partial = data.labels, data.description.partial_labels
    scores = evaluate.evaluate(truths, final, classes, partial)
    scores["dice_before_postprocessing"] = evaluate.evaluate(truths, raw, classes, partial)["dice"]
    scores["removed_pixels"] = removed_pixels(raw, final)
    scores["examples"] = evaluate.example_scores(truths, final, classes, partial)
    return scores, final


def evaluate_model(model_path, data_dir, out_dir, every_pair: bool = False) -> dict:
    """Score the model folder at `model_path` on the labelled dataset `data_dir` and write out_dir/metrics.json:
    its test split (as named in model.json; each must be in the data) or, with every_pair, every pair. The
    dataset's classes must be the model's. Returns the metrics."""
    from maskpair.data.loader import DataLoader
    from maskpair.training.segmenter import Segmenter, model_folder

    segmenter = Segmenter.load(model_path)
    data = DataLoader(data_dir, batch_size=1, cache=False, progress=False)
    if tuple(data.labels) != segmenter.classes:
        raise DataError(f"{data_dir}: classes {', '.join(data.labels)}; the model at {model_path} was trained on "
                        f"{', '.join(segmenter.classes)}")
    if every_pair:
        names, split = data.names, "all"
    else:
        names, split = segmenter.info["splits"]["test"], "test"
        missing = [name for name in names if name not in data.sizes]
        if missing:
            raise DataError(f"{data_dir}: the model's test examples {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''} are not in this dataset (score every pair: --all)")
    scores, _ = score_examples(segmenter, data, names)
    metrics = {**scores, "split": split, "model": str(model_folder(model_path).resolve()),
               "data_dir": str(Path(data_dir).resolve()), "largest_structure": segmenter.largest_structure}
    evaluate.write_metrics(metrics, out_dir)
    return metrics
