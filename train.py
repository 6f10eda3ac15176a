"""Train and evaluate a `segmentation_models` UNet on a `loader.DataLoader`, aware of partially labelled masks.

A class absent from a mask is *unknown* there, not background: the loss and the scores only use it where labelled.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import legacy_keras  # noqa: F401  (sets up legacy Keras before TensorFlow is imported)

import numpy as np
from scipy import ndimage

import audit
import figures
import loader

tf = legacy_keras.import_tensorflow()
import keras_adapters  # noqa: E402,F401  (the loader's tf.data adapter, used by fit_with_checkpoint)

FOREGROUND = (1, 2)  # label values scored and reported (0 is background)
EPSILON = 1e-6


# ---------------------------------------------------------------- splits and labels


def make_splits(data_dir, seed: int = 0, fold: int = -1, n_folds: int = 5, val_fraction: float = 0.2):
    """The train/val/test names: a seeded split with a 20% test share when fold is -1, else fold `fold` of a
    k-fold; either way `val_fraction` of all examples is val and the rest train."""
    names = list(loader.pair_files(data_dir))
    if fold < 0:
        return loader.split_names(names, (round(0.8 - val_fraction, 9), val_fraction, 0.2), seed)
    return loader.kfold_splits(names, n_folds, fold, seed, val_fraction)


def train_without_flagged(splits: dict, flags_by_name: dict, codes) -> dict:
    """The splits with every train example that carries an audit flag of one of `codes` (e.g. "short_column")
    moved to `loader.SET_ASIDE`, so a mask the audit doubts does not teach the network; val and test stay as
    they are, so scores remain comparable with and without the option."""
    if isinstance(codes, str) or not set(codes) <= set(audit.FLAG_CODES):
        raise ValueError(f"flag codes must be a list drawn from {sorted(audit.FLAG_CODES)}, got {codes!r}")
    codes = set(codes)
    doubted = [name for name in splits["train"]
               if codes & {flag.split(":")[0] for flag in flags_by_name.get(name, [])}]
    return {**splits, "train": [name for name in splits["train"] if name not in doubted],
            loader.SET_ASIDE: sorted([*splits.get(loader.SET_ASIDE, []), *doubted], key=loader.natural_key)}


def present_classes(mask: np.ndarray, n_classes: int = len(loader.LABELS)) -> np.ndarray:
    """Boolean (C,): which labels occur in an integer mask (a class is labelled in an example iff present)."""
    return np.bincount(np.asarray(mask).ravel(), minlength=n_classes)[:n_classes] > 0


def labels_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Softmax output (..., C) -> integer label map (...) as uint8 (argmax; ties go to the lower label)."""
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def describe_labelled(names, masks: dict, split: str = "", labels=loader.LABELS) -> str:
    """One line: how many of `names` label each foreground class, and which masks are empty."""
    present = {name: present_classes(masks[name], len(labels)) for name in names}
    counts = ", ".join(f"{labels[v]} {sum(p[v] for p in present.values())}" for v in FOREGROUND)
    empty = [name for name, p in present.items() if not p[list(FOREGROUND)].any()]
    return f"{split} {len(names)} examples: labelling {counts}; empty masks: {', '.join(empty) or 'none'}".strip()


# ---------------------------------------------------------------- losses (TensorFlow)


def known_classes(y_true):
    """(B, 1, 1, C) 1.0 where a class is labelled in that example; background always counts as labelled."""
    present = tf.reduce_max(y_true, axis=(1, 2), keepdims=True)
    return tf.concat([tf.ones_like(present[..., :1]), present[..., 1:]], axis=-1)


def marginal_targets(y_true):
    """One-hot targets where a background pixel may also be any class unlabelled in its example.

    Training on p(background) + p(unlabelled classes) at those pixels teaches nothing about the unlabelled
    classes (the marginal loss of Shi et al. 2021), so a mask without vertebrae never says "no vertebra here".
    """
    return y_true + y_true[..., :1] * (1.0 - known_classes(y_true))


def partial_focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.25):
    """Focal loss on the marginal probability of each pixel's possible labels; mean over pixels."""
    probability = tf.reduce_sum(marginal_targets(y_true) * y_pred, axis=-1)
    probability = tf.clip_by_value(probability, EPSILON, 1.0)
    return tf.reduce_mean(-alpha * (1.0 - probability) ** gamma * tf.math.log(probability))


