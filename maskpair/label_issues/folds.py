"""Out-of-fold predictions as independent jobs: fold k of K trains its model, predicts and scores the examples it
holds out and writes them under OUT/folds/fold-k/; the merge ranks all folds' examples into OUT/label_issues.json.
A run of all folds on one machine (`find_label_issues`) does the same in one process.

    maskpair label-issues DATA --out OUT --folds 4 --fold 2     # fold 2 only, on any machine
    maskpair label-issues DATA --out OUT --folds 4 --merge      # once all four are there

A fold's record (`fold.json`) says which fold of how many it is, its split, the settings and the data's identity
(a digest of its files), so the merge refuses folds of another run, other settings or other data, naming what
differs, and names the folds still missing. The split depends on the sorted names and the seed only
(`train.make_splits`), so every machine computes the same one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from maskpair.data.description import DESCRIPTION_FILE
from maskpair.data.files import natural_key, pair_files
from maskpair.data.splits import SPLITS
from maskpair.errors import DataError
from maskpair.jsonio import write_json
from maskpair.label_issues import rank
from maskpair.label_issues.planting import planted_recall
from maskpair.training.config import (
    LABEL_ISSUE_FOLDS,
    LABEL_ISSUE_TRAINING,
    TrainConfig,
)

FOLDS_DIR = "folds"  # under --out: one folder per fold, fold-<k>/
RECORD = "fold.json"


def label_issue_config(**changes) -> TrainConfig:
    """TrainConfig's defaults with the fold models' changes (config.LABEL_ISSUE_TRAINING), then `changes`."""
    return TrainConfig().replace(**{**LABEL_ISSUE_TRAINING, **changes})


def fold_dir(folds_dir, fold: int) -> Path:
    return Path(folds_dir) / f"fold-{fold}"


# ---------------------------------------------------------------- what a run is


def data_identity(data_dir) -> dict:
    """{"examples": how many, "sha256": digest of dataset.json and every pair's file names and bytes, in natural
    name order}: equal on every machine that holds the same data, wherever it lies."""
    data_dir = Path(data_dir)
    digest = hashlib.sha256()
    description = data_dir / DESCRIPTION_FILE
    if description.is_file():
        digest.update(description.read_bytes())
    pairs = pair_files(data_dir)
    for name, files in pairs.items():
        digest.update(name.encode() + b"\0")
        for path in files:
            digest.update(Path(path).relative_to(data_dir).as_posix().encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return {"examples": len(pairs), "sha256": digest.hexdigest()}


def run_settings(data_dir, folds: int, config: TrainConfig, planted: dict | None) -> dict:
    """Everything the folds of one run must share: their number, the training settings (the review log by its
    contents, not its path, which differs between machines), the scoring settings, the planted errors and the
    data's identity."""
    training = {k: v for k, v in config.to_dict().items() if k not in ("fold", "n_folds", "review_log")}
    if config.review_log is not None:
        log = Path(config.review_log)
        training["review_log_sha256"] = hashlib.sha256(log.read_bytes()).hexdigest() if log.is_file() else None
    return {"folds": folds, "training": training,
            "scoring": {"tolerance_px": rank.TOLERANCE_PX, "whole_share": rank.WHOLE_SHARE,
                        "flag_below": rank.FLAG_BELOW},
            "planted": dict(planted or {}), "data": data_identity(data_dir)}


def differences(made: dict, wanted: dict) -> list[str]:
    """'setting X (here Y)' for every run setting in which `made` differs from `wanted`."""
    found = []
    for key, value in wanted.items():
        other = made.get(key)
        if other == value:
            continue
        if key == "training" and isinstance(other, dict):
            found += [f"{name} {other.get(name)!r} (here {setting!r})" for name, setting in value.items()
                      if other.get(name) != setting]
        elif key == "data" and isinstance(other, dict):
            found.append(f"other data ({other.get('examples')} examples, sha256 {str(other.get('sha256'))[:12]}; "
                         f"here {value['examples']}, {value['sha256'][:12]})")
        elif key == "planted" and isinstance(other, dict):
            found.append(f"planted errors in {sorted(other, key=natural_key)} "
                         f"(here {sorted(value, key=natural_key)})")
        else:
            found.append(f"{key} {other!r} (here {value!r})")
    return found


