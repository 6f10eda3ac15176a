"""The loader benchmark runs and prints every row; the fast batch paths (in memory, disk cache, streaming; float
and compact) give exactly the reference values."""
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_DIR
from PIL import Image
from synthetic import write_dataset, write_dataset_json

from maskpair.data import batches
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.loader import DataLoader
from maskpair.data.reading import image_to_float, read_pair
from maskpair.errors import DataError

BENCH = PROJECT_DIR / "bench" / "bench_loader.py"
SHAPE = (128, 128)  # batches of 8 exceed 1 MB of one-hot, so the threaded assembly path runs


def one_hot(labels, n_classes):
    """np.eye one-hot with an all-zero row for IGNORE_INDEX (ignore and padding)."""
    rows = np.vstack([np.eye(n_classes, dtype=np.float32), np.zeros((1, n_classes), np.float32)])
    return rows[np.where(labels == IGNORE_INDEX, n_classes, labels)]


def reference_batch(data, names, split, epoch, step):
    """The original per-example assembly (read, /255, np.eye one-hot): what every optimisation must reproduce."""
    augment = data.augment if split == "train" else None
    rng = data._augment_rng(split, epoch, step)
    images, onehots = [], []
    for name in names:
        image, mask = read_pair(*data.pairs[name], data.description)
        image = image_to_float(image)
        if augment:
            image, mask = augment.apply(image, mask, rng)
        images.append(image)
        onehots.append(one_hot(mask, data.n_classes))
    return np.stack(images).astype(np.float32), np.stack(onehots)


def expanded(compact, n_classes):
    """A compact batch as the model (`images_to_unit_range`) and its loss (`one_hot_targets`) expand it on the
    device, in numpy."""
    images, labels = compact
    assert labels.dtype == np.uint8 and labels.shape == images.shape[:3]
    return image_to_float(images), one_hot(labels, n_classes)


def assert_batches_equal(got, want):
    for array, expected in zip(got, want):
        assert array.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(array, expected)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("bench") / "data", [str(k) for k in range(32)], shape=SHAPE)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("augment", [None, True])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_cached_disk_streaming_and_reference_batches_identical(dataset, augment, batch_size, threaded, monkeypatch,
                                                               tmp_path):
    monkeypatch.setattr(batches, "_ASSEMBLY_THREADS", 2 if threaded else 1)
    loaders = [DataLoader(dataset, batch_size=batch_size, split=(0.5, 0.5, 0.0), cache=cache, augment=augment,
                                 remainder="keep", cache_dir=tmp_path / "cache" if cache == "disk" else None)
               for cache in (True, "disk", False)]
    for split in ("train", "val"):
        eight_bit = augment is None or split == "val"
        for epoch, step, names in loaders[0].iter_epochs(split, epochs=2):
            want = reference_batch(loaders[0], names, split, epoch, step)
            for data in loaders:
                assert_batches_equal(data.batch_arrays(names, split, epoch, step), want)
                compact = data.batch_arrays(names, split, epoch, step, compact=True)
                assert compact[0].dtype == (np.uint8 if eight_bit else np.float32)  # augmented: beyond 8 bits
                assert_batches_equal(expanded(compact, data.n_classes), want)


def test_streaming_mixes_8_and_16_bit_images(dataset, tmp_path):
    mixed = write_dataset(tmp_path / "mixed", ["a", "b", "c"], shape=SHAPE)
    wide = (np.asarray(Image.open(mixed / "images" / "b.png")).astype(np.uint16) * 257)
    Image.fromarray(wide).save(mixed / "images" / "b.png")
    data = DataLoader(mixed, batch_size=3, split=(1.0, 0.0, 0.0), cache=False)
    names = ["a", "b", "c"]
    want = reference_batch(data, names, "train", 0, 0)
    assert_batches_equal(data.batch_arrays(names), want)
    compact = data.batch_arrays(names, compact=True)
    assert compact[0].dtype == np.float32  # one 16-bit image: the whole batch in [0, 1]
    assert_batches_equal(expanded(compact, data.n_classes), want)


