"""One training run, start to end: the data as configured -> UNet -> fit -> held-out predictions and scores ->
metrics.json, predictions/ and the model folder (model/) in an output folder. Notebook 04 and `maskpair train` both
call these steps.
With TF_CONFIG set, the process is one worker of a cluster that trains together (`run_worker`, docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from maskpair import evaluate
from maskpair.audit import flagged_by_audit
from maskpair.data.augment import Augment
from maskpair.data.files import natural_key, pair_files
from maskpair.data.loader import DataLoader
from maskpair.data.set_aside import reviewed_problems, set_aside
from maskpair.data.splits import fitting_batch_size, kfold_splits, split_names
from maskpair.training import fit
from maskpair.training import model as unet
from maskpair.training.config import TrainConfig
from maskpair.training.predict import keep_largest_structure
from maskpair.training.scoring import predict_at_own_size, score_examples
from maskpair.training.segmenter import Segmenter

# Wider intensity jitter than `Augment`'s default: scans of one kind still differ 2x in brightness
# (the example data: vertebra means 38 to 76 of 255), see docs/experiments.md.
WIDE_INTENSITY = dict(contrast=0.3, gamma=(0.7, 1.45))
BRIDGE_PX = 10  # "largest structure": predicted pieces up to ~2 x BRIDGE_PX apart count as one


def make_splits(names, config: TrainConfig) -> dict:
    """train/val/test names: a seeded split with 20% test (fold -1), else fold `fold` of a seeded k-fold; either
    way `val_fraction` of all examples is val."""
    if config.fold < 0:
        return split_names(names, (round(0.8 - config.val_fraction, 9), config.val_fraction, 0.2), config.seed)
    return kfold_splits(names, config.n_folds, config.fold, config.seed, config.val_fraction)


def augmentation(config: TrainConfig) -> Augment | None:
    """The train-split augmentation: `Augment` with WIDE_INTENSITY jitter (or none), in random crops.

    Crops make a step ~2.5x cheaper at 160 of 256 px, so a CPU budget buys more steps at full resolution
    (prediction runs on whole images: the network is fully convolutional). With partial labels, a class cut out
    of a crop is only "unknown" for that crop, so a crop never teaches a wrong label."""
    if config.augment:
        return Augment(**WIDE_INTENSITY, crop=config.crop)
    if config.crop:
        return Augment(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, brightness=0.0,
                              contrast=0.0, gamma=(1.0, 1.0), crop=config.crop)
    return None


def plan_splits(data_dir, config: TrainConfig) -> dict:
    """train/val/test names of this run, the train examples doubted by audit flags or review verdicts set aside."""
    names = list(pair_files(data_dir))
    splits = make_splits(names, config)
    if config.train_without_flags:
        splits = set_aside(splits, flagged_by_audit(data_dir, config.train_without_flags))
    if config.review_log is not None:
        splits = set_aside(splits, reviewed_problems(config.review_log, names))
    return splits


def prepare_data(data_dir, config: TrainConfig) -> DataLoader:
    """The loader for this run: splits, examples set aside (audit flags, review verdicts), batch size, augmentation."""
    splits = plan_splits(data_dir, config)
    batch_size = fitting_batch_size(splits, config.batch_size)
    return DataLoader(data_dir, batch_size, config.seed, splits, augment=augmentation(config))


def shard_names(names, workers: int, worker: int) -> list[str]:
    """Worker `worker`'s shard of `names` among `workers`: every `workers`-th name in natural order, from position
    `worker`. Every machine computes the same shards, disjoint and together all of `names`."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker must be in 0..{workers - 1}, got {worker}")
    return sorted(names, key=natural_key)[worker::workers]


def cluster_position(strategy) -> tuple[int, int]:
    """(this worker's index, number of workers) in the strategy's cluster (TF_CONFIG); (0, 1) on one machine.
    The chief is 0, then the workers in order: TensorFlow numbers a cluster's input pipelines the same way."""
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver else {}
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if chiefs + workers == 0:
        return 0, 1
    return (0 if resolver.task_type == "chief" else chiefs + resolver.task_id), chiefs + workers


