"""How well the label-issue ranking puts planted errors first: the ranking label_issues.py makes (the more
suspicious of cleanlab's two label quality measures) against each measure alone and the project's own
per-class disagreement score, on the same out-of-fold predictions. Also the untouched ranking, and where
chosen examples rank in it.

    python bench/bench_label_issues.py                          # the example data, 4 folds (~17 min on 2 cores)
    python bench/bench_label_issues.py DATA --watch 4 11 17     # any dataset; where these names rank
    python bench/bench_label_issues.py --generated street       # generated data nothing was tuned on (also em,
                                                                # blobs: see GENERATED)

The out-of-fold softmax maps are computed once (label_issues.out_of_fold_probabilities, the settings
`maskpair label-issues` uses; GENERATED_TRAINING for the generated sets) and kept under
~/.cache/segkit-bench/label-issues/<dataset>-<folds>f-<seed>s/. Then every example that can take it gets each
planted error in turn (label_issues' planters: a structure erased or relabelled, three seeds each; the mask
dilated by 2, 3 and 4 px; its 2, 3 or 4 lowest structures deleted) and is scored again with its own
out-of-fold maps: exact, because the model that predicted an example never trained on its mask. Its rank is
its place among the other examples, untouched (1 = the most suspect of all), reported per kind of error as
recall at 1, 3 and 5 and the mean rank.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskpair.data.description import IGNORE_INDEX
from maskpair.data.files import natural_key
from maskpair.data.loader import DataLoader
from maskpair.label_issues import planting
from maskpair.label_issues import rank as li
from maskpair.training import config

PROJECT_DIR = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segkit-bench" / "label-issues"
# Generated datasets (tests/audit_synthetic.py: hand-drawn-like labels whose outlines wander 1-2 px, as real
# ones do): name -> what it is. Written as images/ + masks/ PNG with a dataset.json.
GENERATED = {
    "street": "40 RGB 192x144 frames of 8 slow drives, 11 classes + ignore (CamVid-like)",
    "em": "32 gray 128x128 slices of one cell volume, membrane / cell (ISBI-2012-like)",
    "blobs": "40 RGB 128x128 smooth label maps, 6 classes (two of nearly one colour) + ignore",
}
# Their fold models train on whole images (128-192 px), for fewer epochs than run.py label-issues' default, so
# the three sets take about 40 minutes on 2 cores.
GENERATED_TRAINING = {"epochs": 20, "passes_per_epoch": 3, "crop": None}
RANKINGS = ("label_issues.py: the more suspicious of both", "cleanlab softmin alone",
            "cleanlab mislabelled share alone", "own worst-class score")


def write_generated(name: str, root: Path) -> Path:
    """Write generated dataset `name` (GENERATED) under root/name once; returns its folder."""
    sys.path.insert(0, str(PROJECT_DIR / "tests"))
    import audit_synthetic as syn

    folder = root / name
    if (folder / "dataset.json").is_file():
        return folder
    if name == "street":
        images, masks, _ = syn.street_scenes(n=40, shape=(144, 192), sequences=8, seed=1)
        labels = {**{c: k for k, c in enumerate(syn.STREET_CLASSES)}, "ignore": syn.IGNORE}
    elif name == "em":
        images, masks = syn.em_slices(n=32, shape=(128, 128), z_step=4, seed=1)[:2]
        labels = {c: k for k, c in enumerate(syn.EM_CLASSES)}
    else:
        images, masks = syn.blob_frames(n=40, shape=(128, 128), seed=1)[:2]
        labels = {**{c: k for k, c in enumerate(syn.BLOB_CLASSES)}, "ignore": syn.IGNORE}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(folder / "images" / f"f{k:03d}.png")  # uint8 already
        Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / f"f{k:03d}.png")
    channels = "RGB" if np.ndim(images[0]) == 3 else "g"
    (folder / "dataset.json").write_text(json.dumps({"name": name, "labels": labels,
                                                     "channel_names": dict(enumerate(channels))}) + "\n")
    return folder


def out_of_fold(data_dir: Path, folds: int, seed: int, training: dict) -> tuple[dict, DataLoader, float]:
    """({name: softmax float32}, the dataset's loader, seconds it took to compute them), cached."""
    cache = CACHE_ROOT / f"{data_dir.resolve().name}-{folds}f-{seed}s"
    data = DataLoader(data_dir, cache=False, progress=False)
    done = cache / "seconds.txt"
    if not done.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        config = li.label_issue_config(seed=seed, **training)
        for _, _, name, probabilities in li.out_of_fold_probabilities(data_dir, config, folds):
            np.save(cache / f"{name}.npy", probabilities.astype(np.float16))
        done.write_text(f"{time.perf_counter() - start:.1f}\n")
    probabilities = {name: np.load(cache / f"{name}.npy").astype(np.float32) for name in data.names}
    return probabilities, data, float(done.read_text())


def measures(mask, probabilities, data) -> tuple[float, float, float]:
    """(softmin, mislabelled share, own worst-class score) of one mask, from one `score_example` call."""
    entry = li.score_example(mask, probabilities, data.labels, data.description.partial_labels)[0]
    own = min((c["score"] for c in entry["classes"].values() if c["annotated"]), default=1.0)
    return entry["softmin"], entry["mislabelled_share"], own


def rank_first(ranking: str, example, others) -> int:
    """Rank (1 = most suspect) of `example`'s measures among the `others`': 1 + how many are strictly more suspect."""
    if ranking == RANKINGS[0]:
        keys = li.suspicion([example[0], *(o[0] for o in others)], [example[1], *(o[1] for o in others)])
        return 1 + sum(key < keys[0] for key in keys[1:])
    column, sign = {RANKINGS[1]: (0, 1), RANKINGS[2]: (1, -1), RANKINGS[3]: (2, 1)}[ranking]
    return 1 + sum(sign * o[column] < sign * example[column] for o in others)


def planted_variants(mask: np.ndarray, n_classes: int) -> list[tuple[str, np.ndarray]]:
    variants = []
    for seed in range(3):
        for error, make in (("erased structure", lambda m, r: planting.erase_structure(m, r)),
                            ("relabelled structure", lambda m, r: planting.relabel_structure(m, r, n_classes))):
            variants.append((error, make(mask, np.random.default_rng(seed))))
    variants += [("dilated mask", planting.dilate_labels(mask, px)) for px in (2, 3, 4)]
    variants += [("lowest structures deleted", planting.delete_lowest(mask, n)) for n in (2, 3, 4)]
    return [(error, planted) for error, planted in variants if planted is not None]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, nargs="?", default=PROJECT_DIR / "data" / "spine-mri")
    parser.add_argument("--generated", choices=sorted(GENERATED), help="a generated dataset instead of DATA_DIR")
    parser.add_argument("--folds", type=int, default=config.LABEL_ISSUE_FOLDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--watch", nargs="*", default=[], help="names whose untouched rank to report")
    args = parser.parse_args(argv)
    data_dir = write_generated(args.generated, CACHE_ROOT / "data") if args.generated else args.data_dir
    probabilities, data, seconds = out_of_fold(data_dir, args.folds, args.seed,
                                               GENERATED_TRAINING if args.generated else {})
    names = data.names
    masks = {name: data.get_mask(name) for name in names}
    what = GENERATED[args.generated] if args.generated else f"{len(names)} examples"
    print(f"{data_dir}: {what}, {args.folds} folds; out-of-fold maps took {seconds / 60:.1f} min")
    untouched = {name: measures(masks[name], probabilities[name], data) for name in names}
    planted = {name: [(error, measures(mask, probabilities[name], data))
                      for error, mask in planted_variants(masks[name], data.n_classes)]
               for name in names if (masks[name] != IGNORE_INDEX).any()}
    for ranking in RANKINGS:
        order = sorted(names, key=lambda name: (rank_first(ranking, untouched[name],
                                                           [untouched[o] for o in names if o != name]),
                                                natural_key(name)))
        print(f"\n== {ranking}\nuntouched, most suspect first: {' '.join(order[:20])}")
        if args.watch:
            print("watched: " + ", ".join(f"{name} rank {order.index(name) + 1}" for name in args.watch if name in order))
        ranks: dict[str, list[int]] = {}
        for name, variants in planted.items():
            others = [untouched[other] for other in names if other != name]
            for error, scores in variants:
                ranks.setdefault(error, []).append(rank_first(ranking, scores, others))
        print(f"{'planted error':<28}{'n':>4}{'r@1':>7}{'r@3':>7}{'r@5':>7}{'mean rank':>11}")
        for error, found in [*ranks.items(), ("all", [r for found in ranks.values() for r in found])]:
            found = np.array(found)
            print(f"{error:<28}{len(found):>4}" + "".join(f"{np.mean(found <= k):>7.2f}" for k in (1, 3, 5))
                  + f"{found.mean():>11.2f}")


if __name__ == "__main__":
    main()
