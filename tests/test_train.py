"""Training helpers: scores against hand-computed values, the partial-label loss, and short real training runs."""
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import loader
import train
from conftest import PROJECT_DIR
from synthetic import write_dataset

tf = train.tf


def onehot(mask, n_classes=3):
    """(B, H, W) integer labels -> float32 one-hot tensor."""
    return tf.constant(np.eye(n_classes, dtype=np.float32)[np.asarray(mask)])


def probabilities(rows):
    """Nested per-pixel class probabilities -> float32 tensor (B, H, W, C)."""
    return tf.constant(np.asarray(rows, dtype=np.float32))


# ---------------------------------------------------------------- splits


def test_make_splits_sizes_follow_val_fraction_and_the_test_split_does_not_move(tmp_path):
    root = write_dataset(tmp_path, [str(i) for i in range(20)])
    for fold in (-1, 0):
        default = train.make_splits(root, seed=0, fold=fold)
        smaller_val = train.make_splits(root, seed=0, fold=fold, val_fraction=0.1)
        assert [len(default[s]) for s in loader.SPLITS] == [12, 4, 4]
        assert [len(smaller_val[s]) for s in loader.SPLITS] == [14, 2, 4]
        assert smaller_val["test"] == default["test"]
        assert sorted(sum(smaller_val.values(), []), key=int) == [str(i) for i in range(20)]


def test_train_without_flagged_leaves_out_train_examples_with_those_flag_codes_only():
    splits = {"train": ["1", "2", "3", "4"], "val": ["5", "6"], "test": ["7", "8"]}
    flags = {"1": ["short_column:top"], "2": ["empty_mask"], "3": [], "5": ["short_column:bottom"],
             "7": ["short_column:top"], "4": ["order_gap:unlabelled_disc@top", "short_column:bottom"]}
    kept = train.train_without_flagged(splits, flags, ["short_column"])
    assert kept == {"train": ["2", "3"], "val": ["5", "6"], "test": ["7", "8"], loader.SET_ASIDE: ["1", "4"]}
    assert splits["train"] == ["1", "2", "3", "4"]  # the caller's splits are not changed
    assert train.train_without_flagged(kept, flags, ["empty_mask"])[loader.SET_ASIDE] == ["1", "2", "4"]
    assert train.train_without_flagged(splits, flags, [])["train"] == splits["train"]
    for wrong in ("short_column", ["short"]):  # a string (e.g. from papermill -p, not -y) or an unknown code
        with pytest.raises(ValueError, match="flag codes must be a list drawn from"):
            train.train_without_flagged(splits, flags, wrong)


# ---------------------------------------------------------------- labels and scores


def test_label_map_is_the_argmax_of_the_softmax():
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], [[0.2, 0.3, 0.5], [0.4, 0.4, 0.2]]])
    labels = train.labels_from_probabilities(probs)
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[0, 1], [2, 0]]  # a tie goes to the lower label


def test_present_classes():
    assert train.present_classes(np.array([[0, 2], [2, 0]])).tolist() == [True, False, True]
    assert train.present_classes(np.zeros((2, 2), np.uint8)).tolist() == [True, False, False]


def test_pooled_dice_and_iou_by_hand():
    truths = [np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])]
    predictions = [np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])]
    # disc pooled: intersection 1 + 1, truth 2 + 1, prediction 2 + 2 -> Dice 4/7, IoU 2/5
    scores = train.pooled_scores(truths, predictions)
    assert scores["dice"]["disc"] == pytest.approx(4 / 7)
    assert scores["iou"]["disc"] == pytest.approx(2 / 5)


def test_absent_class_is_scored_only_where_labelled_and_naively_everywhere():
    truths = {"a": np.array([2, 2, 0, 1]), "b": np.array([0, 0, 1, 1])}  # b has no vertebra label
    predictions = {"a": np.array([2, 0, 0, 1]), "b": np.array([2, 2, 1, 1])}  # vertebra predicted in b
    scores = train.evaluate(truths, predictions)
    assert scores["scored_examples"] == {"disc": ["a", "b"], "vertebra": ["a"]}
    assert scores["dice"]["vertebra"] == pytest.approx(2 * 1 / (2 + 1))  # a only
    assert scores["dice_naive"]["vertebra"] == pytest.approx(2 * 1 / (2 + 3))  # b's 2 pixels count as errors
    assert scores["iou"]["vertebra"] == pytest.approx(1 / 2)
    assert scores["iou_naive"]["vertebra"] == pytest.approx(1 / 4)
    assert scores["dice"]["disc"] == scores["dice_naive"]["disc"] == pytest.approx(1.0)


