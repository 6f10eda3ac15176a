"""The Dice + focal loss and the IoU metric, from uint8 label maps: by hand, with partial labels, and with ignore /
padding pixels (255: an all-zero one-hot row inside the loss)."""
import numpy as np
import pytest

from maskpair.training import losses
from maskpair.training.legacy_keras import import_segmentation_models

tf = losses.tf


def onehot(mask, n_classes=3):
    """(B, H, W) class indices -> the float32 one-hot tensor the loss makes of them (255: an all-zero row)."""
    return losses.one_hot_targets(labels(mask), n_classes)


def labels(mask):
    """(B, H, W) class indices (255 = no target) -> the uint8 label-map tensor batches carry."""
    return tf.constant(np.asarray(mask, dtype=np.uint8))


def probabilities(rows):
    """Nested per-pixel class probabilities -> float32 tensor (B, H, W, C)."""
    return tf.constant(np.asarray(rows, dtype=np.float32))


def known(y, partial=True):
    return losses.known_classes(y, partial)


def test_focal_loss_by_hand():
    y = onehot([[[1]]])  # one pixel of class 1; class 2 not in this example
    loss = losses.focal_loss(y, probabilities([[[[0.3, 0.5, 0.2]]]]), known(y))
    assert float(loss) == pytest.approx(-0.25 * 0.5**2 * np.log(0.5), rel=1e-5)


def test_with_partial_labels_a_background_pixel_may_be_a_class_the_example_does_not_label():
    y = onehot([[[0, 1]]])  # background and class 1; class 2 unlabelled in this example
    says_background = probabilities([[[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]]])
    says_class_2 = probabilities([[[[0.05, 0.05, 0.9], [0.1, 0.8, 0.1]]]])
    assert float(losses.focal_loss(y, says_background, known(y))) == pytest.approx(
        float(losses.focal_loss(y, says_class_2, known(y))), rel=1e-6)
    # without partial labels (or once the example labels class 2) calling background class 2 costs
    assert float(losses.focal_loss(y, says_class_2, known(y, False))) > float(
        losses.focal_loss(y, says_background, known(y, False))) + 0.01


def test_dice_loss_by_hand_leaves_an_unlabelled_class_out():
    y = onehot([[[1, 1, 0, 0]]])
    p = probabilities([[[[0, 1, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0, 1]]]])
    # class 1: intersection 1.5, |truth| + |prediction| = 2 + 1.5 -> Dice 3/3.5; class 2 is not in the mean
    assert float(losses.dice_loss(y, p, known(y))) == pytest.approx(1 - 3 / 3.5, rel=1e-5)
    # without partial labels class 2 counts: no truth, 1.5 predicted -> Dice ~0, loss ~1
    assert float(losses.dice_loss(y, p, known(y, False))) == pytest.approx((1 - 3 / 3.5 + 1) / 2, rel=1e-4)


def test_dice_loss_pools_a_class_only_over_examples_that_label_it():
    y = onehot([[[2, 0]], [[1, 0]]])  # example 0 labels class 2 only, example 1 class 1 only
    p = probabilities([[[[0, 0, 1], [0, 1, 0]]], [[[0, 1, 0], [0, 0, 1]]]])
    assert float(losses.dice_loss(y, p, known(y))) == pytest.approx(0.0, abs=1e-5)


def test_ignore_pixels_change_neither_loss_nor_gradient():
    rng = np.random.default_rng(0)
    logits = tf.Variable(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    mask = rng.integers(0, 3, size=(2, 4, 4))
    ignored = mask.copy()
    ignored[:, :, 3] = 255  # the last column carries no target
    for partial in (True, False):
        loss_fn = losses.make_loss(partial_labels=partial)
        with tf.GradientTape() as tape:
            loss = loss_fn(labels(ignored), tf.nn.softmax(logits))
        gradient = tape.gradient(loss, logits).numpy()
        assert np.isfinite(float(loss))
        assert np.abs(gradient[:, :, 3]).max() == 0  # nothing flows from ignored pixels
        # the same loss as on the image without that column
        cut = tf.Variable(logits.numpy()[:, :, :3])
        assert float(loss_fn(labels(mask[:, :, :3]), tf.nn.softmax(cut))) == pytest.approx(float(loss), rel=1e-5)


def test_an_empty_mask_gives_no_loss_and_no_gradient_under_partial_labels():
    y = labels(np.zeros((1, 4, 4), int))
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.make_loss(partial_labels=True)(y, tf.nn.softmax(logits))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, logits)))) < 1e-6


def test_an_all_ignored_batch_gives_zero_loss_not_nan():
    y = labels(np.full((1, 3, 3), 255))
    p = tf.nn.softmax(tf.zeros((1, 3, 3, 3)))
    assert float(losses.make_loss(False)(y, p)) == pytest.approx(0.0, abs=1e-6)


def test_many_classes():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 12, size=(2, 8, 8))
    perfect = onehot(mask, 12)
    assert float(losses.make_loss(False)(labels(mask), perfect)) == pytest.approx(0.0, abs=1e-4)
    assert float(losses.make_loss(False)(labels(mask), tf.nn.softmax(tf.zeros((2, 8, 8, 12))))) > 0.5


def test_the_loss_takes_label_maps_as_keras_hands_them_and_float16_probabilities():
    mask = np.array([[[0, 1, 255], [2, 1, 0]]])
    p = tf.nn.softmax(tf.constant(np.random.default_rng(2).normal(size=(1, 2, 3, 3)).astype(np.float32)))
    loss_fn = losses.make_loss(partial_labels=True)
    expected = float(loss_fn(labels(mask), p))
    assert float(loss_fn(tf.cast(labels(mask), tf.float32), p)) == expected  # Keras may cast targets to float
    assert float(loss_fn(labels(mask), tf.cast(p, tf.float16))) == pytest.approx(expected, rel=1e-3)  # mixed precision


def test_iou_counts_labelled_pixels_only_and_matches_segmentation_models_without_ignore():
    sm = import_segmentation_models()
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 3, size=(2, 6, 6))
    p = tf.nn.softmax(tf.constant(rng.normal(size=(2, 6, 6, 3)).astype(np.float32) * 3))
    iou = losses.make_iou_metric(3)
    reference = sm.metrics.IOUScore(threshold=0.5, class_indexes=[1, 2])  # the metric it replaced, on one-hot targets
    assert float(iou(labels(mask), p)) == pytest.approx(float(reference(onehot(mask), p)), rel=1e-6)
    # a prediction on pixels without target (ignore, padding) is no false positive
    padded = np.pad(mask, ((0, 0), (0, 0), (0, 4)), constant_values=255)
    everywhere = tf.concat([p, tf.one_hot(tf.fill((2, 6, 4), 1), 3)], axis=2)  # says class 1 on the padding
    assert float(iou(labels(padded), everywhere)) == pytest.approx(float(iou(labels(mask), p)), rel=1e-6)
    assert float(reference(onehot(padded), everywhere)) < float(iou(labels(padded), everywhere))