def partial_dice_loss(y_true, y_pred, classes=FOREGROUND):
    """1 - soft Dice per class, pixels pooled over the examples where that class is labelled; mean over classes
    that are labelled in at least one example of the batch (0 when none is)."""
    classes = list(classes)
    known = tf.gather(known_classes(y_true), classes, axis=-1)  # (B, 1, 1, K)
    truth = tf.gather(y_true, classes, axis=-1) * known
    prediction = tf.gather(y_pred, classes, axis=-1) * known
    intersection = tf.reduce_sum(truth * prediction, axis=(0, 1, 2))
    total = tf.reduce_sum(truth + prediction, axis=(0, 1, 2))
    dice = (2.0 * intersection + EPSILON) / (total + EPSILON)
    return mean_over_labelled_classes(1.0 - dice, known)


def mean_over_labelled_classes(per_class_loss, known):
    """Mean of a (K,) per-class loss over the classes that `known` (B, 1, 1, K) marks as labelled in at least one
    example of the batch; 0 when none is."""
    labelled = tf.cast(tf.reduce_max(known, axis=(0, 1, 2)) > 0, per_class_loss.dtype)
    return tf.reduce_sum(per_class_loss * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)


def lovasz_gradient(sorted_truth):
    """Gradient of the Jaccard loss's Lovász extension at truth values sorted by decreasing error (Berman et al.
    2018, Alg. 1): the increase in 1 - IoU as each pixel, in that order, is counted wrong."""
    total = tf.reduce_sum(sorted_truth)
    intersection = total - tf.cumsum(sorted_truth)
    union = total + tf.cumsum(1.0 - sorted_truth)
    jaccard = 1.0 - intersection / union
    return tf.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


def partial_lovasz_loss(y_true, y_pred, classes=FOREGROUND):
    """Lovász-softmax (a convex surrogate of 1 - IoU) per class, pixels pooled over the examples where that class
    is labelled; mean over classes labelled in at least one example of the batch (0 when none is)."""
    classes = list(classes)
    known = tf.gather(known_classes(y_true), classes, axis=-1)  # (B, 1, 1, K)
    losses = []
    for k, value in enumerate(classes):
        truth = tf.reshape(y_true[..., value] * known[..., k], [-1])
        errors = tf.reshape(tf.abs(y_true[..., value] - y_pred[..., value]) * known[..., k], [-1])
        order = tf.argsort(errors, direction="DESCENDING")  # pixels out of scope have error 0: last, adding 0
        gradient = tf.stop_gradient(lovasz_gradient(tf.gather(truth, order)))
        losses.append(tf.tensordot(tf.gather(errors, order), gradient, axes=1))
    return mean_over_labelled_classes(tf.stack(losses), known)


def make_loss(partial_labels: bool = True, focal_weight: float = 1.0, lovasz_weight: float = 0.0):
    """Dice + focal (+ Lovász): the partial-label versions above, or `segmentation_models`' naive Dice + focal
    (for comparison)."""
    if partial_labels:
        def dice_focal_loss(y_true, y_pred):
            loss = partial_dice_loss(y_true, y_pred) + focal_weight * partial_focal_loss(y_true, y_pred)
            return loss + lovasz_weight * partial_lovasz_loss(y_true, y_pred) if lovasz_weight else loss

        return dice_focal_loss
    import segmentation_models as sm

    return sm.losses.DiceLoss(class_indexes=list(FOREGROUND)) + focal_weight * sm.losses.CategoricalFocalLoss()


# ---------------------------------------------------------------- model