def test_a_class_no_test_example_labels_scores_nan_and_is_written_as_null(tmp_path):
    scores = train.evaluate({"a": np.array([0, 1])}, {"a": np.array([0, 1])})
    assert math.isnan(scores["dice"]["vertebra"]) and math.isnan(scores["iou"]["vertebra"])
    written = json.loads(train.write_metrics(scores, tmp_path).read_text())
    assert written["dice"] == {"disc": 1.0, "vertebra": None}


def test_describe_labelled_counts_classes_and_names_empty_masks():
    masks = {"0": np.zeros((2, 2), np.uint8), "1": np.array([[1, 0], [0, 0]]), "2": np.array([[1, 2], [0, 0]])}
    line = train.describe_labelled(list(masks), masks, "test")
    assert line == "test 3 examples: labelling disc 2, vertebra 1; empty masks: 0"


def test_slowdown_share_compares_medians():
    assert train.slowdown_share([9, 1.0, 1.0, 1.0], [9, 0.9, 0.9, 0.9]) == pytest.approx(0.1)
    assert train.slowdown_share([1.0, 1.0], [1.2, 1.2]) == 0.0  # never negative


def test_blocked_share_counts_only_batches_not_ready_when_their_step_began():
    starts = [0.0, 10.0, 20.0, 30.0, 40.0]  # five steps of 10 s; the first `warmup` ones are left out
    seconds = [10.0] * 5
    ready = [5.0, 1.0, 19.0, 32.0, 40.5]  # step 3 waits 2 s, step 4 waits 0.5 s, step 2's batch was early
    assert train.blocked_share(ready, starts, seconds, warmup=2) == pytest.approx(2.5 / 30)
    assert train.blocked_share(ready[:4], starts, seconds, warmup=2) == pytest.approx(2.0 / 20)  # prefetch ran out
    assert train.blocked_share([], [], []) == 0.0


def test_conclusion_is_computed_from_the_metrics():
    metrics = {"dice": {"disc": 0.9, "vertebra": 0.91}, "dice_naive": {"disc": 0.85, "vertebra": 0.91},
               "input_wait_share": 0.005, "loader_slowdown_share": 0.031,
               "training": {"epochs_run": 40, "train_seconds": 300.0}}
    text = train.conclusion(metrics)
    assert "disc 0.900 (meets the 0.88 target)" in text
    assert "vertebra 0.910 (misses the 0.92 target)" in text
    assert "disc -0.050" in text and "0.5% of the training time (within" in text and "3.1% slower" in text
    assert "largest predicted structure" not in text
    metrics["dice_before_postprocessing"] = {"disc": 0.9, "vertebra": 0.86}
    assert "largest predicted structure changed Dice by disc +0.000, vertebra +0.050." in train.conclusion(metrics)


# ---------------------------------------------------------------- the partial-label loss


def test_focal_loss_by_hand():
    y = onehot([[[1]]])  # one pixel labelled disc, vertebra unlabelled in this example
    loss = train.partial_focal_loss(y, probabilities([[[[0.3, 0.5, 0.2]]]]))
    assert float(loss) == pytest.approx(-0.25 * 0.5**2 * np.log(0.5), rel=1e-5)


def test_focal_loss_accepts_an_unlabelled_class_at_background_pixels():
    y = onehot([[[0, 1]]])  # background and disc; no vertebra label in this example
    says_background = probabilities([[[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]]])
    says_vertebra = probabilities([[[[0.05, 0.05, 0.9], [0.1, 0.8, 0.1]]]])
    assert float(train.partial_focal_loss(y, says_background)) == pytest.approx(
        float(train.partial_focal_loss(y, says_vertebra)), rel=1e-6)
    y_labelled = onehot([[[0, 2]]])  # once vertebra is labelled in the example, calling background vertebra costs
    assert float(train.partial_focal_loss(y_labelled, says_vertebra)) > float(
        train.partial_focal_loss(y_labelled, says_background)) + 0.01


