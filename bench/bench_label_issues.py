"""How well the label-issue ranking puts planted errors first: cleanlab's label quality score (what
label_issues.py ranks by) against the project's own per-class disagreement score, on the same out-of-fold
predictions. Also the untouched ranking, and where chosen examples rank in it.

    python bench/bench_label_issues.py                          # the example data, 4 folds (~25 min on 2 cores)
    python bench/bench_label_issues.py DATA --watch 4 11 17     # any dataset; where these names rank

The out-of-fold softmax maps are computed once (label_issues.out_of_fold_probabilities, the settings
`run.py label-issues` uses) and kept under ~/.cache/segkit-bench/label-issues/<dataset>-<folds>f-<seed>s/.
Then every example that can take it gets each planted error in turn (label_issues' planters: a structure
erased or relabelled, three seeds each; the mask dilated by 2, 3 and 4 px; its 2, 3 or 4 lowest structures
deleted) and is scored again with its own out-of-fold maps: exact, because the model that predicted an
example never trained on its mask. Its rank is its place among the other examples' untouched scores
(1 = the most suspect of all), reported per kind of error as recall at 1, 3 and 5 and the mean rank.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import label_issues as li
import loader
from description import IGNORE_INDEX

PROJECT_DIR = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segkit-bench" / "label-issues"


def out_of_fold(data_dir: Path, folds: int, seed: int) -> tuple[dict, dict, tuple, bool, float]:
    """({name: softmax float16}, {name: mask}, classes, partial_labels, seconds to compute), cached."""
    cache = CACHE_ROOT / f"{data_dir.resolve().name}-{folds}f-{seed}s"
    data = loader.DataLoader(data_dir, cache=False, progress=False)
    done = cache / "seconds.txt"
    if not done.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        config = li.label_issue_config(seed=seed)
        for _, _, name, probabilities in li.out_of_fold_probabilities(data_dir, config, folds):
            np.save(cache / f"{name}.npy", probabilities.astype(np.float16))
        done.write_text(f"{time.perf_counter() - start:.1f}\n")
    probabilities = {name: np.load(cache / f"{name}.npy").astype(np.float32) for name in data.names}
    masks = {name: data.get_mask(name) for name in data.names}
    return probabilities, masks, data.labels, data.description.partial_labels, float(done.read_text())


def both_scores(mask, probabilities, classes, partial: bool) -> dict:
    """{scorer: score (low = likely wrong)} of one mask, from one `score_example` call."""
    entry = li.score_example(mask, probabilities, classes, partial)[0]
    own = min((c["score"] for c in entry["classes"].values() if c["annotated"]), default=1.0)
    return {"cleanlab label quality (ranks)": entry["score"], "own worst-class score": own}


def planted_variants(mask: np.ndarray, n_classes: int) -> list[tuple[str, np.ndarray]]:
    variants = []
    for seed in range(3):
        for error, make in (("erased structure", lambda m, r: li.erase_structure(m, r)),
                            ("relabelled structure", lambda m, r: li.relabel_structure(m, r, n_classes))):
            variants.append((error, make(mask, np.random.default_rng(seed))))
    variants += [("dilated mask", li.dilate_labels(mask, px)) for px in (2, 3, 4)]
    variants += [("lowest structures deleted", li.delete_lowest(mask, n)) for n in (2, 3, 4)]
    return [(error, planted) for error, planted in variants if planted is not None]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, nargs="?", default=PROJECT_DIR / "data" / "spine-mri")
    parser.add_argument("--folds", type=int, default=li.FOLDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--watch", nargs="*", default=[], help="names whose untouched rank to report")
    args = parser.parse_args(argv)
    probabilities, masks, classes, partial, seconds = out_of_fold(args.data_dir, args.folds, args.seed)
    names = list(masks)
    print(f"{args.data_dir}: {len(names)} examples, {args.folds} folds; out-of-fold maps took {seconds / 60:.1f} min")
    variants = {name: planted_variants(masks[name], len(classes)) for name in names
                if (masks[name] != IGNORE_INDEX).any()}
    untouched_all = {name: both_scores(masks[name], probabilities[name], classes, partial) for name in names}
    planted_all = {name: [(error, both_scores(mask, probabilities[name], classes, partial)) for error, mask in planted]
                   for name, planted in variants.items()}
    for label in untouched_all[names[0]]:
        untouched = {name: scores[label] for name, scores in untouched_all.items()}
        order = sorted(names, key=lambda name: (untouched[name], loader.natural_key(name)))
        print(f"\n== {label}\nuntouched, most suspect first: {' '.join(order)}")
        if args.watch:
            print("watched: " + ", ".join(f"{name} rank {order.index(name) + 1}" for name in args.watch if name in order))
        ranks: dict[str, list[int]] = {}
        for name, planted in planted_all.items():
            others = np.array([untouched[other] for other in names if other != name])
            for error, scores in planted:
                ranks.setdefault(error, []).append(1 + int(np.sum(others < scores[label])))
        print(f"{'planted error':<28}{'n':>4}{'r@1':>7}{'r@3':>7}{'r@5':>7}{'mean rank':>11}")
        for error, found in [*ranks.items(), ("all", [r for found in ranks.values() for r in found])]:
            found = np.array(found)
            print(f"{error:<28}{len(found):>4}" + "".join(f"{np.mean(found <= k):>7.2f}" for k in (1, 3, 5))
                  + f"{found.mean():>11.2f}")


if __name__ == "__main__":
    main()
