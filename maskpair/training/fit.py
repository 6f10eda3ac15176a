"""The fit loop: train on the train split, keep the weights with the best val loss, time every step."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from maskpair.training.legacy_keras import import_tensorflow

tf = import_tensorflow()

WARMUP_STEPS = 2  # the first steps of a `fit` trace the graph and start the iterator: left out of step timings


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic, so a run repeats exactly.

    deterministic_ops False leaves TensorFlow's op determinism as it is: XLA refuses to compile a max-pooling
    gradient while it is on ("no deterministic XLA implementation"), so a jit-compiled step runs without it."""
    tf.keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


class StepTimer(tf.keras.callbacks.Callback):
    """Start time and wall time of every training step (batch begin to end; includes any wait for the batch)."""

    def __init__(self):
        super().__init__()
        self.seconds, self.starts = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()
        self.starts.append(self._start)

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class EpochBar(tf.keras.callbacks.Callback):
    """A tqdm progress bar over the epochs, with the last train and val loss and the time left at the pace so far.

    tqdm's own `tqdm.keras.TqdmCallback` derives from Keras 3's Callback (it imports `keras`), not from tf-keras'
    that segmentation_models' models use, so this drives a tqdm bar from a tf-keras callback instead."""

    def __init__(self, description: str, epochs: int):
        super().__init__()
        self.description, self.epochs = description, epochs

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.epochs, desc=self.description, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        losses = {key: f"{value:.4f}" for key, value in (logs or {}).items() if key in ("loss", "val_loss")}
        self.bar.set_postfix(losses, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()  # early stopping ends it before `epochs`: the bar says how many ran


def fit_inputs(strategy, data, ready_times=None):
    """(train, val) inputs for `model.fit`: the loader's datasets. Under MultiWorkerMirroredStrategy each worker's
    loader already holds its shard of train in one replica's batches, so they go to `tf.distribute` as they are,
    not re-sharded or re-batched (a generator-backed dataset cannot be sharded by TensorFlow anyway)."""
    def train(_context=None):
        return data.tf_dataset("train", ready_times=ready_times)

    def val(_context=None):
        return data.tf_dataset("val")

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return train(), val()
    return strategy.distribute_datasets_from_function(train), strategy.distribute_datasets_from_function(val)


def fit_with_checkpoint(model, data, output_dir, epochs: int, patience: int, lr_patience: int,
                        passes_per_epoch: int = 1, verbose: int = 0, steps_per_pass: int | None = None,
                        progress: str | None = None) -> dict:
    """Fit on the train split (batches as the loader's augmentation makes them), monitor the val loss on whole
    val images, restore the best weights at the end; an epoch is `passes_per_epoch` passes over the train split.
    steps_per_pass: steps of one pass (default: the loader's); workers of a cluster must all take the same number.
    output_dir None: no checkpoint file is written (the best weights are restored from memory all the same).
    progress: a progress bar over the epochs, with this description (None: none).

    Returns the history, the best epoch, the wall time and per-step timings."""
    timer = StepTimer()
    callbacks = [
        tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=lr_patience, min_lr=1e-5),
        # restores the best weights from memory: workers other than the chief keep no checkpoint file to load
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        timer,
    ]
    if progress is not None:
        callbacks.append(EpochBar(progress, epochs))
    if output_dir is not None:
        # TensorFlow checkpoint format, not .h5: tf-keras's h5 loader fails on MirroredStrategy's batch-norm
        # variables. Under MultiWorkerMirroredStrategy only the chief keeps it (Keras writes the others' to a
        # temporary folder)
        checkpoint = Path(output_dir) / "checkpoints" / "best.weights"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        callbacks.insert(0, tf.keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss",
                                                               save_best_only=True, save_weights_only=True))
    start, ready_times = time.perf_counter(), []
    train, val = fit_inputs(model.distribute_strategy, data, ready_times)
    history = model.fit(train, steps_per_epoch=passes_per_epoch * (steps_per_pass or data.steps_per_epoch("train")),
                        epochs=epochs, validation_data=val, validation_steps=data.steps_per_epoch("val"),
                        callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    val_loss = history.history["val_loss"]
    return {"history": {k: [float(v) for v in values] for k, values in history.history.items()},
            "best_epoch": int(np.argmin(val_loss)) + 1, "epochs_run": len(val_loss), "train_seconds": seconds,
            "step_seconds": timer.seconds, "step_starts": timer.starts, "batch_ready_times": ready_times}


def weights_digest(weights) -> str:
    """sha256 of a model's weights (`model.get_weights()`), array by array: equal digests, identical weights."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def input_wait_share(report: dict, warmup: int = WARMUP_STEPS) -> float:
    """Share of training time that steps spent blocked on their input: step k consumes the k-th batch and waits
    max(0, ready time - step start) for it; summed over steps after `warmup` (tracing), over their total time.
    An upper bound: a step begins with Keras' own bookkeeping before it asks for its batch."""
    ready, starts, durations = report["batch_ready_times"], report["step_starts"], report["step_seconds"]
    n = min(len(ready), len(starts), len(durations))
    waits = [max(0.0, r - s) for r, s in zip(ready[warmup:n], starts[warmup:n])]
    total = sum(durations[warmup:n])
    return sum(waits) / total if total else 0.0


def training_summary(report: dict) -> dict:
    """The scalar facts of a `fit_with_checkpoint` report, for metrics.json."""
    steps = report["step_seconds"][WARMUP_STEPS:] or report["step_seconds"]
    return {"epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            "train_seconds": round(report["train_seconds"], 1),
            "median_step_seconds": round(float(np.median(steps)), 4) if steps else None,
            "best_val_loss": min(report["history"]["val_loss"]),
            "input_wait_share": round(input_wait_share(report), 4)}