def test_dice_loss_by_hand_ignores_the_unlabelled_class():
    y = onehot([[[1, 1, 0, 0]]])  # disc labelled, vertebra not
    p = probabilities([[[[0, 1, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0, 1]]]])
    # disc: intersection 1.5, |truth| + |prediction| = 2 + 1.5 -> Dice 3/3.5; vertebra is left out of the mean
    assert float(train.partial_dice_loss(y, p)) == pytest.approx(1 - 3 / 3.5, rel=1e-5)


def test_dice_loss_pools_a_class_only_over_examples_that_label_it():
    y = onehot([[[2, 0]], [[1, 0]]])  # example 0 labels vertebra only, example 1 disc only
    p = probabilities([[[[0, 0, 1], [0, 1, 0]]], [[[0, 1, 0], [0, 0, 1]]]])
    # disc: example 1 only -> intersection 1, sums 1 + 1; vertebra: example 0 only -> the same; loss 0
    assert float(train.partial_dice_loss(y, p)) == pytest.approx(0.0, abs=1e-5)


def test_lovasz_loss_by_hand_ignores_the_unlabelled_class():
    y = onehot([[[1, 0, 1]]])  # disc labelled, vertebra not
    p = probabilities([[[[0.4, 0.6, 0.0], [0.7, 0.3, 0.0], [0.0, 0.9, 0.1]]]])
    # disc errors 0.4 (disc), 0.3 (not), 0.1 (disc): sorted 0.4, 0.3, 0.1; truth sorted 1, 0, 1 (2 in all).
    # 1 - IoU as each is counted wrong in turn: 1 - 1/2, 1 - 1/3, 1 - 0/3 -> steps 1/2, 1/6, 1/3
    expected = 0.4 * 0.5 + 0.3 / 6 + 0.1 / 3
    assert float(train.partial_lovasz_loss(y, p)) == pytest.approx(expected, rel=1e-5)
    y_both = onehot([[[1, 0, 1]], [[2, 2, 0]]])  # a second example labels vertebra only
    p_both = tf.concat([p, probabilities([[[[0, 0, 1], [0, 0, 1], [1, 0, 0]]]])], axis=0)
    # disc is scored on example 0 only (as above), vertebra on example 1 only, where it is perfect: mean of the two
    assert float(train.partial_lovasz_loss(y_both, p_both)) == pytest.approx(expected / 2, rel=1e-5)


def test_an_empty_mask_gives_no_loss_and_no_gradient():
    y = onehot(np.zeros((1, 4, 4), int))
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32))
    loss_fn = train.make_loss(partial_labels=True, lovasz_weight=1.0)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, tf.nn.softmax(logits))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, logits)))) < 1e-6


def test_naive_loss_does_punish_an_unlabelled_class():
    y = onehot([[[0, 1]]])
    says_background = probabilities([[[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]]])
    says_vertebra = probabilities([[[[0.05, 0.05, 0.9], [0.1, 0.8, 0.1]]]])
    naive = train.make_loss(partial_labels=False)
    assert float(naive(y, says_vertebra)) > float(naive(y, says_background))


# ---------------------------------------------------------------- real (short) training


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("tiny"), [str(i) for i in range(20)], shape=(32, 32))
    return root


