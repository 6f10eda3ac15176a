"""DataLoader(cache="disk"): built once, reopened without reading a file, rebuilt when a file or dataset.json
changes, never used half-built, the same batches as the other modes, anonymous memory flat while reading."""
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
from synthetic import (
    derive_mask,
    make_image,
    write_array,
    write_dataset,
    write_dataset_json,
    write_layout,
)

from maskpair.data import disk_cache, inspection, reading, stores
from maskpair.data.loader import DataLoader
from maskpair.data.reading import read_pair
from maskpair.errors import DataError

LABELS = {"dark": 0, "mid": 1, "bright": 2}


@pytest.fixture
def dataset(tmp_path):
    root = write_dataset(tmp_path / "d", [str(k) for k in range(10)])
    write_dataset_json(root, labels=LABELS)
    return root


@pytest.fixture
def decodes(monkeypatch):
    """Counts the pairs decoded (read_pair calls) from now on."""
    calls = []
    monkeypatch.setattr(stores, "read_pair", lambda *args: calls.append(args[0]) or read_pair(*args))
    return calls


def open_disk(root, **options):
    return DataLoader(root, batch_size=2, cache="disk", cache_dir=root.parent / "cache", **options)


def keys(folder):
    """The entries of a cache folder: complete keys and anything else left there."""
    return sorted(path.name for path in folder.iterdir())


def assert_same_batches(a, b, split="val"):
    for compact in (False, True):
        for epoch, step, names in a.iter_epochs(split, epochs=1):
            for x, y in zip(a.batch_arrays(names, split, epoch, step, compact),
                            b.batch_arrays(names, split, epoch, step, compact)):
                assert x.dtype == y.dtype and np.array_equal(x, y)


def test_default_folder_is_beside_the_data_and_nothing_is_written_inside(dataset):
    before = sorted(path.relative_to(dataset) for path in dataset.rglob("*"))
    data = DataLoader(dataset, batch_size=2, cache="disk")
    assert disk_cache.default_folder(dataset) == dataset.parent / "d.cache"
    assert len(keys(dataset.parent / "d.cache")) == 1
    assert sorted(path.relative_to(dataset) for path in dataset.rglob("*")) == before
    assert_same_batches(data, DataLoader(dataset, batch_size=2))