def make_strategy(name: str = "default", cpu_devices: int = 2):
    """`tf.distribute` strategy by name: "default", or "mirrored" over the GPUs, else over `cpu_devices`
    logical CPUs (which must be configured before TensorFlow initialises its devices)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name != "mirrored":
        raise ValueError(f'strategy must be "default" or "mirrored", got {name!r}')
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    except RuntimeError:  # devices already initialised: use whatever logical CPUs exist
        pass
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


LITE_DECODER = (128, 64, 32, 16, 8)  # half segmentation_models' widths, ~2x faster on CPU; notebook 04 widens the two finest
UNET_MULTIPLE = 32  # a UNet with 5 poolings needs sides divisible by 2**5


@tf.keras.utils.register_keras_serializable(package="spine_seg")
class PadToMultiple(tf.keras.layers.Layer):
    """Zero-pad height and width at the bottom/right up to the next multiple (a no-op when already divisible)."""

    def __init__(self, multiple: int = UNET_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, images):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        return tf.pad(images, [[0, 0], [0, -height % self.multiple], [0, -width % self.multiple], [0, 0]])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@tf.keras.utils.register_keras_serializable(package="spine_seg")
class CropToInput(tf.keras.layers.Layer):
    """Crop a padded output back to the height and width of the original input."""

    def call(self, inputs):
        output, original = inputs
        return output[:, : tf.shape(original)[1], : tf.shape(original)[2]]


def with_full_resolution_skip(unet, n_classes: int):
    """`unet` with its finest decoder stage rebuilt to also see the input image, as a skip connection.

    A ResNet encoder halves the resolution in its first convolution, so `segmentation_models`' finest stage
    only refines upsampled half-resolution features; concatenating the image gives it full-resolution edges.
    """
    layers = tf.keras.layers
    width = unet.get_layer("decoder_stage4a_conv").filters
    upsampled = unet.get_layer("decoder_stage4_upsampling").output
    features = layers.Concatenate(name="full_res_concat")([upsampled, unet.input])
    for part in "ab":  # segmentation_models' Conv3x3BnReLU, with the stage's width
        features = layers.Conv2D(width, 3, padding="same", use_bias=False,
                                 kernel_initializer="he_uniform", name=f"full_res_{part}_conv")(features)
        features = layers.BatchNormalization(name=f"full_res_{part}_bn")(features)
        features = layers.Activation("relu", name=f"full_res_{part}_relu")(features)
    logits = layers.Conv2D(n_classes, 3, padding="same", name="full_res_final_conv")(features)
    return tf.keras.Model(unet.input, layers.Activation("softmax", name="full_res_softmax")(logits), name="unet_full_res")


def build_model(backbone: str = "resnet18", n_classes: int = len(loader.LABELS), learning_rate: float = 1e-3,
                partial_labels: bool = True, focal_weight: float = 1.0, strategy=None, decoder_filters=LITE_DECODER,
                ema_momentum: float | None = None, full_resolution_skip: bool = False, lovasz_weight: float = 0.0):
    """A compiled softmax UNet on one grey channel (no pretrained weights), with Dice+focal loss (plus
    `lovasz_weight` x Lovász-softmax), IoU/F-score.
    Images of any size go in: they are zero-padded to a multiple of 32 inside the model and the output is
    cropped back, so the loss and predictions only ever see real pixels. With `ema_momentum` the optimizer
    also keeps an exponential moving average of the weights (see `ValidateAveragedWeights`); with
    `full_resolution_skip` the finest decoder stage also sees the image (see `with_full_resolution_skip`)."""
    import segmentation_models as sm

    with (strategy or tf.distribute.get_strategy()).scope():
        unet = sm.Unet(backbone, encoder_weights=None, input_shape=(None, None, 1), classes=n_classes,
                       activation="softmax", decoder_filters=tuple(decoder_filters))
        if full_resolution_skip:
            unet = with_full_resolution_skip(unet, n_classes)
        images = tf.keras.Input((None, None, 1), name="image")
        probabilities = CropToInput(name="crop_to_input")([unet(PadToMultiple(name="pad_to_32")(images)), images])
        model = tf.keras.Model(images, probabilities, name=f"unet_{backbone}")
        metrics = [sm.metrics.IOUScore(threshold=0.5, class_indexes=list(FOREGROUND)),
                   sm.metrics.FScore(threshold=0.5, class_indexes=list(FOREGROUND))]
        optimizer = tf.keras.optimizers.Adam(learning_rate, use_ema=ema_momentum is not None,
                                             ema_momentum=0.99 if ema_momentum is None else ema_momentum)
        model.compile(optimizer, make_loss(partial_labels, focal_weight, lovasz_weight), metrics)
    return model


# ---------------------------------------------------------------- training


WARMUP_STEPS = 2  # the first steps of a `fit` trace the graph and start the iterator: left out of step timings


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


class TimeLimit(tf.keras.callbacks.Callback):
    """Stop training after the epoch that crosses `minutes` of wall time (a guard for slow, shared machines)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.minutes, self.stopped_epoch = minutes, None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self._start > 60 * self.minutes:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class ValidateAveragedWeights(tf.keras.callbacks.Callback):
    """With an EMA optimizer, validate (and so early-stop and checkpoint) the averaged weights while training
    goes on with the raw ones. Keras only swaps the average in when `fit` ends. Put it last in the callback list:
    it swaps the raw weights back at epoch end, after ModelCheckpoint has saved the averaged ones."""

    def on_train_begin(self, logs=None):
        self._raw = None

    def on_test_begin(self, logs=None):
        if self._raw is None and getattr(self.model.optimizer, "use_ema", False):
            variables = self.model.trainable_variables
            self._raw = [variable.numpy() for variable in variables]
            self.model.optimizer.finalize_variable_values(variables)

    def on_epoch_end(self, epoch, logs=None):
        if self._raw is not None:
            for variable, raw in zip(self.model.trainable_variables, self._raw):
                variable.assign(raw)
            self._raw = None


