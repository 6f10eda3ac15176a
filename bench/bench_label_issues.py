"""How well the label-issue ranking puts planted errors first, and how that depends on the epochs each fold model
trains: the ranking label_issues.py makes (the more suspicious of cleanlab's two label quality measures) against
each measure alone and the project's own per-class disagreement score, on the same out-of-fold predictions, for
each epoch budget. Also the untouched ranking, and where chosen examples rank in it.

    python bench/bench_label_issues.py                          # the example data, 4 folds of 10, 20 and 40 epochs
    python bench/bench_label_issues.py DATA --watch 4 11 17     # any dataset; where these names rank
    python bench/bench_label_issues.py --generated em           # generated data nothing was tuned on (also street,
                                                                # blobs: see GENERATED)
    python bench/bench_label_issues.py --timing 200 --epochs 3  # the time of one fold on 200 generated pairs, and
                                                                # what a whole run takes, extrapolated

Every dataset's fold models train with the settings of `maskpair label-issues` (label_issues.label_issue_config)
for the largest of `--epochs`; the smaller budgets come out of the same trainings: `Snapshots` keeps, at the end
of each budget's epoch, the weights a run of that many epochs ends with (early stopping's rule: the best val loss
so far), which is exact because a run's first N epochs do not depend on how many follow (data, augmentation and
learning-rate schedule are seeded per epoch; checked by `python bench/bench_label_issues.py --check-snapshots`).
A budget's time is the time the folds took to reach its last epoch, plus predicting.
The out-of-fold softmax maps are kept under ~/.cache/maskpair-bench/label-issues/<dataset>-<folds>f-<seed>s-<E>e/<N>/
(E the largest budget, N each budget). Then every example that can take it gets each planted error in turn
(label_issues' planters: a structure erased or relabelled, three seeds each; the mask dilated by 2, 3 and 4 px;
its 2, 3 or 4 lowest structures deleted) and is scored again with its own out-of-fold maps: exact, because the
model that predicted an example never trained on its mask. Its rank is its place among the other examples,
untouched (1 = the most suspect of all), reported per kind of error as recall at 1, 3 and 5 and the mean rank.

--timing N runs fold 0 of 4 (`label_issues.run_fold`, the command's settings, `--epochs` at most) on N generated
pairs (256x256 RGB smooth label maps, 6 classes) and reports each epoch's seconds, and the rest of the fold
(reading, building, predicting, scoring, drawing): from them, the time of a run of 10, 20 and 40 epochs per fold
on one machine (4 folds one after another) and on 4 (a fold each), extrapolated.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from maskpair.data.description import IGNORE_INDEX
from maskpair.data.files import natural_key
from maskpair.data.loader import DataLoader
from maskpair.label_issues import planting
from maskpair.label_issues import rank as li
from maskpair.label_issues.folds import label_issue_config
from maskpair.training import config

PROJECT_DIR = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskpair-bench" / "label-issues"
# Generated datasets (tests/audit_synthetic.py: hand-drawn-like labels whose outlines wander 1-2 px, as real
# ones do): name -> what it is. Written as images/ + masks/ PNG with a dataset.json.
GENERATED = {
    "street": "40 RGB 192x144 frames of 8 slow drives, 11 classes + ignore (CamVid-like)",
    "em": "32 gray 128x128 slices of one cell volume, membrane / cell (ISBI-2012-like)",
    "blobs": "40 RGB 128x128 smooth label maps, 6 classes (two of nearly one colour) + ignore",
}
EPOCH_BUDGETS = (10, 20, 40)  # epochs per fold model compared by default
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


def snapshot_callback(budgets):
    """A Keras callback that keeps, at the end of epoch N for each N in `budgets`, (the weights a run of N epochs
    ends with, seconds since training began). Those weights are early stopping's (`fit.fit_with_checkpoint`:
    EarlyStopping restores the best val loss's weights; a strictly lower loss is better, the first epoch is
    always kept): this callback applies the same rule to its own copy."""
    from maskpair.training.fit import tf

    class Snapshots(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.best_weights, self.taken = np.inf, None, {}
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss")
            better = bool(np.less(loss, self.best))  # a NaN loss is never better
            if better or self.best_weights is None:
                self.best_weights = self.model.get_weights()
            if better:
                self.best = loss
            if epoch + 1 in budgets:
                self.taken[epoch + 1] = (self.best_weights, time.perf_counter() - self.start)

    return Snapshots()


@contextmanager
def fitting_with(callback):
    """Within it, every model `train.train_model` builds fits with `callback` too: the training code takes no
    callbacks of its own, and the bench must train exactly as `maskpair label-issues` does."""
    from maskpair.training import train

    build = train.build_model

    def build_model(*args, **kwargs):
        model = build(*args, **kwargs)
        fit = model.fit
        model.fit = lambda *a, callbacks=(), **k: fit(*a, callbacks=[*callbacks, callback], **k)
        return model

    with mock.patch.object(train, "build_model", build_model):
        yield


def fold_maps(data_dir, settings, budgets):
    """Train one fold's model (`settings`: its fold) for max(budgets) epochs; returns ({budget: seconds to reach
    its last epoch and predict}, {budget: {name: softmax}}) of the fold's test examples, for each budget the
    model a run of that many epochs ends with."""
    from maskpair.training import predict, train

    data = train.prepare_data(data_dir, settings)
    snapshots = snapshot_callback(budgets)
    start = time.perf_counter()
    with fitting_with(snapshots):
        bar = f"fold {settings.fold + 1}/{settings.n_folds}"
        model, report = train.train_model(data, settings, None, progress=bar)
    setup = time.perf_counter() - start - report["train_seconds"]
    final = (model.get_weights(), report["train_seconds"])  # early stopping ended it before the larger budgets
    seconds, maps = {}, {}
    for budget in budgets:
        weights, reached = snapshots.taken.get(budget, final)
        model.set_weights(weights)
        start = time.perf_counter()
        maps[budget] = dict(predict.iter_probabilities(model, data, data.splits["test"], settings.flip_average))
        seconds[budget] = setup + reached + time.perf_counter() - start
    return seconds, maps, report["epochs_run"]


def out_of_fold(data_dir: Path, folds: int, seed: int, budgets) -> tuple[dict, DataLoader, dict]:
    """({budget: {name: softmax float32}}, the dataset's loader, {budget: {"seconds", "epochs_run"}}), cached:
    each example predicted by the model of the fold that holds it out, after each budget of epochs."""
    cache = CACHE_ROOT / f"{data_dir.resolve().name}-{folds}f-{seed}s-{max(budgets)}e"
    data = DataLoader(data_dir, cache=False, progress=False)
    done = cache / "timing.json"
    if not done.is_file():
        timing = {budget: {"seconds": 0.0, "epochs_run": []} for budget in budgets}
        for fold in range(folds):
            settings = label_issue_config(seed=seed, epochs=max(budgets), fold=fold, n_folds=folds)
            seconds, maps, epochs_run = fold_maps(data_dir, settings, budgets)
            for budget in budgets:
                (cache / str(budget)).mkdir(parents=True, exist_ok=True)
                for name, probabilities in maps[budget].items():
                    np.save(cache / str(budget) / f"{name}.npy", probabilities.astype(np.float16))
                timing[budget]["seconds"] += seconds[budget]
                timing[budget]["epochs_run"].append(min(budget, epochs_run))
        done.write_text(json.dumps({str(budget): value for budget, value in timing.items()}, indent=1) + "\n")
    timing = {int(budget): value for budget, value in json.loads(done.read_text()).items()}
    missing = sorted(set(budgets) - set(timing))
    if missing:
        raise SystemExit(f"{cache} has no maps for {missing} epochs: remove it to measure again")
    probabilities = {budget: {name: np.load(cache / str(budget) / f"{name}.npy").astype(np.float32)
                              for name in data.names} for budget in budgets}
    return probabilities, data, timing


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


def planted_ranks(ranking: str, names, untouched: dict, planted: dict) -> dict[str, list[int]]:
    """{planted error: the rank of each planted mask among the other examples, untouched}."""
    ranks: dict[str, list[int]] = {}
    for name, variants in planted.items():
        others = [untouched[other] for other in names if other != name]
        for error, scores in variants:
            ranks.setdefault(error, []).append(rank_first(ranking, scores, others))
    return ranks


def recall_table(ranks: dict[str, list[int]]) -> list[str]:
    """Lines of a table: per planted error (and all), how many, recall at 1, 3 and 5 and the mean rank."""
    lines = [f"{'planted error':<28}{'n':>4}{'r@1':>7}{'r@3':>7}{'r@5':>7}{'mean rank':>11}"]
    for error, found in [*ranks.items(), ("all", [r for each in ranks.values() for r in each])]:
        found = np.array(found)
        lines.append(f"{error:<28}{len(found):>4}" + "".join(f"{np.mean(found <= k):>7.2f}" for k in (1, 3, 5))
                     + f"{found.mean():>11.2f}")
    return lines


def compare(names, masks, probabilities, data, watch) -> dict[str, list[str]]:
    """{ranking: (report lines, every planted mask's rank)} for one set of out-of-fold maps: the untouched order
    and the planted errors' ranks."""
    untouched = {name: measures(masks[name], probabilities[name], data) for name in names}
    planted = {name: [(error, measures(mask, probabilities[name], data))
                      for error, mask in planted_variants(masks[name], data.n_classes)]
               for name in names if (masks[name] != IGNORE_INDEX).any()}
    reports = {}
    for ranking in RANKINGS:
        order = sorted(names, key=lambda name: (rank_first(ranking, untouched[name],
                                                           [untouched[o] for o in names if o != name]),
                                                natural_key(name)))
        lines = [f"untouched, most suspect first: {' '.join(order[:20])}"]
        if watch:
            lines.append("watched: " + ", ".join(f"{name} rank {order.index(name) + 1}" for name in watch
                                                 if name in order))
        ranks = planted_ranks(ranking, names, untouched, planted)
        reports[ranking] = lines + recall_table(ranks), np.concatenate(list(ranks.values()))
    return reports


def check_snapshots(root: Path) -> None:
    """Train two folds of 2 epochs on a small generated dataset, and of 3 epochs with a snapshot at 2: the maps
    after 2 epochs must be identical (bit for bit)."""
    sys.path.insert(0, str(PROJECT_DIR / "tests"))
    from synthetic import write_blobs

    data_dir = write_blobs(root / "snapshot-check", n=12) if not (root / "snapshot-check").is_dir() else root / "snapshot-check"
    for fold in range(2):
        settings = label_issue_config(fold=fold, n_folds=2, crop=None, passes_per_epoch=2)
        _, alone, _ = fold_maps(data_dir, settings.replace(epochs=2), (2,))
        _, within, _ = fold_maps(data_dir, settings.replace(epochs=3), (2, 3))
        same = all(np.array_equal(alone[2][name], within[2][name]) for name in alone[2])
        print(f"fold {fold}: 2-epoch maps {'identical' if same else 'DIFFERENT'} to the snapshot at 2 of 3 epochs")
        if not same:
            raise SystemExit(1)


def epoch_clock():
    """A Keras callback that notes the time at the start of training and at the end of every epoch."""
    from maskpair.training.fit import tf

    class EpochClock(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter())

    return EpochClock()


def write_timing_data(n: int, root: Path) -> Path:
    """n generated pairs under root/timing-<n> (once): 256x256 RGB smooth label maps, 6 classes + ignore."""
    sys.path.insert(0, str(PROJECT_DIR / "tests"))
    import audit_synthetic as syn

    folder = root / f"timing-{n}"
    if (folder / "dataset.json").is_file():
        return folder
    images, masks = syn.blob_frames(n=n, shape=(256, 256), seed=2)[:2]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(folder / "images" / f"f{k:04d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / f"f{k:04d}.png")
    labels = {**{c: k for k, c in enumerate(syn.BLOB_CLASSES)}, "ignore": syn.IGNORE}
    (folder / "dataset.json").write_text(json.dumps({"name": f"timing-{n}", "labels": labels,
                                                     "channel_names": {"0": "R", "1": "G", "2": "B"}}) + "\n")
    return folder


def time_fold(n: int, epochs: int, folds: int = 4) -> None:
    """Run fold 0 of `folds` on n generated pairs for `epochs` epochs and print its times and the extrapolations."""
    import tempfile

    from maskpair.label_issues.folds import run_fold

    data_dir = write_timing_data(n, CACHE_ROOT / "data")
    clock = epoch_clock()
    load_before = os.getloadavg()
    cpu_before = os.times()
    with tempfile.TemporaryDirectory(prefix="timing-", dir=CACHE_ROOT) as out, fitting_with(clock):
        record = run_fold(data_dir, Path(out) / "folds", 0, folds, label_issue_config(epochs=epochs))
    cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
    summary = record["summary"]
    epoch_seconds = np.diff(clock.times)
    steady = float(np.median(epoch_seconds[1:])) if len(epoch_seconds) > 1 else float(epoch_seconds[0])
    rest = summary["seconds"] - (clock.times[-1] - clock.times[0])  # reading, building, predicting, scoring, drawing
    flagged = sum(entry["flagged"] for entry in record["examples"])
    split = {name: len(summary["split"][name]) for name in ("train", "val", "test")}
    print(f"\n######## {n} generated pairs, fold 1 of {folds} ({split}), {len(epoch_seconds)} epochs")
    print(f"epochs: {', '.join(f'{x:.0f}' for x in epoch_seconds)} s (first with tracing; steady {steady:.0f} s)")
    print(f"rest of the fold: {rest:.0f} s (reading, building, predicting and scoring {split['test']}, drawing "
          f"{flagged} pictures); whole fold {summary['seconds']:.0f} s wall, {cpu:.0f} s CPU "
          f"({cpu / summary['seconds']:.0%}); load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    for budget in EPOCH_BUDGETS:
        fold_seconds = rest + epoch_seconds[0] + (budget - 1) * steady
        print(f"{budget:>3} epochs a fold (no early stop), at this pace: {folds} folds on one machine "
              f"{duration(folds * fold_seconds)}, on {folds} machines {duration(fold_seconds)} (a fold each)")


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, nargs="?", default=PROJECT_DIR / "data" / "spine-mri")
    parser.add_argument("--generated", choices=sorted(GENERATED), help="a generated dataset instead of DATA_DIR")
    parser.add_argument("--folds", type=int, default=config.LABEL_ISSUE_FOLDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs="+", default=EPOCH_BUDGETS, help="epoch budgets per fold model")
    parser.add_argument("--watch", nargs="*", default=[], help="names whose untouched rank to report")
    parser.add_argument("--check-snapshots", action="store_true",
                        help="only check that a budget's snapshot equals a run of that many epochs")
    parser.add_argument("--timing", type=int, nargs="+", metavar="N",
                        help="only time one fold of --epochs (the largest) on N generated pairs, for each N")
    args = parser.parse_args(argv)
    if args.check_snapshots:
        return check_snapshots(CACHE_ROOT / "data")
    if args.timing:
        for n in args.timing:
            time_fold(n, max(args.epochs), args.folds)
        return None
    data_dir = write_generated(args.generated, CACHE_ROOT / "data") if args.generated else args.data_dir
    budgets = sorted(set(args.epochs))
    probabilities, data, timing = out_of_fold(data_dir, args.folds, args.seed, budgets)
    names = data.names
    masks = {name: data.get_mask(name) for name in names}
    what = GENERATED[args.generated] if args.generated else f"{len(names)} examples"
    print(f"{data_dir}: {what}, {args.folds} folds, seed {args.seed}")
    summary = []
    for budget in budgets:
        reports = compare(names, masks, probabilities[budget], data, args.watch)
        runs = timing[budget]["epochs_run"]
        print(f"\n######## {budget} epochs at most per fold (ran {', '.join(map(str, runs))}): out-of-fold maps "
              f"{timing[budget]['seconds'] / 60:.1f} min")
        for ranking, (lines, _) in reports.items():
            print(f"\n== {ranking}\n" + "\n".join(lines))
        summary.append((budget, timing[budget]["seconds"], {r: ranks for r, (_, ranks) in reports.items()}))
    print(f"\n######## summary: planted errors in the top 3 / mean rank, by epochs per fold\n"
          f"{'epochs':>6}{'minutes':>9}  " + "".join(f"{ranking.split(':')[0][:24]:>26}" for ranking in RANKINGS))
    for budget, seconds, ranks in summary:
        print(f"{budget:>6}{seconds / 60:>9.1f}  " + "".join(f"{np.mean(ranks[r] <= 3):.3f} / {ranks[r].mean():.2f}"
                                                            .rjust(26) for r in RANKINGS))


if __name__ == "__main__":
    main()