def replica_batch_size(batch_size: int, replicas: int) -> int:
    """One replica's share of the global batch (a cluster has a replica per device of each worker)."""
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} does not divide among {replicas} replicas (workers x devices): "
                         f"use a multiple of {replicas}")
    return batch_size // replicas


def build_model(data: DataLoader, config: TrainConfig, strategy=None):
    """The compiled UNet for this data: its channels and classes, the configured encoder, loss, XLA and precision."""
    return unet.build_model(data.n_channels, data.n_classes, config.backbone, config.decoder_filters,
                            config.learning_rate, data.description.partial_labels, config.focal_weight, strategy,
                            jit_compile=config.jit_compile, policy=unet.precision_policy(config.mixed_precision),
                            encoder_weights=config.encoder_weights)


def train_model(data: DataLoader, config: TrainConfig, output_dir, strategy=None, verbose: int = 0,
                steps_per_pass: int | None = None, progress: str | None = None):
    """Seed everything, build and fit; returns (model with the best val-loss weights, fit report).
    output_dir: where the best checkpoint is kept (None: nowhere); verbose: Keras' fit verbosity (2: a line per
    epoch); steps_per_pass: see `fit.fit_with_checkpoint`; progress: a progress bar over the epochs, described so."""
    fit.seed_everything(config.seed, deterministic_ops=not config.jit_compile)
    model = build_model(data, config, strategy)
    report = fit.fit_with_checkpoint(model, data, output_dir, config.epochs, config.patience, config.lr_patience,
                                     config.passes_per_epoch, verbose, steps_per_pass, progress)
    return model, report


def choose_largest_structure(model, data: DataLoader, config: TrainConfig) -> dict:
    """Whether to keep only the largest predicted structure: as configured ("on"/"off"), or with "auto" when that
    scores at least as well on the val split as not doing it (nnU-Net decides its post-processing the same way)."""
    if config.largest_structure != "auto":
        return {"applied": config.largest_structure == "on", "bridge_px": BRIDGE_PX,
                "reason": f"largest_structure={config.largest_structure}"}
    segmenter = Segmenter.from_training(model, data, config)  # nothing post-processed yet
    raw, truths = predict_at_own_size(segmenter, data, data.splits["val"])
    kept = {name: keep_largest_structure(labels, BRIDGE_PX) for name, labels in raw.items()}
    partial = data.description.partial_labels
    without = evaluate.evaluate(truths, raw, data.labels, partial)["mean_dice"]
    with_it = evaluate.evaluate(truths, kept, data.labels, partial)["mean_dice"]
    applied = bool(with_it >= without)
    return {"applied": applied, "bridge_px": BRIDGE_PX, "val_mean_dice_with": with_it,
            "val_mean_dice_without": without, "reason": f"val mean Dice {with_it:.4f} with it, {without:.4f} without"}


def test_metrics(segmenter: Segmenter, data: DataLoader, config: TrainConfig, report: dict):
    """(metrics, final label maps) of the test split, predicted by `segmenter` as any saved model predicts:
    per-class and per-example scores after post-processing, Dice before it, the training summary, the dataset and
    the whole configuration."""
    scores, final = score_examples(segmenter, data, data.splits["test"])
    metrics = {**scores,
               "largest_structure": segmenter.largest_structure,
               "training": fit.training_summary(report),
               "dataset": {"name": data.description.name, "classes": list(data.labels),
                           "channels": data.n_channels, "partial_labels": data.description.partial_labels,
                           "splits": {split: len(names) for split, names in data.splits.items()}},
               "config": {**config.to_dict(), "batch_size": data.batch_size}}
    return metrics, final


def write_outputs(segmenter: Segmenter, metrics: dict, predictions: dict, output_dir) -> Path:
    """metrics.json, predictions/<name>.npy (uint8 class-index maps of the test split) and the model folder
    (model/: Keras file, SavedModel, model.json) into output_dir."""
    output_dir = Path(output_dir)
    folder = output_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in predictions.items():
        np.save(folder / f"{name}.npy", labels)
    segmenter.save(output_dir)
    return evaluate.write_metrics(metrics, output_dir)