# Vertebra brightness differs 2x between these scans (mean 38 to 76 of 255) and a model trained with the loader's
# default jitter changed its vertebra Dice by up to 0.09 when a test image was only darkened (gain 0.8 or
# gamma 1.33): wider intensity jitter than `loader.Augment`'s defaults for training.
WIDE_INTENSITY = dict(contrast=0.3, gamma=(0.7, 1.45))


def augmentation(augment: bool, crop: int | None, **options) -> loader.Augment | None:
    """The train-split augmentation: `loader.Augment` with WIDE_INTENSITY jitter (or none) plus random crop x crop
    windows; `options` override any other `loader.Augment` field (lists, as papermill passes ranges, become tuples).

    Crops make a step ~2.5x cheaper at 160 of 256 px, so a CPU budget buys more steps at full resolution
    (prediction runs on whole images: the network is fully convolutional); cropping inside the augmentation
    also resamples only the crop's pixels. A class cut out of a crop only becomes "unknown" for that crop under
    the partial-label loss, so a crop never teaches a wrong label.
    """
    if augment:
        options = {name: tuple(value) if isinstance(value, list) else value for name, value in options.items()}
        return loader.Augment(**{**WIDE_INTENSITY, **options}, crop=crop or None)
    still = dict(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, brightness=0.0, contrast=0.0, gamma=(1.0, 1.0))
    return loader.Augment(**still, crop=crop) if crop else None


def fit_with_checkpoint(model, data: loader.DataLoader, output_dir, epochs: int = 100, patience: int = 25,
                        lr_patience: int = 8, time_limit_minutes: float = 10.0, passes_per_epoch: int = 1,
                        verbose: int = 0):
    """Fit on the train split (its batches as the loader's augmentation makes them), monitor val loss on whole val images, keep the best
    weights (restored at the end); an epoch is `passes_per_epoch` passes over the train split. Returns a report
    dict with the history, best epoch, wall time and the per-step times."""
    # TensorFlow checkpoint format, not .h5: tf-keras's h5 loader fails on MirroredStrategy's batch-norm variables
    checkpoint = Path(output_dir) / "checkpoints" / "best.weights"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    timer, limit = StepTimer(), TimeLimit(time_limit_minutes)
    callbacks = [
        tf.keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True,
                                           save_weights_only=True),
        tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=lr_patience, min_lr=1e-5),
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        timer, limit, ValidateAveragedWeights(),
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
            "time_limited": limit.stopped_epoch is not None, "step_seconds": timer.seconds,
            "step_starts": timer.starts, "batch_ready_times": ready_times}


def training_summary(report: dict) -> dict:
    """The scalar facts of a `fit_with_checkpoint` report, for metrics.json."""
    steps = report["step_seconds"][WARMUP_STEPS:] or report["step_seconds"]
    return {"epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            "train_seconds": round(report["train_seconds"], 1), "time_limited": report["time_limited"],
            "median_step_seconds": float(np.median(steps)) if steps else None,
            "best_val_loss": min(report["history"]["val_loss"])}


def save_model(model, output_dir) -> Path:
    """Save the architecture and weights (no optimizer) as output_dir/model.h5; load it with compile=False after
    `import train` (which registers the padding layers)."""
    path = Path(output_dir) / "model.h5"
    model.save(str(path), include_optimizer=False)
    return path


def step_seconds(model, dataset, steps: int) -> list[float]:
    """Wall time of each of `steps` training steps of `fit` on `dataset` (this trains the model)."""
    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
    return timer.seconds