# ---------------------------------------------------------------- one fold


def fold_probabilities(data_dir, config: TrainConfig, fold: int, folds: int, summary: dict, progress: bool = True):
    """Train fold `fold` of `folds`' model (train.make_splits' k-fold: that fold is test) and yield (loader, name,
    softmax (H, W, K)) for each of its test examples, as they are predicted. `summary` receives the fold's
    split, epochs and seconds when it is done.

    With TF_CONFIG set, this process is one worker of a cluster that trains the fold's model together
    (`worker_loader`); only the chief (worker 0) predicts, the others yield nothing and `summary` says which
    worker they were."""
    from maskpair.training import (  # here: scoring and merging need no TensorFlow, whose start-up takes seconds
        model as unet,
    )
    from maskpair.training import predict, train

    strategy = unet.make_strategy(config.strategy)  # first: a cluster's collective ops must be set up before any op
    settings = config.replace(fold=fold, n_folds=folds)
    cluster = isinstance(strategy, unet.tf.distribute.MultiWorkerMirroredStrategy)
    worker, workers = train.cluster_position(strategy) if cluster else (0, 1)
    if cluster:
        splits = train.plan_splits(data_dir, settings)
    else:
        data = train.prepare_data(data_dir, settings)
        splits = data.splits
    empty = [split for split in SPLITS if not splits[split]]
    if empty:
        raise DataError(f"{data_dir}: {sum(map(len, splits.values()))} examples are too few for {folds} folds "
                        f"(fold {fold} would have no {' and no '.join(empty)} examples)")
    names = splits["test"]
    if progress and worker == 0:
        print(f"fold {fold + 1}/{folds}: training on {len(splits['train'])} examples (val {len(splits['val'])})"
              f"{f' with {workers} workers' if cluster else ''}, then predicting {len(names)}", flush=True)
    start = time.perf_counter()
    # no checkpoint file: the best weights, restored from memory, are all that predicts (a file per better
    # epoch wrote 150 MB each time, 11 GB in a run on the 20 example pairs)
    bar = f"fold {fold + 1}/{folds}" if progress and worker == 0 else None
    if cluster:
        data, steps = worker_loader(data_dir, settings, strategy, splits, worker, workers)
        model, report = train.train_model(data, settings, None, strategy, steps_per_pass=steps, progress=bar)
        weights = model.get_weights()  # on every worker at once: reading batch-norm statistics is a collective step
        model = train.plain_model(data, settings, weights) if worker == 0 else None  # predicts outside the cluster
    else:
        model, report = train.train_model(data, settings, None, progress=bar)
    if worker == 0:
        for name, probabilities in predict.iter_probabilities(model, data, names, settings.flip_average):
            yield data, name, probabilities
    if cluster:
        train.wait_for_every_worker(strategy)  # the others wait for the chief: one that leaves looks crashed
    summary.update(fold=fold, test=names, split=splits, workers=workers, worker=worker,
                   epochs_run=report["epochs_run"], best_epoch=report["best_epoch"],
                   train_seconds=round(report["train_seconds"], 1), seconds=round(time.perf_counter() - start, 1))
    if progress and worker == 0:
        print(f"fold {fold + 1}/{folds}: done in {summary['seconds'] / 60:.1f} min "
              f"({summary['epochs_run']} epochs, kept epoch {summary['best_epoch']})", flush=True)


