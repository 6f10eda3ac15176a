"""The fit loop: train on the train split, keep the weights with the best val loss, time every step."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from legacy_keras import import_tensorflow

tf = import_tensorflow()

WARMUP_STEPS = 2  # the first steps of a `fit` trace the graph and start the iterator: left out of step timings


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic, so a run repeats exactly."""
    tf.keras.utils.set_random_seed(seed)
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


def fit_with_checkpoint(model, data, output_dir, epochs: int, patience: int, lr_patience: int,
                        passes_per_epoch: int = 1, verbose: int = 0) -> dict:
    """Fit on the train split (batches as the loader's augmentation makes them), monitor the val loss on whole
    val images, restore the best weights at the end; an epoch is `passes_per_epoch` passes over the train split.

    Returns the history, the best epoch, the wall time and per-step timings."""
    # TensorFlow checkpoint format, not .h5: tf-keras's h5 loader fails on MirroredStrategy's batch-norm variables
    checkpoint = Path(output_dir) / "checkpoints" / "best.weights"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    callbacks = [
        tf.keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True,
                                           save_weights_only=True),
        tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=lr_patience, min_lr=1e-5),
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        timer,
    ]
    start, ready_times = time.perf_counter(), []
    history = model.fit(data.tf_dataset("train", ready_times=ready_times),
                        steps_per_epoch=passes_per_epoch * data.steps_per_epoch("train"), epochs=epochs,
                        validation_data=data.tf_dataset("val"), validation_steps=data.steps_per_epoch("val"),
                        callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    model.load_weights(str(checkpoint))
    val_loss = history.history["val_loss"]
    return {"history": {k: [float(v) for v in values] for k, values in history.history.items()},
            "best_epoch": int(np.argmin(val_loss)) + 1, "epochs_run": len(val_loss), "train_seconds": seconds,
            "step_seconds": timer.seconds, "step_starts": timer.starts, "batch_ready_times": ready_times}


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