@pytest.mark.slow
def test_fit_keeps_the_best_checkpoint_and_writes_predictions(tiny_data, tmp_path):
    import loader

    tf.keras.utils.set_random_seed(0)
    data = loader.DataLoader(tiny_data, batch_size=2, seed=0, augment=True)
    model = train.build_model("resnet18", learning_rate=1e-3)
    report = train.fit_with_checkpoint(model, data, tmp_path, epochs=2)
    assert (tmp_path / "checkpoints" / "best.weights.index").is_file()
    assert report["epochs_run"] == 2 and report["best_epoch"] in (1, 2)
    assert len(report["step_seconds"]) == len(report["step_starts"]) == 2 * data.steps_per_epoch("train")
    # every step's batch was produced, in order, by the loader (prefetch may run ahead of the last step)
    ready = report["batch_ready_times"]
    assert len(ready) >= len(report["step_starts"]) and ready == sorted(ready)
    assert 0.0 <= train.blocked_share(ready, report["step_starts"], report["step_seconds"]) < 1.0
    predictions = train.predict_labels(model, data, data.splits["test"])
    folder = train.save_predictions(predictions, tmp_path)
    saved = np.load(folder / f"{data.splits['test'][0]}.npy")
    assert saved.shape == data.get_mask(data.splits["test"][0]).shape and saved.dtype == np.uint8
    reloaded = tf.keras.models.load_model(str(train.save_model(model, tmp_path)), compile=False)
    image = data.get_image(data.splits["test"][0])[None]
    np.testing.assert_allclose(reloaded.predict(image, verbose=0), model.predict(image, verbose=0), atol=1e-5)
    weights = model.get_weights()
    probe = train.slowdown_probe(model, data, rounds=2, steps=4, warmup=1)
    assert {name: len(times) for name, times in probe.items()} == {"loader": 6, "memory": 6}
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # the probe trains, then restores


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {project!r})
    import train, loader
    strategy = train.make_strategy("mirrored", cpu_devices=2)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    data = loader.DataLoader({data!r}, batch_size=4, seed=0)
    # with weight averaging at momentum 1 (the average stays the initial weights): the averaged weights must be
    # the ones validated and kept under the strategy too, while the raw ones train
    model = train.build_model("resnet18", strategy=strategy, ema_momentum=1.0)
    initial = [variable.numpy() for variable in model.trainable_variables]
    report = train.fit_with_checkpoint(model, data, {out!r}, epochs=2)
    losses = report["history"]["loss"]
    assert all(loss == loss and loss > 0 for loss in losses) and losses[1] != losses[0], losses
    kept_average = all((variable.numpy() == start).all() for variable, start in zip(model.trainable_variables, initial))
    print("replicas", strategy.num_replicas_in_sync, "losses", losses, "kept the average", kept_average)