def slowdown_probe(model, data: loader.DataLoader, rounds: int = 3, steps: int = 12,
                   warmup: int = WARMUP_STEPS) -> dict:
    """Step times of `fit` fed by the real loader (its `tf.data` adapter, augmentation included) and by one train
    batch held in memory, in alternating rounds so both see the same model and the same machine load; the first
    `warmup` steps of each round (iterator start-up) are left out. The weights are restored afterwards."""
    weights = model.get_weights()
    feeds = {"loader": data.tf_dataset("train"),
             "memory": tf.data.Dataset.from_tensors(next(data.get_batch("train"))).repeat()}
    seconds = {name: [] for name in feeds}
    for _ in range(rounds):
        for name, dataset in feeds.items():
            seconds[name] += step_seconds(model, dataset, steps)[warmup:]
    model.set_weights(weights)
    return seconds


def blocked_share(batch_ready_times, step_starts, step_durations, warmup: int = WARMUP_STEPS) -> float:
    """Share of training time that steps spent blocked on their input: step k consumes the k-th batch, and waits
    max(0, ready time - step start) for it; summed over steps after `warmup` (tracing) and divided by their
    total wall time. An upper bound: the step begins with Keras' own bookkeeping before it asks for the batch."""
    n = min(len(batch_ready_times), len(step_starts), len(step_durations))
    waits = [max(0.0, ready - begin) for ready, begin in zip(batch_ready_times[warmup:n], step_starts[warmup:n])]
    total = sum(step_durations[warmup:n])
    return sum(waits) / total if total else 0.0


def slowdown_share(pipeline_seconds, memory_seconds) -> float:
    """How much slower steps fed by the real pipeline are than steps fed from memory: (median step with the
    pipeline - median step from memory) / median step with the pipeline, floored at 0."""
    real, memory = float(np.median(pipeline_seconds)), float(np.median(memory_seconds))
    return max(0.0, (real - memory) / real)


# ---------------------------------------------------------------- prediction and scores


def predict_labels(model, data: loader.DataLoader, names, batch_size: int = 4,
                   flip_average: bool = False) -> dict[str, np.ndarray]:
    """Full-resolution integer label map (H, W) uint8 for each named example; flip_average also predicts the
    left-right mirrored images and averages the two softmax maps (training augments with that flip)."""
    images = np.stack([data.get_image(name) for name in names])
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    if flip_average:
        mirrored = model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)
        probabilities = (probabilities + mirrored[:, :, ::-1]) / 2
    return dict(zip(names, labels_from_probabilities(probabilities)))


def keep_largest_structure(labels: np.ndarray, bridge_px: int | None = 10) -> np.ndarray:
    """Set to background every predicted foreground pixel outside the largest structure: the connected piece
    with the most foreground pixels once the foreground is grown by `bridge_px` (so pieces up to ~2 x bridge_px
    apart count as one; None keeps everything). The spine is one chain of discs and vertebrae; a blob away from it
    (tissue elsewhere taken for vertebra) is a false positive."""
    labels = np.asarray(labels)
    foreground = labels > 0
    if bridge_px is None or not foreground.any():
        return labels
    # not binary_dilation(iterations=0): scipy reads 0 as "dilate until nothing changes"
    grown = ndimage.binary_dilation(foreground, iterations=bridge_px) if bridge_px else foreground
    pieces, count = ndimage.label(grown)
    sizes = ndimage.sum(foreground, pieces, range(1, count + 1))
    largest = pieces == 1 + int(np.argmax(sizes))
    return np.where(largest & foreground, labels, 0).astype(labels.dtype)


def removed_pixels(before: dict, after: dict) -> dict[str, int]:
    """Per example, how many predicted foreground pixels post-processing set to background."""
    return {name: int(np.count_nonzero((before[name] > 0) & (after[name] == 0))) for name in before}


def pooled_overlap(truths, predictions, label: int, partial_labels: bool = True):
    """(intersection, |truth|, |prediction|) for one label, pixels pooled over the examples; with
    partial_labels only over examples whose mask contains the label."""
    intersection = truth_total = prediction_total = 0
    for truth, prediction in zip(truths, predictions):
        truth_is, predicted_is = truth == label, prediction == label
        if partial_labels and not truth_is.any():
            continue
        intersection += int(np.count_nonzero(truth_is & predicted_is))
        truth_total += int(np.count_nonzero(truth_is))
        prediction_total += int(np.count_nonzero(predicted_is))
    return intersection, truth_total, prediction_total


