"""Scores by hand (numpy only: importing evaluation starts no TensorFlow), prediction helpers, post-processing."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from maskpair import evaluate
from maskpair.training import predict

CLASSES = ("background", "a", "b")


def test_importing_evaluation_prediction_and_figures_starts_no_tensorflow():
    code = ("import sys, maskpair; from maskpair import evaluate, figures, audit, review, label_issues; "
            "from maskpair.training import predict, config; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_pooled_dice_and_iou_by_hand():
    truths = [np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])]
    predictions = [np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])]
    # class a pooled: intersection 1 + 1, truth 2 + 1, prediction 2 + 2 -> Dice 4/7, IoU 2/5
    scores = evaluate.pooled_scores(truths, predictions, CLASSES, partial_labels=False)
    assert scores["dice"]["a"] == pytest.approx(4 / 7)
    assert scores["iou"]["a"] == pytest.approx(2 / 5)
    assert math.isnan(scores["dice"]["b"])  # neither labelled nor predicted


def test_ignore_pixels_count_nowhere():
    truth = np.array([1, 1, 255, 255, 0])
    prediction = np.array([1, 1, 1, 2, 0])  # whatever is predicted on ignore pixels is not an error
    scores = evaluate.pooled_scores([truth], [prediction], CLASSES, partial_labels=False)
    assert scores["dice"]["a"] == 1.0 and math.isnan(scores["dice"]["b"]) and scores["dice"]["background"] == 1.0
    assert math.isnan(evaluate.error_share_on_mask_edges(truth, prediction))  # no labelled pixel is wrong


def test_absent_class_is_scored_only_where_labelled_and_naively_everywhere():
    truths = {"x": np.array([2, 2, 0, 1]), "y": np.array([0, 0, 1, 1])}  # y has no class b
    predictions = {"x": np.array([2, 0, 0, 1]), "y": np.array([2, 2, 1, 1])}  # b predicted in y
    scores = evaluate.evaluate(truths, predictions, CLASSES, partial_labels=True)
    assert scores["scored_examples"]["a"] == ["x", "y"] and scores["scored_examples"]["b"] == ["x"]
    assert scores["dice"]["b"] == pytest.approx(2 * 1 / (2 + 1))  # x only
    assert scores["dice_naive"]["b"] == pytest.approx(2 * 1 / (2 + 3))  # y's 2 pixels count as errors
    assert scores["mean_dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    plain = evaluate.evaluate(truths, predictions, CLASSES, partial_labels=False)
    assert "dice_naive" not in plain and plain["dice"]["b"] == pytest.approx(0.4)


def test_nan_scores_are_written_as_null(tmp_path):
    scores = evaluate.evaluate({"x": np.array([0, 1])}, {"x": np.array([0, 1])}, CLASSES, partial_labels=True)
    written = json.loads(evaluate.write_metrics({**scores, "count": np.int64(3)}, tmp_path).read_text())
    assert written["dice"] == {"background": 1.0, "a": 1.0, "b": None} and written["count"] == 3


def test_format_scores_lists_every_class_and_the_mean():
    scores = evaluate.evaluate({"x": np.array([0, 1, 2])}, {"x": np.array([0, 1, 1])}, CLASSES, partial_labels=True)
    table = evaluate.format_scores(scores).splitlines()
    assert [line.split()[0] for line in table[1:4]] == list(CLASSES)
    assert table[-1].startswith("foreground mean") and "naive Dice" in table[0]


def test_error_share_on_mask_edges_tells_a_one_pixel_rim_from_a_missed_piece():
    truth = np.zeros((12, 12), np.uint8)
    truth[2:8, 2:8] = 2
    one_pixel_smaller = truth.copy()
    one_pixel_smaller[2, 2:8] = 0
    missed_a_piece = truth.copy()
    missed_a_piece[4:6, 4:6] = 0
    assert evaluate.error_share_on_mask_edges(truth, one_pixel_smaller) == 1.0
    assert evaluate.error_share_on_mask_edges(truth, missed_a_piece) == 0.0
    assert np.isnan(evaluate.error_share_on_mask_edges(truth, truth))


def test_example_scores_worst_first_with_flags():
    truth = np.zeros((4, 5), np.uint8)
    truth[1:3, 1:4] = 2
    truth[1, 0] = 1
    prediction = np.zeros_like(truth)
    prediction[1:3, 1:3] = 2
    prediction[1, 0] = 1
    rows = evaluate.example_scores({"good": truth, "bad": truth, "empty": np.zeros_like(truth)},
                                   {"good": truth, "bad": prediction, "empty": prediction}, CLASSES, True)
    assert [row["name"] for row in rows] == ["bad", "good", "empty"]  # worst mean first, unscored last
    assert rows[0]["dice"]["b"] == pytest.approx(2 * 4 / (6 + 4)) and rows[0]["worst_class"] == "b"
    table = evaluate.format_example_scores(rows, flags={"bad": ["empty_mask"]}).splitlines()
    assert table[1].split()[:4] == ["bad", "0.9000", "b", "0.800"] and table[1].endswith("empty_mask")
    assert table[3].split()[1] == "-"


def test_conclusion_is_computed_from_the_metrics():
    metrics = {"dice": {"background": 0.99, "a": 0.9, "b": 0.8}, "mean_dice": 0.85,
               "dice_naive": {"background": 0.99, "a": 0.85, "b": 0.8},
               "largest_structure": {"applied": True, "reason": "val mean Dice 0.9 with it, 0.8 without"},
               "training": {"epochs_run": 40, "train_seconds": 300.0, "best_epoch": 30, "input_wait_share": 0.005}}
    text = evaluate.conclusion(metrics)
    assert "Dice 0.850 (mean over 2 classes); weakest b 0.800, strongest a 0.900" in text
    assert "a -0.050" in text and "was applied (val mean Dice" in text and "0.5% of the time" in text


class _LeftQuarterModel:
    """Stand-in model: says class 1 (0.8) in the left quarter of every image, background elsewhere."""

    def predict_on_batch(self, images):
        probs = np.zeros((*images.shape[:3], 3), np.float32)
        probs[..., 0], probs[..., 1] = 0.9, 0.1
        probs[:, :, : images.shape[2] // 4] = (0.2, 0.8, 0.0)
        return probs


class _Images:
    shapes = {"wide": (4, 8, 1), "tall": (8, 4, 1), "wide2": (4, 8, 1)}

    def get_image(self, name):
        return np.zeros(self.shapes[name], np.float32)


def test_flip_average_maps_the_mirrored_prediction_back_before_averaging():
    plain = predict.predict_labels(_LeftQuarterModel(), _Images(), ["wide"], flip_average=False)["wide"]
    averaged = predict.predict_labels(_LeftQuarterModel(), _Images(), ["wide"], flip_average=True)["wide"]
    assert plain[:, :2].tolist() == [[1, 1]] * 4 and (plain[:, 2:] == 0).all()
    assert (averaged == 0).all()  # mirrored back, each quarter averages 0.8 with 0.1 -> 0.45 < 0.55


def test_predictions_keep_each_images_own_size_and_the_callers_order():
    found = predict.predict_labels(_LeftQuarterModel(), _Images(), ["wide", "tall", "wide2"], flip_average=False)
    assert list(found) == ["wide", "tall", "wide2"]
    assert found["tall"].shape == (8, 4) and found["wide"].shape == (4, 8) and found["wide"].dtype == np.uint8


def test_keep_largest_structure_bridges_small_gaps_and_drops_distant_blobs():
    labels = np.zeros((60, 40), np.uint8)
    labels[5:15, 10:20] = 2
    labels[15:18, 10:20] = 1
    labels[24:34, 10:20] = 2  # 6 px below: one chain at bridge 4 (gaps up to 8 px)
    labels[50:54, 30:36] = 2  # a blob 16 px from the chain
    kept = predict.keep_largest_structure(labels, bridge_px=4)
    expected = labels.copy()
    expected[50:54, 30:36] = 0
    assert np.array_equal(kept, expected) and kept.dtype == labels.dtype
    assert predict.removed_pixels({"x": labels}, {"x": kept}) == {"x": 24}
    assert np.count_nonzero(predict.keep_largest_structure(labels, bridge_px=0)) == 130
    empty = np.zeros_like(labels)
    assert np.array_equal(predict.keep_largest_structure(empty), empty)