""")


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus_and_keeps_averaged_weights(tiny_data, tmp_path):
    # A fresh process: logical devices can only be configured before TensorFlow initialises its devices.
    script = MIRRORED_SCRIPT.format(project=str(PROJECT_DIR), data=str(tiny_data), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2 losses" in result.stdout and "kept the average True" in result.stdout


class _LeftQuarterModel:
    """Stand-in model: says "disc" (0.8) in the left quarter of every image, background elsewhere."""

    def predict(self, images, batch_size=None, verbose=0):
        probs = np.zeros((*images.shape[:3], 3), np.float32)
        probs[..., 0], probs[..., 1] = 0.9, 0.1
        probs[:, :, : images.shape[2] // 4] = (0.2, 0.8, 0.0)
        return probs


class _Images:
    def get_image(self, name):
        return np.zeros((4, 8, 1), np.float32)


def test_flip_average_maps_the_mirrored_prediction_back_before_averaging():
    plain = train.predict_labels(_LeftQuarterModel(), _Images(), ["a"])["a"]
    averaged = train.predict_labels(_LeftQuarterModel(), _Images(), ["a"], flip_average=True)["a"]
    assert plain[:, :2].tolist() == [[1, 1]] * 4 and (plain[:, 2:] == 0).all()
    # mirrored back, each quarter averages disc 0.8 with 0.1 -> 0.45 < background 0.55; unmirrored it would stay disc
    assert (averaged == 0).all()


def test_augmentation_crops_with_or_without_jitter():
    assert train.augmentation(False, None) is None
    assert train.augmentation(True, None) == loader.Augment(**train.WIDE_INTENSITY)
    assert train.augmentation(True, 160) == loader.Augment(**train.WIDE_INTENSITY, crop=160)
    unmirrored = train.augmentation(True, 160, flip_lr=0.0)
    assert unmirrored == loader.Augment(**train.WIDE_INTENSITY, crop=160, flip_lr=0.0) != train.augmentation(True, 160)
    assert train.augmentation(True, 160, elastic_px=4.0) == loader.Augment(**train.WIDE_INTENSITY, crop=160, elastic_px=4.0)
    # a list, as papermill passes it, becomes the tuple Augment draws zoom factors from
    assert train.augmentation(True, 160, scale=[0.8, 1.25]) == loader.Augment(**train.WIDE_INTENSITY, crop=160, scale=(0.8, 1.25))
    plain_crop = train.augmentation(False, 32)
    image, mask = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096, np.zeros((64, 64), np.uint8)
    cropped, _ = plain_crop.apply(image, mask, np.random.default_rng(0))
    assert cropped.shape == (32, 32)
    # no jitter: the crop is an exact window of the image
    top, left = divmod(int(round(cropped[0, 0] * 4096)), 64)
    assert np.allclose(cropped, image[top:top + 32, left:left + 32])


def test_model_takes_images_of_any_size():
    # a bare UNet needs sides divisible by 32; the model pads inside and crops its output back
    model = train.build_model("resnet18")
    probabilities = model.predict(np.random.default_rng(0).random((2, 50, 70, 1), dtype=np.float32), verbose=0)
    assert probabilities.shape == (2, 50, 70, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    background = np.zeros((2, 40, 56, 3), np.float32)
    background[..., 0] = 1.0
    losses = model.train_on_batch(np.zeros((2, 40, 56, 1), np.float32), background)
    assert np.all(np.isfinite(losses))


def test_full_resolution_skip_feeds_the_image_to_the_finest_decoder_stage(tmp_path):
    model = train.build_model("resnet18", decoder_filters=[128, 64, 32, 32, 16], full_resolution_skip=True)
    unet = model.get_layer("unet_full_res")
    # the finest stage's first convolution reads the upsampled 32 channels plus the one-channel image, at 16 wide
    assert tuple(unet.get_layer("full_res_a_conv").kernel.shape) == (3, 3, 32 + 1, 16)
    assert unet.get_layer("full_res_concat").input[1] is unet.input
    images = np.random.default_rng(0).random((2, 50, 70, 1), dtype=np.float32)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 50, 70, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    reloaded = tf.keras.models.load_model(str(train.save_model(model, tmp_path)), compile=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), probabilities, atol=1e-6)


@pytest.mark.slow
def test_with_an_ema_optimizer_the_averaged_weights_are_checkpointed_and_the_raw_ones_trained(tiny_data, tmp_path):
    import loader

    tf.keras.utils.set_random_seed(0)
    data = loader.DataLoader(tiny_data, batch_size=2, seed=0, augment=True)
    # momentum 1: the average never leaves the initial weights, so it is easy to tell from the raw ones
    model = train.build_model("resnet18", ema_momentum=1.0)
    initial_weights = [variable.numpy() for variable in model.trainable_variables]
    kernel, initial = model.trainable_variables[0], initial_weights[0]
    seen = {}

    class Watch(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            seen[f"start {epoch}"] = kernel.numpy()

        def on_train_batch_end(self, batch, logs=None):
            seen[f"trained {self.epoch}"] = kernel.numpy()

    original_fit = model.fit
    model.fit = lambda *args, callbacks, **kwargs: original_fit(*args, callbacks=[Watch()] + callbacks, **kwargs)
    report = train.fit_with_checkpoint(model, data, tmp_path, epochs=2)
    trained = seen["trained 0"]
    assert not np.array_equal(trained, initial)  # training moved the raw weights ...
    np.testing.assert_array_equal(seen["start 1"], trained)  # ... and the second epoch went on from them
    # the checkpoint saved after validation, and restored at the end, is the average
    for variable, start in zip(model.trainable_variables, initial_weights):
        np.testing.assert_array_equal(variable.numpy(), start)


@pytest.mark.slow
def test_a_loader_slower_than_the_step_shows_as_waiting(tiny_data, tmp_path):
    import time as clock

    import loader

    data = loader.DataLoader(tiny_data, batch_size=2, seed=0)
    make_batch = data.batch_arrays

    # 0.5 s per batch, far more than a step on 32 x 32 images even on a loaded machine (at 0.2 s, a CI run with
    # steps slowed by load measured 19% waiting: prefetch hid more of the delay behind the slower steps)
    def slow_batch(*args, **kwargs):
        clock.sleep(0.5)
        return make_batch(*args, **kwargs)

    def waiting_share():
        model = train.build_model("resnet18")
        report = train.fit_with_checkpoint(model, data, tmp_path, epochs=2)
        return train.blocked_share(report["batch_ready_times"], report["step_starts"], report["step_seconds"])

    prompt = waiting_share()
    data.batch_arrays = slow_batch
    slow = waiting_share()
    # the prefetch buffer fills while validation runs, so even a slow loader does not make every step wait
    assert slow > 0.2 and prompt < 0.1, (slow, prompt)


def test_example_scores_hand_computed_with_predictions_beyond_the_labelled_rows():
    truth = np.zeros((4, 5), np.uint8)
    truth[1:3, 1:4] = 2  # 6 vertebra pixels in rows 1-2
    truth[1, 0] = 1
    prediction = np.zeros_like(truth)
    prediction[1:3, 1:3] = 2  # 4 of them
    prediction[0, 1] = 2  # above the labelled rows
    prediction[1, 0] = prediction[3, 4] = 1  # the disc, and a disc below the labelled rows
    rows = train.example_scores({"a": truth, "empty": np.zeros_like(truth)}, {"a": prediction, "empty": prediction})
    assert [row["name"] for row in rows] == ["a", "empty"]  # worst vertebra first, unscored last
    assert rows[0]["vertebra"] == pytest.approx(2 * 4 / (6 + 5)) and rows[0]["disc"] == pytest.approx(2 / 3)
    assert rows[0]["beyond_labelled_rows"] == 2
    assert np.isnan(rows[1]["vertebra"]) and rows[1]["beyond_labelled_rows"] == 7  # empty mask: every prediction
    # of the 4 wrong pixels, (0,1), (1,3), (2,3) lie on a label change of the mask; (3,4) touches one only diagonally
    assert rows[0]["errors_on_edges"] == 0.75
    assert rows[1]["errors_on_edges"] == 0.0  # an empty mask has no edges
    table = train.format_example_scores(rows)
    assert "0.7273" in table and "75%" in table and table.splitlines()[2].split()[1:3] == ["-", "-"]
    flagged = train.format_example_scores(rows, mask_flags={"a": ["short_column:top"], "empty": []}).splitlines()
    assert flagged[0].endswith("mask flags") and flagged[1].endswith(" short_column:top") and flagged[2].endswith(" -")
    assert [line[:len(plain)] for line, plain in zip(flagged, table.splitlines())] == table.splitlines()


def test_error_share_on_mask_edges_tells_a_one_pixel_rim_from_a_missed_piece():
    truth = np.zeros((12, 12), np.uint8)
    truth[2:8, 2:8] = 2
    one_pixel_smaller = truth.copy()
    one_pixel_smaller[2, 2:8] = 0
    missed_a_piece = truth.copy()
    missed_a_piece[4:6, 4:6] = 0  # the middle, far from any edge
    assert train.error_share_on_mask_edges(truth, one_pixel_smaller) == 1.0
    assert train.error_share_on_mask_edges(truth, missed_a_piece) == 0.0
    assert np.isnan(train.error_share_on_mask_edges(truth, truth))
    beside_a_corner = truth.copy()
    beside_a_corner[1, 1] = 2  # touches the square only diagonally: not on an edge (4-neighbourhood, as the audit)
    assert train.error_share_on_mask_edges(truth, beside_a_corner) == 0.0


def test_keep_largest_structure_bridges_small_gaps_and_drops_distant_blobs():
    labels = np.zeros((60, 40), np.uint8)
    labels[5:15, 10:20] = 2  # a vertebra,
    labels[15:18, 10:20] = 1  # its disc,
    labels[24:34, 10:20] = 2  # and the next vertebra 6 px below: one chain at bridge 4 (gaps up to 8 px)
    labels[50:54, 30:36] = 2  # a blob 16 px from the chain
    kept = train.keep_largest_structure(labels, bridge_px=4)
    expected = labels.copy()
    expected[50:54, 30:36] = 0
    assert np.array_equal(kept, expected) and kept.dtype == labels.dtype
    assert train.removed_pixels({"a": labels}, {"a": kept}) == {"a": 24}
    # without bridging the lower vertebra is its own piece, smaller than vertebra + disc, and is dropped too
    assert np.count_nonzero(train.keep_largest_structure(labels, bridge_px=0)) == 130
    assert np.array_equal(train.keep_largest_structure(labels, bridge_px=None), labels)
    empty = np.zeros_like(labels)
    assert np.array_equal(train.keep_largest_structure(empty), empty)
