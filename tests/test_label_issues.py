"""label_issues: scoring and kinds on hand-made arrays (missing, extra, wrong class, boundary, ignore, partial
labels), planted errors, the ranking's files, folds as separate jobs and their merge (a stand-in model); slow: the
command on datasets of other layouts, classes and sizes, real out-of-fold training ranking planted errors on top,
two fold processes merged against one run, and a fold trained by two local workers."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI, PROJECT_DIR
from PIL import Image
from synthetic import IGNORE_INDEX, write_blobs, write_dataset_json, write_layout

from maskpair import cli
from maskpair.data.loader import DataLoader
from maskpair.data.splits import kfold_splits
from maskpair.errors import DataError
from maskpair.label_issues import folds, planting
from maskpair.label_issues import rank as li

CLASSES = ("background", "disc", "vertebra")


def square(mask, top, left, size, value):
    """Paint a size x size square of `value` into mask (in place); returns mask."""
    mask[top : top + size, left : left + size] = value
    return mask


def spine(shape=(64, 64)):
    """A column of four 8 px vertebrae (2) with three 4 px discs (1) between them, away from the border."""
    mask = np.zeros(shape, np.uint8)
    for top in (6, 18, 30, 42):
        mask[top : top + 8, 20:36] = 2
        mask[top + 8 : top + 12, 20:36] = 1 if top < 42 else 0
    return mask


def confident(labels, n_classes: int = 3, sure: float = 0.96):
    """Softmax-like maps that say `labels` with probability `sure` (the rest spread over the other classes)."""
    probabilities = np.full((*labels.shape, n_classes), (1 - sure) / (n_classes - 1), np.float32)
    np.put_along_axis(probabilities, np.where(labels == IGNORE_INDEX, 0, labels)[..., None].astype(int), sure, -1)
    return probabilities


def score(mask, model_says, partial=False):
    entry, _, disagreement = li.score_example(mask, confident(model_says), CLASSES, partial)
    return entry, disagreement


def worst_class(entry) -> float:
    """The lowest per-class score of an entry (the project's own disagreement measure)."""
    return min(c["score"] for c in entry["classes"].values() if c["annotated"])


def test_a_mask_the_model_agrees_with_scores_near_one_and_kind_none():
    entry, disagreement = score(spine(), spine())
    assert entry["kind"] == "none" and not disagreement.any() and not entry["flagged"]
    assert entry["softmin"] == pytest.approx(0.96, abs=1e-3)  # cleanlab: every given label at the model's 0.96
    assert entry["mislabelled_share"] == 0
    assert worst_class(entry) > 0.99 and entry["classes"]["disc"]["disagreement_px"] == dict.fromkeys(li.KINDS, 0)


def test_a_structure_the_model_sees_and_the_mask_lacks_is_a_missing_structure():
    truth = spine()
    erased = truth.copy()
    erased[14:18] = 0  # the upper disc erased from the mask
    entry, disagreement = score(erased, truth)
    assert entry["kind"] == "missing structure"
    assert entry["classes"]["disc"]["disagreement_px"]["missing structure"] == 4 * 16
    assert entry["classes"]["vertebra"]["disagreement_px"] == dict.fromkeys(li.KINDS, 0)
    assert (disagreement[14:18, 20:36] == 1 + li.KINDS.index("missing structure")).all()
    # Dice 1 - 64 / (128 + 192), each of the 64 pixels weighted by the model's 0.98 against "background"
    assert entry["classes"]["disc"]["score"] == pytest.approx(1 - 0.98 * 64 / (128 + 192), abs=1e-3)
    assert entry["flagged"] and entry["softmin"] < 0.1  # cleanlab's softmin: the 64 doubted pixels dominate
    assert entry["mislabelled_share"] == pytest.approx(64 / 64**2, abs=1e-5)  # exactly the erased pixels


def test_a_labelled_structure_the_model_does_not_see_is_an_extra_structure():
    truth = spine()
    drawn = square(truth.copy(), 4, 50, 8, 2)  # a vertebra drawn where the image has none
    entry, disagreement = score(drawn, truth)
    assert entry["kind"] == "extra structure"
    assert entry["classes"]["vertebra"]["disagreement_px"]["extra structure"] == 64
    assert (disagreement[4:12, 50:58] == 1 + li.KINDS.index("extra structure")).all()


def test_a_structure_labelled_as_another_class_is_a_wrong_class():
    truth = spine()
    relabelled = truth.copy()
    relabelled[30:38][relabelled[30:38] == 2] = 1  # the middle vertebra labelled as disc
    entry, _ = score(relabelled, truth)
    assert entry["kind"] == "wrong class"
    assert entry["classes"]["vertebra"]["disagreement_px"]["wrong class"] == 8 * 16  # the model's vertebra
    assert entry["classes"]["disc"]["disagreement_px"]["wrong class"] == 8 * 16  # the mask's "disc"


def test_a_mask_drawn_a_few_pixels_too_large_is_a_boundary_problem_and_one_pixel_is_outline_noise():
    truth = spine()
    three = planting.dilate_labels(truth, 3)
    one = planting.dilate_labels(truth, 1)
    entry, _ = score(three, truth)
    assert entry["kind"] == "boundary" and entry["flagged"] and worst_class(entry) < 0.9
    assert entry["classes"]["vertebra"]["disagreement_px"]["boundary"] > 0
    loose, _ = score(one, truth)
    assert loose["kind"] == "none" and worst_class(loose) > 0.99  # within TOLERANCE_PX of the mask's edges
    assert not loose["flagged"] and loose["softmin"] > entry["softmin"]
    assert loose["mislabelled_share"] < entry["mislabelled_share"]
    assert score(truth, three)[0]["kind"] == "boundary"  # drawn too small: the same kind


def test_ignore_pixels_count_nowhere():
    truth = spine()
    erased = truth.copy()
    erased[14:18] = IGNORE_INDEX  # the disc the mask leaves out is "no label here", not background
    entry, disagreement = score(erased, truth)
    assert entry["kind"] == "none" and not entry["flagged"] and not disagreement.any()
    assert entry["softmin"] == pytest.approx(0.96, abs=1e-3) and entry["mislabelled_share"] == 0
    assert entry["classes"]["disc"]["labelled_px"] == 2 * 16 * 4


def test_partial_labels_a_class_the_mask_does_not_contain_is_not_disagreement():
    truth = spine()
    discs_only = np.where(truth == 2, 0, truth).astype(np.uint8)
    partial, _ = score(discs_only, truth, partial=True)
    assert partial["kind"] == "none" and not partial["flagged"] and partial["softmin"] >= 0.96 - 1e-3
    assert partial["mislabelled_share"] == 0
    assert partial["classes"]["vertebra"] == {"annotated": False}
    full, _ = score(discs_only, truth, partial=False)  # without partial labels the vertebrae are missing
    assert full["kind"] == "missing structure" and full["softmin"] < 0.2 and full["mislabelled_share"] > 0.1


def test_partial_labels_still_find_an_erased_structure_of_a_class_the_mask_labels_elsewhere():
    truth = spine()
    discs_only = np.where(truth == 2, 0, truth).astype(np.uint8)
    discs_only[38:42] = 0  # the lowest disc erased too; two remain
    entry, _ = score(discs_only, truth, partial=True)
    assert entry["kind"] == "missing structure"  # doubt 0.96: "background" includes the not-annotated vertebra
    assert entry["classes"]["disc"]["score"] == pytest.approx(1 - 0.96 * 64 / (128 + 192), abs=1e-3)


def test_an_empty_partial_mask_is_not_annotated_and_not_doubted():
    entry, _ = score(np.zeros((64, 64), np.uint8), spine(), partial=True)
    assert entry == {"softmin": 1.0, "mislabelled_share": 0.0, "flagged": False, "kind": "not annotated",
                     "classes": {"disc": {"annotated": False}, "vertebra": {"annotated": False}}}


def test_a_doubtful_model_doubts_less():
    truth = spine()
    erased = truth.copy()
    erased[14:18] = 0
    sure = li.score_example(erased, confident(truth, sure=0.96), CLASSES, False)[0]["softmin"]
    unsure = li.score_example(erased, confident(truth, sure=0.6), CLASSES, False)[0]["softmin"]
    assert sure < unsure < 1


def test_the_mislabelled_share_finds_an_error_in_a_class_the_model_is_never_sure_of():
    """The model says disc at 0.55 wherever there is one (background 0.45): softmin barely tells the mask with a
    disc erased from the true one, the mislabelled share (per-class thresholds) counts exactly the erased disc."""
    truth = spine()
    model_says = confident(truth)
    discs = truth == 1
    model_says[discs] = (0.45, 0.55, 0.0)
    erased = truth.copy()
    erased[14:18] = 0
    clean = li.score_example(truth, model_says, CLASSES, False)[0]
    wrong = li.score_example(erased, model_says, CLASSES, False)[0]
    assert clean["mislabelled_share"] == 0 and wrong["mislabelled_share"] == pytest.approx(64 / 64**2, abs=1e-5)
    assert clean["softmin"] - wrong["softmin"] < 0.15 * clean["softmin"]


def test_suspicion_ranks_by_the_more_suspicious_measure_ties_by_both():
    # softmin places: 0, 0.5, 1; mislabelled share places: 0.75, 0, 0.75 (the second example has the most)
    keys = li.suspicion([0.1, 0.5, 0.9], [0.0, 0.3, 0.0])
    assert keys == [(0.0, 0.75), (0.0, 0.5), (0.75, 1.75)]
    entries = [{"name": name, "softmin": s, "mislabelled_share": m}
               for name, s, m in (("a", 0.1, 0.0), ("b", 0.5, 0.3), ("c", 0.9, 0.0))]
    assert [(e["name"], e["rank"], e["score"]) for e in li.ranked(entries)] == [("b", 1, 0.0), ("a", 2, 0.0),
                                                                                 ("c", 3, 0.75)]
    assert li.suspicion([0.4], [0.1]) == [(1.0, 2.0)]  # one example: nothing to be more suspect than


# ---------------------------------------------------------------- planted errors


def test_erase_structure_keeps_the_class_elsewhere_and_removes_exactly_one_structure():
    truth = spine()
    for seed in range(5):
        erased = planting.erase_structure(truth, np.random.default_rng(seed))
        removed = (truth != erased)
        assert set(np.unique(erased)) == {0, 1, 2} and (erased[removed] == 0).all()
        assert len(planting.foreground_structures(erased)) == len(planting.foreground_structures(truth)) - 1
    single = square(np.zeros((32, 32), np.uint8), 10, 10, 6, 1)
    assert planting.erase_structure(single, np.random.default_rng(0)) is None  # its class would be gone


def test_relabel_structure_gives_one_structure_another_foreground_class():
    truth = spine()
    relabelled = planting.relabel_structure(truth, np.random.default_rng(1), 3)
    changed = truth != relabelled
    assert changed.any() and set(np.unique(relabelled[changed])) <= {1, 2}
    assert (relabelled[changed] != truth[changed]).all() and (truth[changed] > 0).all()
    assert planting.relabel_structure(truth, np.random.default_rng(1), 2) is None  # one foreground class only


def test_dilate_labels_grows_into_background_only():
    truth = spine()
    truth[:, :4] = IGNORE_INDEX
    truth[30:38, 17:20] = IGNORE_INDEX
    grown = planting.dilate_labels(truth, 3)
    assert (grown[truth > 0] == truth[truth > 0]).all()  # labels and ignore stay
    assert (grown[6:14, 36:39] == 2).all() and (grown[6:14, 39] == 0).all()  # 3 px to the right, not 4
    assert planting.dilate_labels(np.zeros((8, 8), np.uint8), 3) is None


def test_delete_lowest_removes_the_lowest_structures():
    truth = spine()
    cut = planting.delete_lowest(truth, 2)
    assert (cut[38:] == 0).all() and (cut[:38] == truth[:38]).all()
    assert planting.delete_lowest(truth, 6) is None  # would leave no disc


def write_spines(root, n: int, values=(0, 100, 200), ignore=None):
    """n pairs of `spine` masks (mask values `values`, a left strip of `ignore` if given; PNG) with dataset.json;
    images are the masks brightened, so each pair is its own."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = dict(zip(CLASSES, values)) | ({"ignore": ignore} if ignore is not None else {})
    for k in range(n):
        mask = np.roll(spine(), k - n // 2, axis=1)
        stored = np.array(values, np.uint8)[mask]
        if ignore is not None:
            stored[:, :3] = ignore
        Image.fromarray(stored).save(root / "masks" / f"case{k}.png")
        Image.fromarray((40 + 60 * mask).astype(np.uint8)).save(root / "images" / f"case{k}.png")
    write_dataset_json(root, name="spines", channel_names={"0": "gray"}, labels=labels, partial_labels=True)
    return root


def test_plant_errors_writes_a_readable_copy_with_one_error_per_planted_example(tmp_path):
    root = write_spines(tmp_path / "spines", 10, ignore=255)
    planted = planting.plant_errors(root, tmp_path / "copy", per_kind=2, seed=3)
    assert sorted(planted.values()) == sorted(planting.PLANTED_ERRORS * 2)
    original, copy = DataLoader(root), DataLoader(tmp_path / "copy")
    assert copy.description.labels == original.description.labels
    for name in original.names:
        before, after = original.get_mask(name), copy.get_mask(name)
        assert np.array_equal(before, after) == (name not in planted), name
        assert np.array_equal(before == IGNORE_INDEX, after == IGNORE_INDEX)
        assert np.array_equal(original.get_image(name), copy.get_image(name))
    erased = [name for name, error in planted.items() if error == "erased structure"]
    assert all(np.count_nonzero(copy.get_mask(n)) < np.count_nonzero(original.get_mask(n)) for n in erased)


def test_plant_errors_says_which_error_a_dataset_cannot_take(tmp_path):
    root = write_spines(tmp_path / "spines", 5)
    with pytest.raises(DataError, match="only 1 examples can take a planted 'dilated mask' \\(2 asked\\)"):
        planting.plant_errors(root, tmp_path / "copy", per_kind=2)


# ---------------------------------------------------------------- ranking a dataset (a stand-in model)


def stand_in_model(truths: dict, stop_after: int | None = None):
    """A fold_probabilities stand-in whose "model" is sure of `truths` (the masks before planting) and which
    predicts the fold's test split (the real k-fold split); with stop_after it is interrupted (KeyboardInterrupt)
    after that many examples in all."""
    predicted = []

    def fold_probabilities(data_dir, config, fold, folds, summary, progress=True):
        data = DataLoader(data_dir)
        split = kfold_splits(data.names, folds, fold, config.seed, config.val_fraction)
        for name in split["test"]:
            if len(predicted) == stop_after:
                raise KeyboardInterrupt
            predicted.append(name)
            yield data, name, confident(truths[name])
        summary.update(fold=fold, test=split["test"], split=split, workers=1, worker=0, epochs_run=1, best_epoch=1,
                       train_seconds=1.0, seconds=1.0)
    return fold_probabilities


@pytest.fixture
def planted_spines(tmp_path):
    """(root of a copy of 12 spine pairs with one error of each planted kind, {name: error}, original masks)."""
    original = write_spines(tmp_path / "spines", 12, ignore=255)
    planted = planting.plant_errors(original, tmp_path / "planted", per_kind=1, seed=0)
    data = DataLoader(original)
    return tmp_path / "planted", planted, {name: data.get_mask(name) for name in data.names}


def files_under(folder) -> dict:
    """{relative path: bytes} of every file under folder."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_find_label_issues_ranks_planted_errors_first_and_writes_the_promised_files(planted_spines, tmp_path,
                                                                                    monkeypatch):
    root, planted, truths = planted_spines
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    out = tmp_path / "issues"
    report = folds.find_label_issues(root, out, folds=3, progress=False)
    saved = json.loads((out / "label_issues.json").read_text())
    assert saved == json.loads(json.dumps(report))
    examples = saved["examples"]
    assert [e["rank"] for e in examples] == list(range(1, 13))
    assert [e["score"] for e in examples] == sorted(e["score"] for e in examples)
    assert {e["name"] for e in examples[:4]} == set(planted)  # a perfect model puts them on top
    expected = {"erased structure": "missing structure", "relabelled structure": "wrong class",
                "dilated mask": "boundary", "lowest structures deleted": "missing structure"}
    for entry in examples:
        assert set(entry) >= {"name", "rank", "score", "kind", "classes", "picture", "fold", "prediction",
                              "mislabelled_share"}
        assert 0 <= entry["score"] <= 1 and set(entry["classes"]) == {"disc", "vertebra"}
        prediction = np.load(out / entry["prediction"])
        assert prediction.shape == truths[entry["name"]].shape and prediction.dtype == np.uint8
        if entry["name"] in planted:
            assert entry["kind"] == expected[planted[entry["name"]]] and entry["flagged"]
            picture = np.asarray(Image.open(out / entry["picture"]))
            assert picture.shape == (*truths[entry["name"]].shape, 3)  # pixel for pixel: the review UI's panel
            assert (out / entry["sheet"]).is_file()
        else:
            assert entry["kind"] == "none" and entry["picture"] is None and not entry["flagged"]
    assert saved["labels"] == list(CLASSES) and saved["settings"]["folds"] == 3
    assert saved["dataset"]["partial_labels"] is True and saved["dataset"]["examples"] == 12
    assert [f["fold"] for f in saved["folds"]] == [0, 1, 2]
    assert sorted(name for f in saved["folds"] for name in f["test"]) == sorted(truths)
    assert sorted(p.name for p in (out / "pictures").iterdir()) == sorted(
        f"{name}{suffix}" for name in planted for suffix in (".png", ".sheet.png"))
    assert sorted(p.name for p in out.iterdir()) == ["label_issues.json", "pictures", "predictions"]
    recall = planting.planted_recall(report, planted)
    assert recall["recall_at_k"] == {"4": 1.0, "8": 1.0, "12": 1.0}
    assert [found["error"] for found in recall["examples"].values()] == [
        planted[e["name"]] for e in examples[:4]]