def test_streaming_errors_name_the_first_bad_example_in_batch_order(dataset, tmp_path):
    bad = write_dataset(tmp_path / "bad", ["a", "b", "c", "d"], shape=SHAPE)
    write_dataset_json(bad, labels={"dark": 0, "mid": 1, "bright": 2})  # so 7 is no label (not inferred as one)
    np.save(bad / "masks" / "c.npy", np.full(SHAPE, 7, dtype=np.int64))
    data = DataLoader(bad, batch_size=2, split=(1.0, 0.0, 0.0), cache=False)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad / "images" / "d.png")  # changed after construction
    np.save(bad / "masks" / "d.npy", np.zeros((64, 64), dtype=np.int64))
    with pytest.raises(DataError, match=r"masks/c\.npy: value 7 is not in dataset.json labels"):
        data.batch_arrays(["a", "c", "d"])
    with pytest.raises(DataError, match=r"images/d\.png: shape 64x64, but 128x128 when the loader was built"):
        data.batch_arrays(["d", "c"])
    with pytest.raises(KeyError, match="no example named 'zz'"):
        data.batch_arrays(["a", "zz", "c"])


def _batch_checksum(data):
    images, masks = data.batch_arrays(data.splits["train"][:8])
    return float(images.sum()), float(masks.sum())


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_batches_in_a_forked_child(dataset):
    """A child forked after the parent assembled batches must not wait on the parent's (absent) threads."""
    data = DataLoader(dataset, batch_size=8, split=(1.0, 0.0, 0.0))
    expected = _batch_checksum(data)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_batch_checksum, (data,)).get(timeout=60) == expected


@pytest.mark.slow
def test_bench_quick_prints_every_row(dataset, tmp_path):
    real = write_dataset(tmp_path / "real", [str(k) for k in range(20)], shape=SHAPE)
    write_dataset_json(real, channel_names={"0": "gray"}, labels={"dark": 0, "mid": 1, "bright": 2})
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--pairs", "40", "--data-dir", str(real),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| 20 real", "| 40 gen"))]
    names = ("naive", "cached", "cached compact", "disk compact", "streaming", "augmented compact",
             "fit input, memory", "fit input, disk", "tf.data decode", "tf.data cache", "copy bound f32",
             "copy bound u8")
    assert len(rows) == 2 * len(names), done.stdout  # --quick: B=16 only
    for name in names:
        assert sum(f"| {name} |" in row for row in rows) == 2, name
    assert "% u8 |" in done.stdout and "% f32 |" in done.stdout  # each row says which copy bound it refers to
    # per fit input: x tf.data, share of the u8 copy bound, memory against the cached tf.data; 3 disk-cache checks
    assert done.stdout.count("PASS  ") + done.stdout.count("FAIL  ") == 9
    assert "disk cache of 40 generated: first open (build)" in done.stdout
    assert "in-memory cache of 40 generated: peak RSS" in done.stdout
    assert (tmp_path / "cache" / "real-40-seed0" / ".complete").is_file()
    assert len(list((tmp_path / "cache" / "real-40-seed0.cache").iterdir())) == 1  # one complete key, nothing else


@pytest.mark.slow
def test_backbone_bench_prints_one_row_per_backbone_relative_to_the_first():
    script = PROJECT_DIR / "bench" / "bench_backbones.py"
    done = subprocess.run([sys.executable, str(script), "--backbones", "resnet18", "mobilenetv2", "--steps", "2",
                           "--crop", "64"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
            if line.startswith(("resnet18 ", "mobilenetv2 "))}
    assert set(rows) == {"resnet18", "mobilenetv2"}, done.stdout
    assert rows["resnet18"][2] == "1.00"
    assert int(rows["mobilenetv2"][0].replace(",", "")) < int(rows["resnet18"][0].replace(",", ""))


@pytest.mark.slow
def test_train_bench_prints_a_row_per_setting_relative_to_the_default():
    script = PROJECT_DIR / "bench" / "bench_train.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--xla", "off", "--precisions", "float32",
                           "mixed_bfloat16", "--sizes", "32"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 4 | 32 px crops |")]
    assert [[cell.strip() for cell in row[2:4]] for row in rows] == [["off", "float32"], ["off", "mixed_bfloat16"]]
    assert rows[0][6].strip() == "1.00" and all(float(row[4]) > 0 for row in rows), done.stdout  # x default, steps/s