def test_reopening_reads_no_file_and_gives_the_same_loader(dataset, monkeypatch):
    built = open_disk(dataset, augment=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read on reopening")

    for module in (stores, inspection, reading):  # wherever a reader is looked up
        for reader in ("read_pair", "read_header", "read_image", "read_mask_values"):
            if hasattr(module, reader):
                monkeypatch.setattr(module, reader, refuse)
    again = open_disk(dataset, augment=True)
    assert (again.description, again.sizes, again.names, again.splits) == (
        built.description, built.sizes, built.names, built.splits)
    assert again.description.source == str(dataset / "dataset.json")
    for split in ("train", "val"):
        assert_same_batches(built, again, split)
    image, labels = again.raw_pair("3")
    assert image.shape == (32, 32, 1) and labels.shape == (32, 32)
    with pytest.raises(ValueError, match="read-only"):
        labels[0, 0] = 1  # a caller's edit must not reach the cache


def touch_later(path):
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def same_mtime_other_size(path):
    stat = os.stat(path)
    np.save(path, np.load(path).astype(np.int32))  # same values, fewer bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("change", ["mtime", "size", "dataset.json", "added pair", "removed pair"])
def test_a_changed_file_or_description_rebuilds(dataset, decodes, change):
    open_disk(dataset)
    assert len(decodes) == 10
    open_disk(dataset)
    assert len(decodes) == 10  # reopened: nothing decoded
    if change == "mtime":
        touch_later(dataset / "images" / "4.png")
    elif change == "size":
        same_mtime_other_size(dataset / "masks" / "4.npy")
    elif change == "dataset.json":
        write_dataset_json(dataset, labels={"low": 0, "middle": 1, "high": 2})
    elif change == "added pair":
        write_dataset(dataset.parent / "more", ["10"])
        for kind, suffix in (("images", ".png"), ("masks", ".npy")):
            os.replace(dataset.parent / "more" / kind / f"10{suffix}", dataset / kind / f"10{suffix}")
    else:
        (dataset / "images" / "4.png").unlink()
        (dataset / "masks" / "4.npy").unlink()
    data = open_disk(dataset)
    n_pairs = {"added pair": 11, "removed pair": 9}.get(change, 10)
    assert len(decodes) == 10 + n_pairs and len(data.names) == n_pairs
    assert len(keys(dataset.parent / "cache")) == 1  # the old key is deleted
    if change == "dataset.json":
        assert data.labels == ("low", "middle", "high")
    assert_same_batches(data, DataLoader(dataset, batch_size=2))


def test_an_interrupted_build_leaves_nothing_usable_and_the_next_open_builds(dataset, monkeypatch, decodes):
    counting = stores.read_pair  # the `decodes` fixture's

    def interrupted(*args):
        if len(decodes) == 5:
            raise KeyboardInterrupt
        return counting(*args)

    monkeypatch.setattr(stores, "read_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_disk(dataset)
    assert keys(dataset.parent / "cache") == []  # the partial build is removed, not renamed
    monkeypatch.setattr(stores, "read_pair", read_pair)
    assert_same_batches(open_disk(dataset), DataLoader(dataset, batch_size=2))


def test_a_killed_build_and_a_truncated_cache_are_never_used(dataset, decodes):
    data = open_disk(dataset)
    folder = dataset.parent / "cache"
    (key,) = keys(folder)
    abandoned = folder / f"{key}{disk_cache.TMP_MARK}999999999-x"  # a pid that cannot be running
    abandoned.mkdir()
    (abandoned / "images.bin").write_bytes(b"partial")
    with open(folder / key / "images.bin", "r+b") as images:  # e.g. a disk that filled up
        images.truncate(100)
    del data
    again = open_disk(dataset)
    assert len(decodes) == 20  # rebuilt
    assert keys(folder) == [key]  # the killed build's folder is removed too
    assert_same_batches(again, DataLoader(dataset, batch_size=2))


def test_every_bad_pair_is_reported_and_nothing_is_kept(dataset):
    np.save(dataset / "masks" / "2.npy", np.full((32, 32), 7, np.int64))
    np.save(dataset / "masks" / "6.npy", np.full((32, 32), 9, np.int64))
    with pytest.raises(DataError) as err:
        open_disk(dataset)
    assert [line.split(":")[0] for line in err.value.problems] == ["masks/2.npy", "masks/6.npy"]
    assert keys(dataset.parent / "cache") == []


@pytest.mark.parametrize("layout", ["rgb_ignore", "mixed_sizes", "nnunet", "deep"])
def test_memory_disk_and_streaming_give_the_same_batches(tmp_path, layout):
    root = write_layout(tmp_path / "d", "gray" if layout == "deep" else layout, n=12)
    if layout == "deep":  # 16-bit and float images: stored as float32, compact batches in float32
        write_array(root / "images" / "1.png", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)
        (root / "images" / "2.png").unlink()
        np.save(root / "images" / "2.npy", np.full((32, 32, 1), 0.25, np.float32))
    loaders = [DataLoader(root, batch_size=3, cache=cache, augment=True,
                                 cache_dir=tmp_path / "cache" if cache == "disk" else None)
               for cache in (True, "disk", False)]
    assert loaders[1].compact_image_dtype("val") == (np.float32 if layout == "deep" else np.uint8)
    for data in loaders[1:]:
        assert data.description == loaders[0].description and data.sizes == loaders[0].sizes
        for split in ("train", "val"):
            assert data.compact_image_dtype(split) == loaders[0].compact_image_dtype(split)
            assert_same_batches(loaders[0], data, split)


def test_a_pickled_disk_loader_maps_the_files_again(dataset):
    """Sent to a worker process, the loader carries the cache's folder, not its bytes."""
    data = open_disk(dataset)
    image_bytes = (next((dataset.parent / "cache").iterdir()) / "images.bin").stat().st_size
    copy = pickle.loads(pickle.dumps(data))
    assert len(pickle.dumps(data.store)) < image_bytes / 4
    assert_same_batches(data, copy)


def test_cache_options_are_checked(dataset):
    with pytest.raises(ValueError, match="cache must be True"):
        DataLoader(dataset, cache="memory")
    with pytest.raises(ValueError, match="cache_dir is used only with cache=\"disk\""):
        DataLoader(dataset, cache=True, cache_dir=dataset.parent / "cache")


ANON_SCRIPT = """
import json, sys
from pathlib import Path

from maskpair import DataLoader

def status(field):
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith(field + ":"))

root, cache_dir = sys.argv[1:]
base = {field: status(field) for field in ("RssAnon", "RssFile")}
data = DataLoader(root, batch_size=16, split=(1.0, 0.0, 0.0), cache="disk", cache_dir=cache_dir)
peak = 0
for compact in (False, True):
    for epoch, step, names in data.iter_epochs("train", epochs=1):
        data.batch_arrays(names, "train", epoch, step, compact)
        peak = max(peak, status("RssAnon") - base["RssAnon"])
print(json.dumps({"anon": peak, "file": status("RssFile") - base["RssFile"]}))
"""


def write_many(root, n_pairs, shape):
    """`n_pairs` distinct uint8 .npy pairs (shifts of one image, masks derived from each): quick to write and read."""
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
    image = make_image(0, shape)
    for k in range(n_pairs):
        shifted = np.roll(image, k, axis=1)
        np.save(root / "images" / f"{k}.npy", shifted)
        np.save(root / "masks" / f"{k}.npy", derive_mask(shifted))
    write_dataset_json(root, labels=LABELS)
    return root


@pytest.mark.slow
def test_reading_an_epoch_keeps_anonymous_memory_flat(tmp_path):
    root = write_many(tmp_path / "big", 2000, (256, 256))
    DataLoader(root, batch_size=16, cache="disk", cache_dir=tmp_path / "cache")  # built here
    data_bytes = 2000 * 256 * 256 * 2
    done = subprocess.run([sys.executable, "-c", ANON_SCRIPT, str(root), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    grown = json.loads(done.stdout)
    assert grown["file"] > 0.8 * data_bytes  # every pair was read: its pages count in RSS, as file pages ...
    assert grown["anon"] < data_bytes / 4, grown  # ... and the process holds no copy of the data


@pytest.mark.slow
def test_reopening_thousands_of_pairs_is_quick(tmp_path, monkeypatch):
    root = write_many(tmp_path / "many", 4000, (16, 16))
    DataLoader(root, batch_size=16, cache="disk", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(inspection, "read_header", None)  # reopening must not read a header
    start = time.perf_counter()
    data = DataLoader(root, batch_size=16, cache="disk", cache_dir=tmp_path / "cache")
    seconds = time.perf_counter() - start
    assert len(data.names) == 4000
    assert seconds < 2.0, seconds  # 20,000 pairs in 2 s is the target: 5x the budget per pair, for a busy machine
