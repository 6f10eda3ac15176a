"""Dice + focal loss and the IoU metric, both computed from uint8 label maps on the device.

Batches carry label maps (B, H, W) of class indices with IGNORE_INDEX (255) for ignore and padding pixels; the
one-hot target, the labelled-pixel mask and, with partial labels, the marginal target are made here, inside the
loss, so the input pipeline moves one byte per pixel instead of 4 x classes.

Class 0 (the label with the lowest value) is background, as in nnU-Net: Dice is taken over the other classes.
With partial labels, a class absent from an example's mask is *unknown* there, not background: a background
pixel may then be that class too, and the class's Dice leaves that example out.
"""
from maskpair.training.legacy_keras import import_tensorflow

tf = import_tensorflow()

EPSILON = 1e-6
IOU_SMOOTH = 1e-5  # segmentation_models' IOUScore smoothing, which the metric replaced


def one_hot_targets(labels, n_classes: int):
    """(B, H, W) label maps (any integer or float dtype holding class indices) -> float32 one-hot (B, H, W, K);
    IGNORE_INDEX (>= K: ignore and padding) gives an all-zero row, a pixel without target."""
    return tf.one_hot(tf.cast(labels, tf.int32), n_classes, dtype=tf.float32)


def labelled_pixels(y_true):
    """(B, H, W, 1) 1.0 where a pixel has a target, 0.0 on ignore and padding pixels (all-zero rows)."""
    return tf.reduce_sum(y_true, axis=-1, keepdims=True)


def known_classes(y_true, partial_labels: bool):
    """(B, 1, 1, C) 1.0 where a class counts as labelled in that example: every class, or with partial labels
    the classes present in its mask (background always)."""
    present = tf.reduce_max(y_true, axis=(1, 2), keepdims=True)
    if not partial_labels:
        return tf.ones_like(present)
    return tf.concat([tf.ones_like(present[..., :1]), present[..., 1:]], axis=-1)


def possible_targets(y_true, known):
    """One-hot targets where a background pixel may also be any class unknown in its example.

    Training on p(background) + p(unknown classes) at those pixels teaches nothing about the unknown classes
    (the marginal loss of Shi et al. 2021), so a mask without a class never says "not this class here".
    """
    return y_true + y_true[..., :1] * (1.0 - known)


def focal_loss(y_true, y_pred, known, gamma: float = 2.0, alpha: float = 0.25):
    """Focal loss on the probability of each pixel's possible labels; mean over labelled pixels only."""
    probability = tf.reduce_sum(possible_targets(y_true, known) * y_pred, axis=-1, keepdims=True)
    probability = tf.clip_by_value(probability, EPSILON, 1.0)
    per_pixel = -alpha * (1.0 - probability) ** gamma * tf.math.log(probability)
    labelled = labelled_pixels(y_true)
    return tf.reduce_sum(per_pixel * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)


def dice_loss(y_true, y_pred, known):
    """1 - soft Dice per non-background class, pixels pooled over the examples where the class is known and
    over labelled pixels only; mean over the classes known in at least one example of the batch (0 if none)."""
    known = known[..., 1:]  # (B, 1, 1, C-1)
    scope = labelled_pixels(y_true) * known
    truth = y_true[..., 1:] * scope
    prediction = y_pred[..., 1:] * scope
    intersection = tf.reduce_sum(truth * prediction, axis=(0, 1, 2))
    total = tf.reduce_sum(truth + prediction, axis=(0, 1, 2))
    dice = (2.0 * intersection + EPSILON) / (total + EPSILON)
    counted = tf.cast(tf.reduce_max(known, axis=(0, 1, 2)) > 0, dice.dtype)
    return tf.reduce_sum((1.0 - dice) * counted) / tf.maximum(tf.reduce_sum(counted), 1.0)


def make_loss(partial_labels: bool, focal_weight: float = 1.0):
    """The training loss of (label maps (B, H, W), softmax probabilities (B, H, W, K)): Dice + focal_weight x
    focal, both leaving ignore and padding pixels out."""

    def dice_focal_loss(labels, probabilities):
        probabilities = tf.cast(probabilities, tf.float32)
        y_true = one_hot_targets(labels, probabilities.shape[-1])
        known = known_classes(y_true, partial_labels)
        return dice_loss(y_true, probabilities, known) + focal_weight * focal_loss(y_true, probabilities, known)

    return dice_focal_loss


def make_iou_metric(n_classes: int, threshold: float = 0.5):
    """IoU of the foreground classes (all classes if there is only one) over the batch, a prediction being a
    probability above `threshold`, averaged over the classes; ignore and padding pixels count nowhere.

    segmentation_models' IOUScore(threshold, class_indexes=foreground) on one-hot targets, except that it counted
    predictions on pixels without target (ignore, padding) as false positives."""
    foreground = list(range(1, n_classes)) or [0]

    def iou_score(labels, probabilities):
        y_true = one_hot_targets(labels, n_classes)
        truth = tf.gather(y_true, foreground, axis=-1)
        predicted = tf.cast(tf.gather(tf.cast(probabilities, tf.float32), foreground, axis=-1) > threshold, tf.float32)
        predicted *= labelled_pixels(y_true)
        intersection = tf.reduce_sum(truth * predicted, axis=(0, 1, 2))
        union = tf.reduce_sum(truth + predicted, axis=(0, 1, 2)) - intersection
        return tf.reduce_mean((intersection + IOU_SMOOTH) / (union + IOU_SMOOTH))

    return iou_score