def worker_loader(data_dir, settings: TrainConfig, strategy, splits: dict, worker: int, workers: int):
    """(this worker's loader, steps per pass): as `train.run_worker` trains, this worker's shard of the train
    split (`train.shard_names`) in replica batches that together make the configured batch, and as many steps
    per pass as one machine takes with that batch (the same on every worker)."""
    from maskpair.data.loader import DataLoader
    from maskpair.data.set_aside import set_aside
    from maskpair.data.splits import fitting_batch_size
    from maskpair.training import train

    batch_size = fitting_batch_size(splits, settings.batch_size)  # the global batch, over all replicas
    others = [name for k in range(workers) if k != worker for name in train.shard_names(splits["train"], workers, k)]
    data = DataLoader(data_dir, train.replica_batch_size(batch_size, strategy.num_replicas_in_sync), settings.seed,
                      set_aside(splits, others), augment=train.augmentation(settings))
    return data, -(-len(splits["train"]) // batch_size)


def run_fold(data_dir, folds_dir, fold: int, folds: int = LABEL_ISSUE_FOLDS, config: TrainConfig | None = None,
             planted: dict | None = None, progress: bool = True) -> dict:
    """Train fold `fold` of `folds`, predict and score its test examples and write folds_dir/fold-<fold>/:
    fold.json (the run's settings, the fold's split and summary, its examples' entries, unranked),
    predictions/<name>.npy and pictures/ of its flagged examples (`rank.examine`). Written into a staging
    folder and renamed into place at the end (replacing an earlier one), so an interrupted fold leaves nothing
    half-written. Returns the record; None in a worker of a cluster other than the chief (TF_CONFIG,
    `fold_probabilities`), which writes nothing."""
    config = config or label_issue_config()
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    start = time.perf_counter()
    settings = run_settings(data_dir, folds, config, planted)
    folds_dir = Path(folds_dir)
    folds_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".fold-{fold}-", dir=folds_dir))
    try:
        (staging / "predictions").mkdir()
        (staging / "pictures").mkdir()
        entries, summary, data = [], {}, None
        for data, name, probabilities in fold_probabilities(data_dir, config, fold, folds, summary, progress):
            entries.append(rank.examine(data, name, probabilities, fold, staging))
        if summary["worker"] != 0:
            return None
        summary["seconds"] = round(time.perf_counter() - start, 1)  # with scoring and drawing
        record = {"fold": fold, **settings, "labels": list(data.labels),
                  "dataset": {"name": data.description.name, "partial_labels": data.description.partial_labels},
                  "summary": summary, "examples": entries}
        write_json(staging / RECORD, record)
        staging.chmod(0o755)  # mkdtemp's 0700 would keep the fold from a merge run by another user
        replace_folder(staging, fold_dir(folds_dir, fold))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def replace_folder(new: Path, target: Path) -> None:
    """Rename folder `new` to `target`, replacing a folder there (a directory cannot be renamed over a full one:
    the old one is renamed aside first, then removed)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the merge


def read_folds(data_dir, folds_dir, folds: int, config: TrainConfig, planted: dict | None) -> list[dict]:
    """The records of folds 0..folds-1 under folds_dir, checked: each of this run (same number of folds,
    settings, planted errors and data as asked here), none missing, none of another number of folds beside
    them, and their test examples together every example of the data once. DataError otherwise, one line per
    problem."""
    folds_dir = Path(folds_dir)
    wanted = run_settings(data_dir, folds, config, planted)
    records, problems, missing = [], [], []
    for fold in range(folds):
        path = fold_dir(folds_dir, fold) / RECORD
        if not path.is_file():
            missing.append(fold)
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        found = differences({key: record.get(key) for key in wanted}, wanted)
        if record.get("fold") != fold:
            found.insert(0, f"fold {record.get('fold')} (here {fold})")
        if found:
            problems.append(f"{path}: made with {', '.join(found)}")
        records.append(record)
    others = sorted(path for path in folds_dir.glob("fold-*") if path.name not in
                    {fold_dir(folds_dir, fold).name for fold in range(folds)})
    problems += [f"{path}: a fold of another run (this one has {folds} folds): remove it" for path in others]
    if missing:
        problems.append(f"{folds_dir}: fold{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} of {folds} "
                        f"missing: run label-issues with --fold {missing[0]} (and the same settings) first")
    if problems:
        raise DataError(problems)
    tested = sorted((name for record in records for name in record["summary"]["test"]), key=natural_key)
    if tested != list(pair_files(data_dir)):
        raise DataError(f"{folds_dir}: the folds' test examples are not every example of {data_dir} once")
    return records


def merged_report(data_dir, folds_dir, into, folds: int, config: TrainConfig, planted: dict | None) -> dict:
    """Rank the examples of all folds under folds_dir (`read_folds`) and write into `into`: label_issues.json,
    and predictions/ and pictures/ holding the folds' files (hard links where the file system allows: the folds
    keep theirs, for a later merge). Returns the report."""
    start = time.perf_counter()
    records = read_folds(data_dir, folds_dir, folds, config, planted)
    for folder in ("predictions", "pictures"):
        (Path(into) / folder).mkdir(parents=True, exist_ok=True)
        for record in records:
            shutil.copytree(fold_dir(folds_dir, record["fold"]) / folder, Path(into) / folder, dirs_exist_ok=True,
                            copy_function=link_or_copy)
    entries = [entry for record in records for entry in record["examples"]]
    summaries = [{key: record["summary"][key] for key in ("fold", "test", "epochs_run", "best_epoch",
                                                            "train_seconds", "seconds")} for record in records]
    first = records[0]
    report = {"examples": rank.ranked(entries), "labels": first["labels"],
              "dataset": {**first["dataset"], "data_dir": str(Path(data_dir).resolve()), "examples": len(entries)},
              "settings": {"folds": folds, **first["scoring"], "training": config.to_dict()},
              "folds": summaries,
              "timing": {"seconds": round(sum(s["seconds"] for s in summaries) + time.perf_counter() - start, 1),
                         "train_seconds": round(sum(s["train_seconds"] for s in summaries), 1)}}
    if planted:
        report["planted"] = planted_recall(report, planted)
    write_json(Path(into) / "label_issues.json", report)
    return report


def link_or_copy(source, target) -> None:
    """A hard link to `source` at `target`, or a copy where the file system has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def merge_folds(data_dir, out_dir, folds: int = LABEL_ISSUE_FOLDS, config: TrainConfig | None = None,
                planted: dict | None = None) -> dict:
    """Rank the examples of the folds under out_dir/folds/ into out_dir: label_issues.json, predictions/ and
    pictures/, as `find_label_issues` writes them (staged, then moved into place). Returns the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".label-issues-", dir=out_dir))
    try:
        report = merged_report(data_dir, out_dir / FOLDS_DIR, staging, folds, config or label_issue_config(),
                               planted)
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def find_label_issues(data_dir, out_dir, folds: int = LABEL_ISSUE_FOLDS, config: TrainConfig | None = None,
                      planted: dict | None = None, progress: bool = True) -> dict:
    """Train `folds` models, score every example out-of-fold and write into out_dir: label_issues.json (worst
    first), predictions/<name>.npy (each out-of-fold label map, uint8) and, for flagged examples (a class
    scoring below FLAG_BELOW), pictures/<name>.png (the disagreement picture at the image's size, the review UI's
    panel) and pictures/<name>.sheet.png (mask | prediction | differences). Returns the report.
    planted: {name: error} of errors planted in data_dir (`planted_copy`): the report says where they rank.

    The folds and the merge of `run_fold` and `merge_folds`, one after the other, in a staging folder whose
    results are moved into place at the end, so an interrupted run leaves out_dir as it was."""
    config = config or label_issue_config()
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".label-issues-", dir=out_dir))
    try:
        for fold in range(folds):
            run_fold(data_dir, staging / FOLDS_DIR, fold, folds, config, planted, progress)
        report = merged_report(data_dir, staging / FOLDS_DIR, staging, folds, config, planted)
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def publish(staging: Path, out_dir: Path) -> None:
    """Move a finished run's predictions/, pictures/ and label_issues.json from `staging` into out_dir, replacing
    an earlier run's; the JSON moves last, so it never points at pictures of another run."""
    (out_dir / "label_issues.json").unlink(missing_ok=True)
    for folder in ("predictions", "pictures"):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
        os.replace(staging / folder, out_dir / folder)
    os.replace(staging / "label_issues.json", out_dir / "label_issues.json")