def test_an_interrupted_run_leaves_the_previous_results_as_they_were(planted_spines, tmp_path, monkeypatch):
    root, _, truths = planted_spines
    out = tmp_path / "issues"
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    folds.find_label_issues(root, out, folds=2, progress=False)
    before = files_under(out)
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths, stop_after=7))  # in the 2nd fold
    with pytest.raises(KeyboardInterrupt):
        folds.find_label_issues(root, out, folds=2, progress=False)
    assert files_under(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["label_issues.json", "pictures", "predictions"]


def test_format_ranking_lists_the_most_suspect_first(planted_spines, tmp_path, monkeypatch):
    root, _, truths = planted_spines
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    report = folds.find_label_issues(root, tmp_path / "issues", folds=2, progress=False)
    lines = li.format_ranking(report, top=3).splitlines()
    assert lines[0].split() == ["rank", "example", "score", "softmin", "mislabelled", "kind", "worst", "class", "fold"]
    assert [line.split()[1] for line in lines[1:4]] == [e["name"] for e in report["examples"][:3]]
    assert lines[-1] == f"4 of 12 examples have a class scoring below {li.FLAG_BELOW} (pictures/)"


# ---------------------------------------------------------------- folds as separate jobs (a stand-in model)


def test_the_k_fold_split_depends_on_the_names_and_the_seed_only_not_their_order():
    names = [f"case{k}" for k in range(23)]
    shuffled = [names[i] for i in np.random.default_rng(5).permutation(len(names))]
    for fold in range(4):
        split = kfold_splits(names, 4, fold, seed=3)
        assert kfold_splits(shuffled, 4, fold, seed=3) == split == kfold_splits(names[::-1], 4, fold, seed=3)
    tests = [kfold_splits(shuffled, 4, fold, seed=3)["test"] for fold in range(4)]
    assert sorted(name for test in tests for name in test) == sorted(names)  # every example tested by exactly one fold
    assert tests != [kfold_splits(names, 4, fold, seed=4)["test"] for fold in range(4)]  # the seed matters


def test_fold_jobs_then_merge_write_what_one_run_writes(planted_spines, tmp_path, monkeypatch):
    """Each fold on its own (in any order) writes a self-describing record; the merge ranks exactly as one run."""
    root, planted, truths = planted_spines
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    single = folds.find_label_issues(root, tmp_path / "single", folds=3, planted=planted, progress=False)
    out = tmp_path / "jobs"
    config = folds.label_issue_config()
    for fold in (2, 0, 1):
        record = folds.run_fold(root, out / folds.FOLDS_DIR, fold, 3, config, planted, progress=False)
        written = json.loads((out / "folds" / f"fold-{fold}" / "fold.json").read_text())
        assert written == json.loads(json.dumps(record))
        assert written["fold"] == fold and written["folds"] == 3 and written["training"]["seed"] == 0
        assert written["training"]["epochs"] == config.epochs and written["planted"] == planted
        assert written["data"] == folds.data_identity(root) and written["data"]["examples"] == 12
        assert written["summary"]["split"] == kfold_splits(list(truths), 3, fold, 0, config.val_fraction)
        assert sorted(e["name"] for e in written["examples"]) == sorted(written["summary"]["test"])
        for entry in written["examples"]:
            assert (out / "folds" / f"fold-{fold}" / entry["prediction"]).is_file()
    assert not list((out / "folds").glob(".*"))  # no staging folder left behind
    merged = folds.merge_folds(root, out, folds=3, config=config, planted=planted)
    assert merged["examples"] == single["examples"] and merged["planted"] == single["planted"]
    assert json.loads((out / "label_issues.json").read_text())["examples"] == single["examples"]
    assert files_under(out / "predictions") == files_under(tmp_path / "single" / "predictions")
    assert files_under(out / "pictures").keys() == files_under(tmp_path / "single" / "pictures").keys()
    assert sorted(p.name for p in out.iterdir()) == ["folds", "label_issues.json", "pictures", "predictions"]
    assert folds.merge_folds(root, out, folds=3, config=config, planted=planted)["examples"] == single["examples"]


def test_the_merge_names_missing_folds_and_refuses_folds_of_other_settings_or_data(planted_spines, tmp_path,
                                                                                    monkeypatch, capsys):
    root, _, truths = planted_spines
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    out = tmp_path / "jobs"
    config = folds.label_issue_config()
    folds.run_fold(root, out / "folds", 1, 4, config, progress=False)
    with pytest.raises(DataError) as missing:
        folds.merge_folds(root, out, folds=4, config=config)
    assert str(missing.value) == (f"{out / 'folds'}: folds 0, 2, 3 of 4 missing: run label-issues with --fold 0 "
                                  "(and the same settings) first")
    folds.run_fold(root, out / "folds", 0, 4, config.replace(epochs=20, seed=1), progress=False)
    folds.run_fold(root, out / "folds", 2, 4, config, progress=False)
    changed = tmp_path / "changed"
    shutil.copytree(root, changed)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(changed / "masks" / "case3.png")
    folds.run_fold(changed, out / "folds", 3, 4, config, progress=False)
    with pytest.raises(DataError) as mixed:
        folds.merge_folds(root, out, folds=4, config=config)
    lines = mixed.value.problems
    assert lines[0] == f"{out / 'folds' / 'fold-0' / 'fold.json'}: made with seed 1 (here 0), epochs 20 (here 40)"
    assert lines[1].startswith(f"{out / 'folds' / 'fold-3' / 'fold.json'}: made with other data (12 examples, ")
    assert len(lines) == 2 and not (out / "label_issues.json").exists()
    folds.run_fold(root, out / "folds", 0, 4, config, progress=False)  # a rerun replaces a fold's record
    folds.run_fold(root, out / "folds", 3, 4, config, progress=False)
    folds.run_fold(root, out / "folds", 1, 2, config, progress=False)  # a fold of a 2-fold run: fold-1 again
    with pytest.raises(DataError, match=r"fold-1/fold\.json: made with folds 2 \(here 4\)"):
        folds.merge_folds(root, out, folds=4, config=config)
    folds.run_fold(root, out / "folds", 1, 4, config, progress=False)
    shutil.copytree(out / "folds" / "fold-1", out / "folds" / "fold-5")
    with pytest.raises(DataError, match=r"fold-5: a fold of another run \(this one has 4 folds\): remove it"):
        folds.merge_folds(root, out, folds=4, config=config)
    shutil.rmtree(out / "folds" / "fold-5")
    assert len(folds.merge_folds(root, out, folds=4, config=config)["examples"]) == 12
    # the command line says the same, one line per problem, exit 1
    shutil.rmtree(out / "folds" / "fold-2")
    assert cli.main(["label-issues", str(root), "--out", str(out), "--merge"]) == 1
    assert "fold 2 of 4 missing" in capsys.readouterr().err


def test_an_interrupted_fold_leaves_nothing_half_written(planted_spines, tmp_path, monkeypatch):
    root, _, truths = planted_spines
    out = tmp_path / "jobs" / "folds"
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths))
    folds.run_fold(root, out, 1, 2, progress=False)
    before = files_under(out)
    monkeypatch.setattr(folds, "fold_probabilities", stand_in_model(truths, stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        folds.run_fold(root, out, 1, 2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        folds.run_fold(root, out, 0, 2, progress=False)
    assert files_under(out) == before and [p.name for p in out.iterdir()] == ["fold-1"]


def test_fold_jobs_share_one_planted_copy(tmp_path):
    """Every job of a run with --plant-errors makes the planted copy; the first in place stays (the others'
    are the same files), one of other plantings replaces it."""
    root = write_spines(tmp_path / "spines", 10)
    copy, planted = planting.planted_copy(root, tmp_path / "out", 1, seed=0)
    first = (copy / "masks").stat().st_ino
    again, planted_again = planting.planted_copy(root, tmp_path / "out", 1, seed=0)
    assert again == copy and planted_again == planted and (copy / "masks").stat().st_ino == first
    other, planted_other = planting.planted_copy(root, tmp_path / "out", 1, seed=1)
    assert other == copy and planted_other != planted and (copy / "masks").stat().st_ino != first
    assert folds.data_identity(copy) != folds.data_identity(root)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["planted-data"]


# ---------------------------------------------------------------- command line


def test_cli_bad_data_gives_one_line_per_problem_and_exit_1_before_any_training(tmp_path, capsys):
    root = write_spines(tmp_path / "spines", 6)
    for name in ("case1", "case3"):
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / f"{name}.png")  # not the image's size
    assert cli.main(["label-issues", str(root), "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "case1" in lines[0] and "case3" in lines[1], lines
    assert not (tmp_path / "out" / "label_issues.json").exists()


def test_cli_refuses_too_many_or_too_few_folds(tmp_path, capsys):
    root = write_spines(tmp_path / "spines", 3)  # 2 folds: 2 test, 1 val (20%, rounded) and no train examples
    assert cli.main(["label-issues", str(root), "--out", str(tmp_path / "out"), "--folds", "2"]) == 1
    assert capsys.readouterr().err.strip() == (f"{root}: 3 examples are too few for 2 folds (fold 0 would have no "
                                               "train examples)")
    with pytest.raises(SystemExit) as stop:
        cli.main(["label-issues", str(root), "--folds", "1"])
    assert stop.value.code == 2 and "--folds must be at least 2, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["label-issues", str(root), "--folds", "3", "--fold", "3"])
    assert stop.value.code == 2 and "--fold must be in 0..2 (--folds 3), got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["label-issues", str(root), "--fold", "0", "--merge"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------- real out-of-fold training, on unseen data


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["rgb_ignore", "mixed_sizes"])
def test_the_command_ranks_datasets_of_other_layouts_classes_and_sizes(layout, tmp_path, capsys):
    """RGB street-like scenes with 11 classes and ignore in own folder names; gray images of mixed sizes:
    `maskpair label-issues` trains (one short epoch a fold, a progress bar each) and ranks every example, each
    out-of-fold map at its image's size. (Reading the other layouts is the loader's job, tested there.)"""
    root = write_layout(tmp_path / layout, layout, n=12)
    out = tmp_path / "out"
    assert cli.main(["label-issues", str(root), "--out", str(out), "--folds", "2", "--epochs", "1"]) == 0
    printed = capsys.readouterr()
    assert f"done: label_issues.json, pictures/ and predictions/ are in {out}/" in printed.out
    assert re.search(r"fold 2/2: 100%.*1/1 \[", printed.err), printed.err[-2000:]
    report = json.loads((out / "label_issues.json").read_text())
    data = DataLoader(root)
    assert report["labels"] == list(data.labels)
    assert sorted(e["name"] for e in report["examples"]) == sorted(data.names)
    assert [e["rank"] for e in report["examples"]] == list(range(1, 13))
    assert [e["score"] for e in report["examples"]] == sorted(e["score"] for e in report["examples"])
    for entry in report["examples"]:
        prediction = np.load(out / entry["prediction"])
        assert prediction.shape == data.get_mask(entry["name"]).shape and prediction.max() < data.n_classes
        if entry["picture"]:
            assert np.asarray(Image.open(out / entry["picture"])).shape == (*prediction.shape, 3)


@pytest.mark.slow
def test_real_out_of_fold_training_ranks_planted_errors_on_top_of_data_nothing_was_tuned_on(tmp_path, capfd):
    """Two folds of the real UNet (short training) on generated scenes of round structures: the four planted
    errors (one of each kind) rank at the top of label_issues.json."""
    root = write_blobs(tmp_path / "blobs", n=16)
    planted = planting.plant_errors(root, tmp_path / "planted", per_kind=1, seed=0)
    config = folds.label_issue_config(epochs=10, patience=10, crop=None, passes_per_epoch=10)
    report = folds.find_label_issues(tmp_path / "planted", tmp_path / "out", folds=2, config=config, planted=planted,
                                  progress=False)
    ranks = {name: found["rank"] for name, found in report["planted"]["examples"].items()}
    assert sorted(ranks.values())[:3] == [1, 2, 3] and max(ranks.values()) <= 6, ranks  # measured: 1, 2, 3, 4
    assert all(entry["flagged"] for entry in report["examples"] if entry["name"] in planted)
    # nothing on the console a user could read as an error (TensorFlow's C++ log lines)
    printed = capfd.readouterr()
    assert not re.search(r"[EW]0000|NodeDef", printed.out + printed.err), printed.err[-3000:]


@pytest.mark.slow
def test_two_folds_run_as_separate_processes_then_merged_rank_as_one_run(tmp_path):
    """`label-issues --fold 0` and `--fold 1` in processes of their own (as on two machines), then `--merge`: the
    same ranking, scores and label maps as one run of both folds (TensorFlow's ops run deterministically)."""
    root = write_blobs(tmp_path / "blobs", n=8)
    command = [*CLI, "label-issues", str(root), "--folds", "2", "--epochs", "1", "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}

    def run(*arguments):
        done = subprocess.run([*command, *arguments], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    jobs = [subprocess.Popen([*command, "--out", str(tmp_path / "jobs"), "--fold", str(fold)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for fold in (1, 0)]
    for job in jobs:
        out, err = job.communicate()
        assert job.returncode == 0, err[-3000:]
        assert "done: " in out and "run label-issues with --merge" in out
    printed = run("--out", str(tmp_path / "jobs"), "--merge")
    assert f"done: label_issues.json, pictures/ and predictions/ are in {tmp_path / 'jobs'}/" in printed
    run("--out", str(tmp_path / "single"))
    merged, single = (json.loads((tmp_path / name / "label_issues.json").read_text()) for name in ("jobs", "single"))
    assert [e["name"] for e in merged["examples"]] == [e["name"] for e in single["examples"]]
    assert merged["examples"] == single["examples"]  # every score, kind and per-class figure
    assert files_under(tmp_path / "jobs" / "predictions") == files_under(tmp_path / "single" / "predictions")
    assert [f["test"] for f in merged["folds"]] == [f["test"] for f in single["folds"]]
    assert sorted(p.name for p in (tmp_path / "single").iterdir()) == ["label_issues.json", "pictures", "predictions"]


@pytest.mark.slow
def test_a_fold_trained_by_two_local_workers_is_written_once_by_the_chief(tmp_path):
    """`label-issues --fold 0` as two workers of one cluster (TF_CONFIG on loopback, as on two machines): both
    finish, only the chief writes the fold, and its record says two workers trained it."""
    from maskpair.cli.train import local_tf_configs

    root = write_blobs(tmp_path / "blobs", n=8)
    out = tmp_path / "out"
    command = [*CLI, "label-issues", str(root), "--out", str(out), "--folds", "2", "--epochs", "1", "--fold", "0"]
    workers = [subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(PROJECT_DIR), "TF_CONFIG": config},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for config in local_tf_configs(2)]
    printed = [worker.communicate(timeout=900) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in printed]
    assert "fold 0 of 2 done: 4 examples scored" in printed[0][0]
    assert "this worker's part is done; the chief (worker 0) writes the fold" in printed[1][0]
    record = json.loads((out / "folds" / "fold-0" / "fold.json").read_text())
    assert record["summary"]["workers"] == 2 and len(record["examples"]) == 4
    assert [p.name for p in (out / "folds").iterdir()] == ["fold-0"]


def test_plant_errors_writes_masks_as_the_dataset_stores_them(tmp_path):
    """Colour-coded masks get colours: the copy reads with the same description, and only planted examples
    differ."""
    from published import write_published

    data = write_published(tmp_path / "camvid", "camvid", n=8)
    planted = planting.plant_errors(data.root, tmp_path / "copy", per_kind=1, seed=0)
    original, copy = DataLoader(data.root), DataLoader(tmp_path / "copy")
    assert copy.description.labels == original.description.labels
    for name in original.names:
        before, after = original.get_mask(name), copy.get_mask(name)
        assert np.array_equal(before, after) == (name not in planted), name
        assert np.array_equal(before == IGNORE_INDEX, after == IGNORE_INDEX), name


def test_a_written_mask_with_a_field_of_view_reads_back_as_written(tmp_path):
    """A GIF mask beside an ROI (DRIVE's layout): the label map written, outside the field of view included, is
    what the loader reads back, and the file stays a GIF."""
    from published import write_published

    data = write_published(tmp_path / "drive", "drive", n=2)
    copy = tmp_path / "copy"
    shutil.copytree(data.root, copy)
    original = DataLoader(data.root)
    name = original.names[0]
    labels = original.get_mask(name)
    flipped = np.where(labels == IGNORE_INDEX, IGNORE_INDEX, 1 - labels).astype(np.uint8)
    target = copy / Path(original.pairs[name][1]).relative_to(data.root)
    planting.write_mask(target, flipped, original.description, Path(original.pairs[name][1]))
    assert Image.open(target).format == "GIF"
    assert np.array_equal(DataLoader(copy).get_mask(name), flipped)