def pooled_scores(truths, predictions, labels=loader.LABELS, partial_labels: bool = True) -> dict:
    """{"dice": {label: ...}, "iou": {label: ...}} for the foreground labels; NaN when no example qualifies."""
    scores = {"dice": {}, "iou": {}}
    for value in FOREGROUND:
        intersection, truth, prediction = pooled_overlap(truths, predictions, value, partial_labels)
        union = truth + prediction - intersection
        scores["dice"][labels[value]] = 2 * intersection / (truth + prediction) if truth + prediction else float("nan")
        scores["iou"][labels[value]] = intersection / union if union else float("nan")
    return scores


def evaluate(truths: dict, predictions: dict, labels=loader.LABELS) -> dict:
    """Partial-label-aware scores (each class only on examples labelling it), the naive pooled ones, and which
    examples were scored for each class."""
    names = list(truths)
    truth_maps, prediction_maps = [truths[n] for n in names], [predictions[n] for n in names]
    aware = pooled_scores(truth_maps, prediction_maps, labels, partial_labels=True)
    naive = pooled_scores(truth_maps, prediction_maps, labels, partial_labels=False)
    scored = {labels[v]: [n for n in names if present_classes(truths[n], len(labels))[v]] for v in FOREGROUND}
    return {**aware, "dice_naive": naive["dice"], "iou_naive": naive["iou"], "scored_examples": scored}


def format_scores(scores: dict) -> str:
    """A small text table: Dice and IoU per class, partial-label aware and naive."""
    lines = [f"{'class':<10}{'Dice':>8}{'IoU':>8}{'naive Dice':>12}{'naive IoU':>11}  scored on"]
    for label in scores["dice"]:
        lines.append(f"{label:<10}{scores['dice'][label]:>8.4f}{scores['iou'][label]:>8.4f}"
                     f"{scores['dice_naive'][label]:>12.4f}{scores['iou_naive'][label]:>11.4f}  "
                     f"{', '.join(scores['scored_examples'][label])}")
    return "\n".join(lines)


def predicted_beyond_labelled_rows(truth: np.ndarray, prediction: np.ndarray) -> int:
    """Predicted foreground pixels in rows above or below every labelled pixel of the mask (all of them for an
    empty mask): many of these suggest a mask that stops short of the anatomy, not a model error."""
    span = audit.labelled_rows(truth)
    foreground = np.asarray(prediction) > 0
    if span is None:
        return int(np.count_nonzero(foreground))
    return int(np.count_nonzero(foreground[: span[0]]) + np.count_nonzero(foreground[span[1] + 1:]))


