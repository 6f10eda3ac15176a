"""batch_check: tracing by content catches swapped masks; coverage and augmentation agreement measure truly."""
import numpy as np
import pytest
from synthetic import write_dataset, write_layout

from maskpair import batch_check, figures
from maskpair.data.augment import Augment
from maskpair.data.loader import DataLoader


@pytest.fixture
def data(tmp_path):
    return DataLoader(write_dataset(tmp_path, [str(i) for i in range(8)]), batch_size=2, remainder="fill")


def test_trace_names_each_item_and_rejects_a_swapped_mask(data):
    index = batch_check.ContentIndex(data)
    images, masks = data.batch_arrays(["3", "5"], "train")
    assert index.trace(images, masks) == ["3", "5"]
    with pytest.raises(AssertionError, match="another example's mask"):
        index.trace(images, masks[::-1])
    with pytest.raises(AssertionError, match="matches no source image"):
        index.trace(1 - images, masks)


def test_epoch_coverage_counts_the_fill(data):
    coverage = batch_check.epoch_coverage(data, "train", epochs=2)
    train = data.splits["train"]
    assert sorted(coverage) == sorted(train)
    for epoch in range(2):
        seen = [counts[epoch] for counts in coverage.values()]
        assert min(seen) == 1 and sum(seen) == data.steps_per_epoch("train") * data.batch_size


def test_split_table_reports_disjointness(data):
    rows = batch_check.split_table(data)
    assert rows[-1]["names"] == "disjoint=True complete=True"
    data.splits["val"] = data.splits["val"] + data.splits["train"][:1]  # plant an overlap
    assert batch_check.split_table(data)[-1]["names"].startswith("disjoint=False")


def test_augmentation_agreement_high_for_paired_geometry_and_low_when_broken(monkeypatch):
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 12:40], mask[40:55, 20:50] = 1, 2
    augment = Augment(flip_lr=1.0, rotate_deg=20)
    assert batch_check.augmentation_agreement(augment, mask, seed=1) > 0.97
    real_apply = Augment.apply

    def mask_not_moved(self, image, m, rng):  # a broken augmentation that forgets to move the mask
        return real_apply(self, image, m, rng)[0], m

    monkeypatch.setattr(Augment, "apply", mask_not_moved)
    assert batch_check.augmentation_agreement(augment, mask, seed=1) < 0.9


def test_batch_summary_flags_a_bad_one_hot():
    images = np.zeros((1, 4, 4, 1), np.float32)
    masks = np.zeros((1, 4, 4, 3), np.float32)
    masks[..., 0] = 1
    key = "one-hot rows sum to 1 (or 0: ignore/padding)"
    assert batch_check.batch_summary(images, masks)[key] is True
    masks[0, 1, 1] = 0  # a pixel without target is allowed
    assert batch_check.batch_summary(images, masks)[key] is True
    masks[0, 0, 0, 1] = 1
    assert batch_check.batch_summary(images, masks)[key] is False


def test_trace_handles_padded_batches_of_mixed_sizes_and_ignore(tmp_path):
    for layout in ("mixed_sizes", "rgb_ignore"):
        data = DataLoader(write_layout(tmp_path / layout, layout), batch_size=3, pad_multiple=32)
        index = batch_check.ContentIndex(data)
        names = data.names[:3]
        images, masks = data.batch_arrays(names)
        assert index.trace(images, masks) == names
        labels = batch_check.labels_of(masks)
        assert (labels[0, : data.sizes[names[0]][0], : data.sizes[names[0]][1]] == data.get_mask(names[0])).all()


def test_overlay_tints_labels_and_contours_only_edges():
    image = np.full((8, 8), 0.5, np.float32)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    filled = figures.overlay_rgb(image, mask)
    assert np.allclose(filled[0, 0], 0.5) and not np.allclose(filled[3, 3], 0.5)
    edges = figures.overlay_rgb(image, mask, contour=True)
    assert np.allclose(edges[3, 3], 0.5) and np.allclose(edges[2, 2], figures.CLASS_COLOURS[1])
    assert np.allclose(figures.overlay_rgb(image, mask, classes=[2]), 0.5)


def test_compact_batches_expand_to_the_float_batches_and_say_what_has_no_target(tmp_path):
    data = DataLoader(write_layout(tmp_path / "mixed", "mixed_sizes"), batch_size=3, pad_multiple=32)
    names = data.names[:3]  # 24x32, 32x48, 40x40: padded to 64x64
    compact = data.batch_arrays(names, compact=True)
    for got, want in zip(batch_check.expand_compact(*compact, data.n_classes), data.batch_arrays(names)):
        assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)
    summary = batch_check.compact_summary(*compact)
    padding = 1 - sum(h * w for h, w in (data.sizes[n] for n in names)) / (3 * 64 * 64)
    assert summary["pixels without target"] == f"{padding:.1%}" and "uint8 values [0, 1, 2, 255]" in summary["label maps"]
