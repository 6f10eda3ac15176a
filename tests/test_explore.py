"""explore: stored formats read from headers, per-class counts and fractions, class intensity histograms."""
import numpy as np
import pytest

import explore
import loader
from synthetic import derive_mask, make_image, write_dataset


@pytest.fixture
def data(tmp_path):
    return loader.DataLoader(write_dataset(tmp_path, ["a", "b", "c"]), batch_size=1)


def test_inventory_reports_stored_formats_and_counts(data):
    rows = explore.inventory(data)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["image format"] == "32x32 L" and rows[0]["mask format"] == "32x32 int64"
    expected = np.bincount(derive_mask(make_image(0)).ravel(), minlength=3)
    assert [rows[0][label] for label in loader.LABELS] == expected.tolist()


def test_fractions_sum_to_one_and_match_counts(data):
    fractions = explore.class_fractions(data)
    rows = explore.inventory(data)
    total = sum(r[label] for r in rows for label in loader.LABELS)
    assert fractions["disc"] == pytest.approx(sum(r["disc"] for r in rows) / total)
    assert sum(fractions.values()) == pytest.approx(1.0)


def test_intensity_histograms_separate_the_classes(data):
    edges, hist = explore.intensity_by_class(data, bins=8)
    # synthetic labels are intensity bands, so each class's pixels fall in its own band of bins
    assert hist["background"][-1] == 0 and hist["vertebra"][0] == 0
    assert sum(h.sum() for h in hist.values()) == 3 * 32 * 32
