"""explore: stored formats read from headers, per-class counts, presence and fractions, intensity histograms."""
import numpy as np
import pytest
from synthetic import (
    derive_mask,
    make_image,
    write_dataset,
    write_dataset_json,
    write_layout,
)

from maskpair import explore
from maskpair.data.loader import DataLoader

LABELS = ("background", "disc", "vertebra")


@pytest.fixture
def data(tmp_path):
    root = write_dataset(tmp_path, ["a", "b", "c"])
    write_dataset_json(root, labels=dict(zip(LABELS, range(3))))
    return DataLoader(root, batch_size=1)


def test_inventory_reports_stored_formats_and_counts(data):
    rows = explore.inventory(data)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["image format"] == "32x32 L" and rows[0]["mask format"] == "32x32 int64"
    expected = np.bincount(derive_mask(make_image(0)).ravel(), minlength=3)
    assert [rows[0][label] for label in LABELS] == expected.tolist()


def test_fractions_sum_to_one_and_match_counts(data):
    fractions = explore.class_fractions(data)
    rows = explore.inventory(data)
    total = sum(r[label] for r in rows for label in LABELS)
    assert fractions["disc"] == pytest.approx(sum(r["disc"] for r in rows) / total)
    assert sum(fractions.values()) == pytest.approx(1.0)


def test_intensity_histograms_separate_the_classes(data):
    edges, hist = explore.intensity_by_class(data, bins=8)
    # synthetic labels are intensity bands, so each class's pixels fall in its own band of bins
    assert hist["background"][-1] == 0 and hist["vertebra"][0] == 0
    assert sum(h.sum() for h in hist.values()) == 3 * 32 * 32


def test_ignore_pixels_are_counted_apart_and_presence_counts_examples(tmp_path):
    data = DataLoader(write_layout(tmp_path, "rgb_ignore"), batch_size=1)
    rows = explore.inventory(data)
    assert any(row["ignore"] for row in rows)
    fractions = explore.class_fractions(data)
    assert set(fractions) == {*data.labels, "ignore"} and sum(fractions.values()) == pytest.approx(1.0)
    presence = explore.class_presence(data, data.names)
    assert list(presence) == list(data.labels)
    assert all(0 <= n <= len(data.names) for n in presence.values())
    expected = {label: sum(row[label] > 0 for row in rows) for label in data.labels}
    assert presence == expected
    edges, hist = explore.intensity_by_class(data, bins=8)  # RGB: brightness is the mean over channels
    assert sum(h.sum() for h in hist.values()) == sum(sum(row[label] for label in data.labels) for row in rows)