def evaluate_and_save(model, data: DataLoader, config: TrainConfig, report: dict, output_dir):
    """After training: choose the post-processing on val, score the test split, write everything (`write_outputs`);
    returns (metrics, the test split's final label maps)."""
    segmenter = Segmenter.from_training(model, data, config, choose_largest_structure(model, data, config))
    metrics, predictions = test_metrics(segmenter, data, config, report)
    write_outputs(segmenter, metrics, predictions, output_dir)
    return metrics, predictions


def run(data_dir, output_dir, config: TrainConfig = TrainConfig(), verbose: int = 0) -> dict:
    """Train and evaluate as configured; writes into output_dir and returns the metrics. With TF_CONFIG set:
    `run_worker`."""
    strategy = unet.make_strategy(config.strategy)  # first: logical CPUs must be set before TF starts its devices
    if isinstance(strategy, unet.tf.distribute.MultiWorkerMirroredStrategy):
        return run_worker(data_dir, output_dir, config, strategy, verbose)
    data = prepare_data(data_dir, config)
    model, report = train_model(data, config, output_dir, strategy, verbose)
    return evaluate_and_save(model, data, config, report, output_dir)[0]


def run_worker(data_dir, output_dir, config: TrainConfig, strategy, verbose: int = 0) -> dict:
    """One worker of a cluster (TF_CONFIG): train on this worker's shard of the train split, in step with the
    others, in replica batches that together make the configured batch; then the chief (worker 0) predicts, scores
    and writes output_dir as `run` does, and the other workers write nothing there.

    Returns the chief's metrics, with "workers", "shards" and "weights_sha256" added; the other workers return
    their "worker" index, "workers", "shard" and "weights_sha256"."""
    worker, workers = cluster_position(strategy)
    chief = worker == 0
    splits = plan_splits(data_dir, config)
    batch_size = fitting_batch_size(splits, config.batch_size)  # the global batch, over all replicas
    shards = {k: shard_names(splits["train"], workers, k) for k in range(workers)}
    others = [name for k, shard in shards.items() if k != worker for name in shard]
    data = DataLoader(data_dir, replica_batch_size(batch_size, strategy.num_replicas_in_sync), config.seed,
                             set_aside(splits, others), augment=augmentation(config))
    # one pass as one machine counts it with the global batch: the same on every worker (shards differ by one
    # example); a worker that stopped a step early would leave the others waiting in a collective step
    steps = -(-len(splits["train"]) // batch_size)
    # the other workers' checkpoints (Keras deletes them as it writes them) go to a folder of their own
    with contextlib.nullcontext(output_dir) if chief else tempfile.TemporaryDirectory() as fit_dir:
        model, report = train_model(data, config, fit_dir, strategy, verbose if chief else 0, steps)
    weights = model.get_weights()  # on every worker at once: reading batch-norm statistics is a collective step
    digest = fit.weights_digest(weights)
    result = {"worker": worker, "workers": workers, "shard": shards[worker], "weights_sha256": digest}
    if chief:
        model = plain_model(data, config, weights)
        segmenter = Segmenter.from_training(model, data, config, choose_largest_structure(model, data, config))
        segmenter.info["splits"] = splits  # the run's, not this worker's shard of train
        result, predictions = test_metrics(segmenter, data, config, report)
        result["dataset"]["splits"] = {split: len(names) for split, names in splits.items()}
        result["config"]["batch_size"] = batch_size
        result.update(workers=workers, shards={str(k): shard for k, shard in shards.items()}, weights_sha256=digest)
        write_outputs(segmenter, result, predictions, output_dir)
    # the others wait for the chief: TensorFlow reports a worker that leaves while the chief runs as crashed
    wait_for_every_worker(strategy)
    return result


def plain_model(data: DataLoader, config: TrainConfig, weights):
    """The UNet with `weights`, outside any strategy: `predict` under MultiWorkerMirroredStrategy is a collective
    step that every worker would have to join."""
    model = build_model(data, config)
    model.set_weights(weights)
    return model


def wait_for_every_worker(strategy) -> None:
    """Return once every worker of the strategy's cluster has called this (a sum over all replicas)."""
    tf = unet.tf

    def sum_of_ones():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)

    tf.function(sum_of_ones)()
