"""Each kind of bad input is refused with a message naming the file(s) and the problem, by API and CLI."""
import subprocess
import sys

import numpy as np
import pytest

import loader
from synthetic import write_dataset


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "d", [str(i) for i in range(6)])


def refused(data_dir, *needles):
    """Assert both the DataLoader and `loader.py check` refuse `data_dir` with every needle in the message."""
    with pytest.raises(loader.DataError) as err:
        loader.DataLoader(data_dir, batch_size=1)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    cli = subprocess.run([sys.executable, str(loader.PROJECT_DIR / "loader.py"), "check", str(data_dir)],
                         capture_output=True, text=True)
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr + cli.stdout
    for needle in needles:
        assert needle in cli.stderr, (needle, cli.stderr)
    return str(err.value)


def test_missing_folders(tmp_path, dataset):
    import shutil

    shutil.rmtree(dataset / "masks")
    refused(dataset, "no masks/ folder")
    shutil.rmtree(dataset / "images")
    refused(dataset, "no images/ folder", "no masks/ folder")
    refused(tmp_path / "nowhere", "no such data folder")


def test_empty_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / ".DS_Store").write_text("hidden files do not count")
    refused(tmp_path, "images: empty folder", "masks: empty folder")


def test_every_orphan_is_listed(dataset):
    (dataset / "masks" / "1.npy").unlink()
    (dataset / "masks" / "4.npy").unlink()
    (dataset / "images" / "5.png").unlink()
    message = refused(dataset, "images/1.png: no matching mask", "images/4.png: no matching mask",
                      "masks/5.npy: no matching image")
    assert len(message.splitlines()) == 3


def test_two_files_for_one_name(dataset):
    np.save(dataset / "images" / "3.npy", np.zeros((32, 32), np.uint8))
    refused(dataset, "two files for example 3")


def test_unsupported_file_type(dataset):
    (dataset / "images" / "notes.txt").write_text("hello")
    refused(dataset, "images/notes.txt: unsupported file type")


def test_truncated_png(dataset):
    data = (dataset / "images" / "2.png").read_bytes()
    (dataset / "images" / "2.png").write_bytes(data[: len(data) // 2])
    refused(dataset, "images/2.png", "truncated")


@pytest.mark.parametrize("keep", [100, 500])  # cut inside the header, and inside the data
def test_truncated_npy(dataset, keep):
    data = (dataset / "masks" / "3.npy").read_bytes()
    (dataset / "masks" / "3.npy").write_bytes(data[:keep])
    refused(dataset, "masks/3.npy", "truncated")


def test_garbage_file(dataset):
    (dataset / "images" / "0.png").write_bytes(b"not a png at all")
    refused(dataset, "images/0.png: unreadable")


def test_shape_mismatch_names_both_shapes(dataset):
    np.save(dataset / "masks" / "1.npy", np.zeros((16, 32), np.int64))
    refused(dataset, "masks/1.npy: shape 16x32, image images/1.png is 32x32")


def test_non_integer_mask(dataset):
    np.save(dataset / "masks" / "2.npy", np.full((32, 32), 0.5))
    refused(dataset, "masks/2.npy: mask is not integer-valued")


def test_integral_float_mask_is_accepted(dataset):
    mask = np.load(dataset / "masks" / "2.npy")
    np.save(dataset / "masks" / "2.npy", mask.astype(np.float32))
    assert np.array_equal(loader.DataLoader(dataset, batch_size=1).get_mask("2"), mask)


def test_nan_mask(dataset):
    mask = np.zeros((32, 32))
    mask[3, 4] = np.nan
    np.save(dataset / "masks" / "4.npy", mask)
    refused(dataset, "masks/4.npy: mask holds NaN")


def test_label_outside_label_set(dataset):
    mask = np.load(dataset / "masks" / "5.npy")
    mask[0, 0] = 7
    np.save(dataset / "masks" / "5.npy", mask)
    refused(dataset, "masks/5.npy: label value(s) 7 outside the label set")


def test_negative_label(dataset):
    mask = np.load(dataset / "masks" / "5.npy")
    mask[0, 0] = -1
    np.save(dataset / "masks" / "5.npy", mask)
    refused(dataset, "masks/5.npy: label value(s) -1")


def test_object_array_refused_without_unpickling(dataset, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(dataset / "masks" / "0.npy", np.array([Evil()], dtype=object), allow_pickle=True)
    refused(dataset, "masks/0.npy: object array")
    assert not marker.exists()


def test_all_problems_reported_together(dataset):
    np.save(dataset / "masks" / "1.npy", np.zeros((16, 32), np.int64))
    np.save(dataset / "masks" / "2.npy", np.full((32, 32), 9))
    message = refused(dataset, "masks/1.npy", "masks/2.npy")
    assert len(message.splitlines()) == 2


def test_check_prints_a_summary_for_good_data(example_data):
    cli = subprocess.run([sys.executable, str(loader.PROJECT_DIR / "loader.py"), "check", str(example_data)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "20 pairs, shape 256x256" in cli.stdout
    for label in loader.LABELS:
        assert label in cli.stdout