def error_share_on_mask_edges(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Share of the wrongly labelled pixels that lie on a label change of the mask (`audit.boundary_map`: both
    sides of it, 4-neighbourhood); NaN when none is wrong. Near 1: the model and the mask disagree only about
    where boundaries run, within a pixel; lower: whole pieces missed or invented."""
    truth = np.asarray(truth)
    wrong = truth != np.asarray(prediction)
    wrong_count = np.count_nonzero(wrong)
    if not wrong_count:
        return float("nan")
    return np.count_nonzero(wrong & (audit.boundary_map(truth) > 0)) / wrong_count


def example_scores(truths: dict, predictions: dict, labels=loader.LABELS) -> list[dict]:
    """Per example: Dice of each class its mask labels (NaN where it does not), the predicted foreground
    pixels beyond its labelled rows and the share of errors on mask edges; worst vertebra Dice first, to show
    where the pooled errors come from."""
    rows = []
    for name in truths:
        truth, prediction = truths[name], predictions[name]
        dice = pooled_scores([truth], [prediction], labels)["dice"]
        rows.append({"name": name, **dice,
                     "beyond_labelled_rows": predicted_beyond_labelled_rows(truth, prediction),
                     "errors_on_edges": error_share_on_mask_edges(truth, prediction)})
    worst = labels[FOREGROUND[-1]]
    return sorted(rows, key=lambda row: np.inf if np.isnan(row[worst]) else row[worst])


def format_example_scores(rows: list[dict], labels=loader.LABELS, mask_flags: dict | None = None) -> str:
    """A text table of `example_scores` rows ('-' where a mask lacks the class), with a last column of each
    example's audit flags when `mask_flags` (name -> list of flags) is given."""
    classes = [labels[v] for v in FOREGROUND]
    lines = [f"{'example':<10}" + "".join(f"{c + ' Dice':>15}" for c in classes)
             + f"{'beyond labelled rows':>22}{'errors on mask edges':>22}" + ("   mask flags" if mask_flags else "")]
    for row in rows:
        cells = "".join(f"{'-' if np.isnan(row[c]) else f'{row[c]:.4f}':>15}" for c in classes)
        edges = "-" if np.isnan(row["errors_on_edges"]) else f"{row['errors_on_edges']:.0%}"
        flags = f"   {', '.join(mask_flags.get(row['name'], [])) or '-'}" if mask_flags else ""
        lines.append(f"{row['name']:<10}{cells}{row['beyond_labelled_rows']:>19} px{edges:>22}{flags}")
    return "\n".join(lines)


TARGET_DICE = {"disc": 0.88, "vertebra": 0.92}  # the project's quality target (held-out, partial-label aware)
INPUT_WAIT_LIMIT = 0.02


def conclusion(metrics: dict) -> str:
    """What the metrics support, in sentences computed from them (targets met or missed, naive vs aware)."""
    dice, naive = metrics["dice"], metrics["dice_naive"]
    verdicts = [f"{label} {dice[label]:.3f} ({'meets' if dice[label] >= target else 'misses'} the {target} target)"
                for label, target in TARGET_DICE.items() if label in dice]
    gaps = [f"{label} {naive[label] - dice[label]:+.3f}" for label in dice]
    wait, slowdown = metrics["input_wait_share"], metrics["loader_slowdown_share"]
    before = metrics.get("dice_before_postprocessing")
    postprocessing = [] if before is None else [
        "Keeping only the largest predicted structure changed Dice by "
        + ", ".join(f"{label} {dice[label] - before[label]:+.3f}" for label in dice) + "."]
    return "\n".join([
        "Held-out Dice over the test examples that label each class: " + "; ".join(verdicts) + ".",
        *postprocessing,
        "Naive pooled Dice differs by " + ", ".join(gaps) + " (negative: predictions on examples that lack the "
        "label are counted as errors).",
        f"Steps waited for their input {100 * wait:.1f}% of the training time "
        f"({'within' if wait <= INPUT_WAIT_LIMIT else 'above'} the {100 * INPUT_WAIT_LIMIT:.0f}% budget); the loader's "
        f"CPU made steps {100 * slowdown:.1f}% slower than steps fed from memory; "
        f"training ran {metrics['training']['epochs_run']} epochs in {metrics['training']['train_seconds'] / 60:.1f} min.",
    ])


def save_predictions(predictions: dict, output_dir) -> Path:
    """Write each label map to output_dir/predictions/<name>.npy; returns that folder."""
    folder = Path(output_dir) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in predictions.items():
        np.save(folder / f"{name}.npy", labels)
    return folder


def write_metrics(metrics: dict, output_dir) -> Path:
    """Write output_dir/metrics.json (NaN written as null, so any JSON reader accepts it)."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(_nan_to_none(metrics), indent=2) + "\n")
    return path


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


# ---------------------------------------------------------------- figures

def plot_learning_curves(history: dict, best_epoch: int | None = None):
    """Loss and foreground IoU per epoch, train vs val, with the kept (best val loss) epoch marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, key in zip(axes, ("loss", "iou_score")):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label=f"train {key}")
        ax.plot(epochs, history[f"val_{key}"], label=f"val {key}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_overlays(data: loader.DataLoader, predictions: dict, names=None, max_examples: int = 4):
    """Rows of (image, truth overlay, prediction overlay) for test examples; disc yellow, vertebra blue."""
    import matplotlib.pyplot as plt

    names = list(names or predictions)[:max_examples]
    fig, axes = plt.subplots(len(names), 3, figsize=(9, 3 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        image = data.get_image(name)[..., 0]
        for ax, (title, labels) in zip(row, (("image", None), ("truth", data.get_mask(name)),
                                             ("prediction", predictions[name]))):
            ax.imshow(image, cmap="gray") if labels is None else ax.imshow(figures.overlay_rgb(image, labels))
            ax.set_title(f"{name}: {title}")
            ax.axis("off")
    fig.tight_layout()
    return fig
