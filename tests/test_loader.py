"""DataLoader: pairing, splits, epochs, remainder policies, augmentation and the batch contents."""
import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
from conftest import PROJECT_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import (
    LAYOUTS,
    MIXED_SIZES,
    derive_mask,
    expected_labels,
    write_array,
    write_dataset,
    write_layout,
)

from maskpair.data import files
from maskpair.data.augment import Augment
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.files import pair_files
from maskpair.data.inspection import describe
from maskpair.data.loader import REMAINDER_POLICIES, DataLoader
from maskpair.data.splits import (
    SET_ASIDE,
    SPLITS,
    fitting_batch_size,
    kfold_splits,
    split_names,
)
from maskpair.errors import DataError

NAMES = [str(i) for i in range(10)]
fast_examples = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_paired(data: DataLoader):
    """Every example's mask is the one derived from its own image (so a wrong pairing fails)."""
    for name in data.names:
        image_u8 = np.round(data.get_image(name)[..., 0] * 255).astype(np.uint8)
        assert np.array_equal(data.get_mask(name), derive_mask(image_u8)), name


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "d", NAMES)


# ---------------------------------------------------------------- pairing


@fast_examples
@given(names=st.lists(st.from_regex(r"[a-z0-9_\-]{1,8}", fullmatch=True), min_size=2, max_size=12, unique=True),
       seed=st.integers(0, 2**16))
def test_pairs_by_stem_whatever_the_names_and_order(tmp_path_factory, names, seed):
    root = tmp_path_factory.mktemp("names")
    order = list(np.random.default_rng(seed).permutation(names))  # files created in a random order
    write_dataset(root, order, seed=seed)
    (root / "images" / ".DS_Store").write_bytes(b"\0junk")
    (root / "masks" / ".ipynb_checkpoints").mkdir()
    (root / "masks" / ".ipynb_checkpoints" / "x.npy").write_bytes(b"junk")
    data = DataLoader(root, batch_size=1, split=(1.0, 0.0, 0.0))
    assert sorted(data.names) == sorted(names)
    assert_paired(data)


def test_names_in_natural_order(tmp_path):
    write_dataset(tmp_path, ["10", "2", "1", "b", "a10", "a9"])
    assert DataLoader(tmp_path, batch_size=1).names == ["1", "2", "10", "a9", "a10", "b"]


def test_mixed_file_types_pair_by_stem(tmp_path):
    write_dataset(tmp_path, ["a", "b"], image_ext=".png", mask_ext=".npy", seed=1)
    write_dataset(tmp_path, ["c", "d"], image_ext=".tif", mask_ext=".png", seed=2)
    write_dataset(tmp_path, ["e", "f"], image_ext=".npy", mask_ext=".npy", seed=3)
    assert_paired(DataLoader(tmp_path, batch_size=1))


def test_images_keep_their_channels(tmp_path):
    """Gray stays one channel, RGB stays three: nothing is converted between them."""
    gray = DataLoader(write_layout(tmp_path / "gray", "gray"), batch_size=1)
    rgb = DataLoader(write_layout(tmp_path / "rgb", "rgb_ignore"), batch_size=1)
    assert gray.n_channels == 1 and gray.get_image("0").shape == gray.raw_pair("0")[0].shape == (32, 32, 1)
    assert rgb.n_channels == 3 and rgb.get_image("0").shape == (36, 48, 3)
    from PIL import Image

    assert np.array_equal(rgb.raw_pair("4")[0], np.asarray(Image.open(tmp_path / "rgb" / "train" / "4.png")))


def test_pairing_survives_listdir_order(dataset, monkeypatch):
    """A reversed directory listing must not change which image goes with which mask."""
    import contextlib

    original = os.scandir
    listed = []
    monkeypatch.setattr(files.os, "scandir", lambda folder: contextlib.nullcontext(
        listed.append(folder) or list(reversed(list(original(folder))))))
    assert_paired(DataLoader(dataset, batch_size=1))
    assert len(listed) == 2  # both folders were listed through the reversed listing


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("fractions, sizes", [((0.6, 0.2, 0.2), (6, 2, 2)), ((1.0, 0.0, 0.0), (10, 0, 0)),
                                              ((0.5, 0.5, 0.0), (5, 5, 0)), ((0.34, 0.33, 0.33), (4, 3, 3))])
def test_splits_are_disjoint_and_complete(dataset, fractions, sizes):
    splits = DataLoader(dataset, batch_size=1, split=fractions).splits
    assert tuple(len(splits[s]) for s in SPLITS) == sizes
    everything = [n for s in SPLITS for n in splits[s]]
    assert sorted(everything) == sorted(NAMES) and len(set(everything)) == len(everything)


def test_splits_identical_in_a_new_process(dataset):
    here = {seed: DataLoader(dataset, batch_size=1, seed=seed).splits for seed in (0, 7)}
    code = ("import json; from maskpair import DataLoader; "
            f"print(json.dumps({{s: DataLoader({str(dataset)!r}, batch_size=1, seed=s).splits for s in (0, 7)}}))")
    there = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert {int(k): v for k, v in there.items()} == here
    assert here[0] != here[7]


def test_split_does_not_depend_on_input_order():
    names = [str(i) for i in range(30)]
    assert split_names(names, seed=3) == split_names(names[::-1], seed=3)


def test_explicit_and_kfold_splits(dataset):
    folds = [kfold_splits(NAMES, 5, fold) for fold in range(5)]
    tests = [n for f in folds for n in f["test"]]
    assert sorted(tests) == sorted(NAMES)  # every example is tested exactly once across folds
    data = DataLoader(dataset, batch_size=1, split=folds[2])
    assert data.splits == folds[2]
    with pytest.raises(ValueError, match="more than one split"):
        DataLoader(dataset, split={"train": NAMES, "val": ["1"], "test": []})


def test_explicit_splits_may_set_examples_aside_and_those_are_never_batched(dataset):
    split = {"train": NAMES[:4], "val": NAMES[4:6], "test": NAMES[6:8], SET_ASIDE: NAMES[8:]}
    data = DataLoader(dataset, batch_size=2, split=split)
    assert data.splits == split and data.split_of("9") == SET_ASIDE
    assert_paired(data)  # set-aside pairs are still read and checked
    batched = {name for s in SPLITS for epoch in range(3) for batch in data.epoch_batches(s, epoch)
               for name in batch}
    assert batched == set(NAMES[:8])
    with pytest.raises(ValueError, match="split must be one of"):
        next(data.get_batch(SET_ASIDE))
    with pytest.raises(ValueError, match="in no split: 9"):  # leaving an example out is never silent
        DataLoader(dataset, split={**split, SET_ASIDE: ["8"]})
    with pytest.raises(ValueError, match="optionally 'excluded'"):
        DataLoader(dataset, split={**split, "unused": []})


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_split_fractions_refused(dataset, bad):
    with pytest.raises(ValueError, match="split"):
        DataLoader(dataset, split=bad)


# ---------------------------------------------------------------- epochs and remainder policies


@pytest.mark.parametrize("remainder", REMAINDER_POLICIES)
@pytest.mark.parametrize("batch_size", [1, 3, 4, 6])
def test_every_example_once_per_epoch(dataset, remainder, batch_size):
    data = DataLoader(dataset, batch_size=batch_size, split=(0.6, 0.2, 0.2), remainder=remainder)
    train = data.splits["train"]
    for epoch in range(3):
        batches = data.epoch_batches("train", epoch)
        assert len(batches) == data.steps_per_epoch("train")
        flat = [n for b in batches for n in b]
        assert set(flat) <= set(train)
        full = len(train) // batch_size * batch_size
        first_pass = Counter(flat[:full] if remainder == "drop" else flat[: len(train)])
        if remainder == "drop":
            assert all(c == 1 for c in first_pass.values()) and len(first_pass) == full
        else:
            assert first_pass == Counter(train)  # every example exactly once ...
        rest = len(train) % batch_size
        if rest and remainder == "fill":
            last = batches[-1]
            assert len(last) == batch_size and len(set(last)) == batch_size  # ... plus other examples of the split
        elif rest and remainder == "keep":
            assert len(batches[-1]) == rest
        else:
            assert all(len(b) == batch_size for b in batches)


def test_each_epoch_is_a_fresh_seeded_shuffle(dataset):
    data = DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    orders = [sum(data.epoch_batches("train", e), []) for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1
    again = DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    assert [sum(again.epoch_batches("train", e), []) for e in range(4)] == orders
    other_seed = DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0), seed=1)
    assert sum(other_seed.epoch_batches("train", 0), []) != orders[0]


def test_get_batch_follows_the_epoch_plan_and_never_leaves_the_split(dataset):
    data = DataLoader(dataset, batch_size=4, remainder="fill")
    by_content = {data.get_image(n).tobytes(): n for n in data.names}
    batches = data.get_batch("train")
    steps = data.steps_per_epoch("train")
    for epoch in range(2):
        for step, expected in enumerate(data.epoch_batches("train", epoch)):
            images, masks = next(batches)
            names = [by_content[img.tobytes()] for img in images]  # trace each item to its source by content
            assert names == expected and set(names) <= set(data.splits["train"])
            for img, onehot, name in zip(images, masks, names):
                assert np.array_equal(onehot.argmax(-1), data.get_mask(name))
        assert step == steps - 1


def test_batch_shapes_dtypes_and_onehot(dataset):
    data = DataLoader(dataset, batch_size=3)
    images, masks = next(data.get_batch("train"))
    assert images.shape == (3, 32, 32, 1)
    assert images.dtype == masks.dtype == np.float32
    assert masks.shape == (*images.shape[:3], 3)
    assert images.min() >= 0 and images.max() <= 1
    assert np.array_equal(masks.sum(-1), np.ones(images.shape[:3]))


def test_batches_may_be_kept(dataset):
    """Each batch is a new array: holding on to one must not see it overwritten by the next."""
    data = DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    gen = data.get_batch("train")
    first = next(gen)
    copy = [a.copy() for a in first]
    for _ in range(7):
        next(gen)
    assert all(np.array_equal(a, b) for a, b in zip(first, copy))


@pytest.mark.parametrize("compact", [False, True])
def test_batch_arrays_start_on_cache_lines(dataset, compact):
    """Copying pairs into a destination 16 bytes past their alignment ran 4x slower (4K aliasing; see
    _batch_buffers), so every batch array starts on a 64-byte boundary."""
    data = DataLoader(dataset, batch_size=3, split=(1.0, 0.0, 0.0))
    for _ in range(3):
        images, targets = data.batch_arrays(data.names[:3], compact=compact)
        assert images.ctypes.data % 64 == 0 and targets.ctypes.data % 64 == 0
        assert images.flags.c_contiguous and targets.flags.c_contiguous and images.flags.writeable


def test_batch_size_larger_than_split_is_an_error(dataset):
    data = DataLoader(dataset, batch_size=3)
    with pytest.raises(DataError, match="batch_size 3 is larger than the val split"):
        data.get_batch("val")
    with pytest.raises(DataError, match="test split is empty"):
        DataLoader(dataset, batch_size=1, split=(0.5, 0.5, 0.0)).steps_per_epoch("test")


def test_cached_and_streaming_batches_identical(dataset):
    cached = DataLoader(dataset, batch_size=2, cache=True, augment=True)
    streaming = DataLoader(dataset, batch_size=2, cache=False, augment=True)
    for split in ("train", "val"):
        a, b = cached.get_batch(split), streaming.get_batch(split)
        for _ in range(5):
            for x, y in zip(next(a), next(b)):
                assert np.array_equal(x, y)


def test_cache_is_compact_and_read_only(dataset):
    data = DataLoader(dataset, batch_size=1)
    pairs = [data.raw_pair(name) for name in data.names]
    assert all(image.dtype == np.uint8 and image.shape == (32, 32, 1) for image, _ in pairs)
    assert all(mask.dtype == np.uint8 and mask.shape == (32, 32) for _, mask in pairs)
    image, mask = data.raw_pair("3")
    with pytest.raises(ValueError, match="read-only"):
        mask[0, 0] = 1  # a caller's edit must not corrupt every later batch
    assert data.get_mask("3").flags.writeable and data.get_image("3").flags.writeable  # copies


# ---------------------------------------------------------------- augmentation

GEOMETRY_ONLY = Augment(brightness=0.0, contrast=0.0, gamma=(1.0, 1.0))


@fast_examples
@given(seed=st.integers(0, 2**32 - 1))
def test_augmentation_keeps_pairs_aligned(seed):
    from synthetic import make_image

    image = make_image(seed % 1000, (64, 64))
    mask = derive_mask(image)
    rng = np.random.default_rng(seed)
    aug_image, aug_mask = GEOMETRY_ONLY.apply(image / np.float32(255), mask, rng)
    assert aug_mask.dtype == mask.dtype and set(np.unique(aug_mask)) <= {0, 1, 2, IGNORE_INDEX}
    inside = aug_mask != IGNORE_INDEX  # pixels from outside the image carry no target
    agree = derive_mask(np.round(aug_image * 255).astype(np.uint8)) == aug_mask
    # linear interpolation blurs block edges in the image only; away from edges labels must match
    assert inside.mean() > 0.5 and agree[inside].mean() > 0.85, agree[inside].mean()


def test_augmentation_moves_every_channel_with_the_mask():
    from synthetic import make_image, street_value

    image = make_image(5, (48, 64), channels=3)
    mask = street_value(image)
    augment = dataclasses.replace(GEOMETRY_ONLY, crop=32)
    aug_image, aug_mask = augment.apply(image / np.float32(255), mask, np.random.default_rng(3))
    assert aug_image.shape == (32, 32, 3) and aug_mask.shape == (32, 32)
    inside = aug_mask != IGNORE_INDEX
    agree = street_value(np.round(aug_image * 255).astype(np.uint8)) == aug_mask
    assert agree[inside].mean() > 0.8, agree[inside].mean()


@fast_examples
@given(seed=st.integers(0, 2**32 - 1))
def test_intensity_changes_touch_the_image_only(seed):
    from synthetic import make_image

    image = make_image(seed % 1000) / np.float32(255)
    mask = derive_mask(make_image(seed % 1000))
    still = Augment(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0)
    aug_image, aug_mask = still.apply(image, mask, np.random.default_rng(seed))
    assert np.array_equal(aug_mask, mask)
    assert aug_image.min() >= 0 and aug_image.max() <= 1


@fast_examples
@given(seed=st.integers(0, 2**32 - 1), crop=st.integers(8, 64))
def test_augmentation_crops_image_and_mask_at_the_same_window(seed, crop):
    from synthetic import make_image

    image = make_image(seed % 1000, (48, 64))
    mask = derive_mask(image)
    cropping = Augment(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, brightness=0.0,
                              contrast=0.0, gamma=(1.0, 1.0), crop=crop)
    aug_image, aug_mask = cropping.apply(image / np.float32(255), mask, np.random.default_rng(seed))
    expected = (min(crop, 48), min(crop, 64))
    assert aug_image.shape == aug_mask.shape == cropping.output_shape(image.shape) == expected
    # no rotation or zoom: the crop is an exact window of the input, the same one for image and mask
    windows = np.lib.stride_tricks.sliding_window_view(mask, expected)
    rows, cols = np.nonzero((windows == aug_mask).all(axis=(-2, -1)))
    assert any(np.allclose(aug_image, image[r:r + expected[0], c:c + expected[1]] / np.float32(255))
               for r, c in zip(rows, cols))


def test_cropping_loader_crops_train_batches_only(dataset):
    data = DataLoader(dataset, batch_size=2, augment=Augment(crop=16), pad_multiple=16)
    images, onehot = next(data.get_batch("train"))
    assert images.shape[1:3] == onehot.shape[1:3] == data.batch_shape("train") == (16, 16)
    assert next(data.get_batch("val"))[0].shape[1:3] == data.batch_shape("val") == (32, 32)
    assert set(np.unique(onehot.sum(-1))) <= {0.0, 1.0}  # 0: rotated in from outside the image


def test_a_crop_is_padded_up_to_pad_multiple(dataset):
    data = DataLoader(dataset, batch_size=2, augment=Augment(crop=16, rotate_deg=0, scale=(1, 1),
                                                                             shift=0))
    images, onehot = next(data.get_batch("train"))
    assert images.shape[1:3] == data.batch_shape("train") == (32, 32)
    assert not images[:, 16:].any() and not images[:, :, 16:].any() and not onehot[:, 16:].any()
    assert np.array_equal(onehot[:, :16, :16].sum(-1), np.ones((2, 16, 16)))


def test_augmentation_is_seeded_and_train_only(dataset):
    plain = DataLoader(dataset, batch_size=2)
    aug = DataLoader(dataset, batch_size=2, augment=True)
    aug_again = DataLoader(dataset, batch_size=2, augment=True)
    x1, y1 = next(aug.get_batch("train"))
    x2, y2 = next(aug_again.get_batch("train"))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, next(plain.get_batch("train"))[0])
    for a, b in zip(next(aug.get_batch("val")), next(plain.get_batch("val"))):
        assert np.array_equal(a, b)
    assert set(np.unique(y1.sum(-1))) <= {0.0, 1.0} and y1.sum() > 0.5 * y1[..., 0].size


# ---------------------------------------------------------------- adapters and import hygiene


def test_importing_loader_and_the_package_does_not_import_tensorflow():
    code = "import sys, loader, maskpair, maskpair.data; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("layout, augment, cache", [("gray", True, True), ("gray", Augment(crop=16), "disk"),
                                                    ("rgb_ignore", True, True), ("mixed_sizes", None, True),
                                                    ("mixed_sizes", None, "disk"), ("gray", None, False)],
                         ids=["augment", "augment-crop", "rgb", "mixed-sizes", "mixed-sizes-disk", "streaming"])
def test_keras_sequence_and_tf_dataset_match_get_batch(tmp_path, layout, augment, cache):
    """Both adapters yield the compact batches of get_batch, whichever way they are made: a generator (augmented,
    streaming), a gather in the tf.data graph (one size, from a cache) or slicing and padding there (mixed sizes)."""
    data = DataLoader(write_layout(tmp_path / "d", layout, n=10), batch_size=4, split=(0.6, 0.4, 0.0),
                      remainder="keep", augment=augment, cache=cache,  # train: a short last batch
                      cache_dir=tmp_path / "cache" if cache == "disk" else None)
    for split in ("train", "val"):
        steps = data.steps_per_epoch(split)
        expected = [next(gen) for gen in [data.get_batch(split, compact=True)] for _ in range(2 * steps)]
        sequence = data.keras_sequence(split)
        from_sequence = []
        for _ in range(2):
            from_sequence += [sequence[i] for i in range(len(sequence))]
            sequence.on_epoch_end()
        from_dataset = [(x.numpy(), y.numpy()) for x, y in data.tf_dataset(split, epochs=2)]
        assert len(from_sequence) == len(from_dataset) == len(expected) == 2 * steps
        for got in (from_sequence, from_dataset):
            for (x, y), (ex, ey) in zip(got, expected):
                assert x.dtype == ex.dtype == data.compact_image_dtype(split) and y.dtype == ey.dtype == np.uint8
                assert np.array_equal(x, ex) and np.array_equal(y, ey)


def test_real_data_loads(example_data):
    data = DataLoader(example_data)
    assert len(data.names) == 20 and set(data.sizes.values()) == {(256, 256)}
    assert data.labels == ("background", "disc", "vertebra") and data.description.partial_labels
    assert data.description.audit == {"alternating": ["disc", "vertebra"], "extent": True}
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "val": 4, "test": 4}
    assert np.array_equal(data.get_mask("7"), np.load(example_data / "masks" / "7.npy"))
    images, onehot = data.batch_arrays(data.splits["val"])
    assert images.shape == (4, 256, 256, 1) and onehot.shape == (4, 256, 256, 3)  # 256 is a multiple: no padding
    assert np.array_equal(onehot.sum(-1), np.ones((4, 256, 256)))


def test_fitting_batch_size_lowers_only_when_a_split_is_too_small():
    with pytest.warns(UserWarning, match="batch size 4 lowered to 2: the val split has only 2 examples"):
        assert fitting_batch_size({"train": list("abcdef"), "val": list("gh"), "test": []}, 4) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lowered, nothing to warn about
        assert fitting_batch_size({"train": list("abcdef"), "val": list("ghij"), "test": list("kl")}, 1) == 1
        assert fitting_batch_size({"train": list("abcdefgh"), "val": list("ijkl"), "test": list("mnop")}, 4) == 4
        set_aside = {"train": list("abcdefgh"), "val": list("ijkl"), "test": list("mnop"), SET_ASIDE: ["q"]}
        assert fitting_batch_size(set_aside, 4) == 4  # examples set aside are never batched


# ---------------------------------------------------------------- every layout, end to end


def assert_layout_paired(data: DataLoader, layout: str):
    """Every label map is the one derived from its own image (so a wrong pairing or a misread value fails)."""
    for name in data.names:
        image_u8 = np.round(data.get_image(name) * 255).astype(np.uint8)
        assert np.array_equal(data.get_mask(name), expected_labels(layout, image_u8)), name


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "streaming"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_end_to_end(tmp_path, layout, cache):
    root = write_layout(tmp_path / layout, layout, n=12)
    data = DataLoader(root, batch_size=3, cache=cache, augment=True)
    description = data.description
    assert data.labels == description.classes and data.n_classes == len(data.labels)
    assert data.n_channels == (3 if layout == "rgb_ignore" else 1)
    assert len(data.names) == 12
    assert_layout_paired(data, layout)
    x, y = next(data.get_batch("train"))
    assert x.dtype == y.dtype == np.float32 and x.shape[0] == y.shape[0] == 3
    assert x.shape[-1] == data.n_channels and y.shape[-1] == data.n_classes
    names = data.splits["val"][:2]
    images, onehot = data.batch_arrays(names)  # un-augmented, whole images
    for k, name in enumerate(names):
        height, width = data.sizes[name]
        assert np.array_equal(images[k, :height, :width], data.get_image(name))
        labels = data.get_mask(name)
        target = onehot[k, :height, :width]
        assert np.array_equal(target.argmax(-1)[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
        assert np.array_equal(target.sum(-1), (labels != IGNORE_INDEX).astype(np.float32))


def test_the_layouts_are_described_as_written(tmp_path):
    gray = describe(write_layout(tmp_path / "gray", "gray"))
    assert (gray.source, gray.labels, gray.channel_names, gray.partial_labels) == (
        "inferred", {"0": 0, "1": 1, "2": 2}, {"0": "gray"}, False)
    em = describe(write_layout(tmp_path / "em", "em"))
    assert em.classes == ("membrane", "cell") and em.class_values == (0, 255) and em.images == "image"
    rgb = describe(write_layout(tmp_path / "rgb", "rgb_ignore"))
    assert rgb.n_classes == 11 and rgb.ignore_value == 255 and rgb.n_channels == 3
    nnunet = describe(write_layout(tmp_path / "nnunet", "nnunet"))
    assert (nnunet.layout, nnunet.images, nnunet.masks) == ("nnunet", "imagesTr", "labelsTr")
    assert list(pair_files(tmp_path / "nnunet"))[:2] == ["case_000", "case_001"]


def test_ignore_pixels_carry_no_target(tmp_path):
    data = DataLoader(write_layout(tmp_path, "rgb_ignore"), batch_size=2, pad_multiple=1)
    ignored = sum((data.get_mask(name) == IGNORE_INDEX).sum() for name in data.names)
    assert ignored > 0  # the synthetic data has void pixels to test with
    images, onehot = data.batch_arrays(data.names)
    masks = np.stack([data.get_mask(name) for name in data.names])
    assert images.shape == (12, 36, 48, 3) and onehot.shape == (12, 36, 48, 11)
    assert not onehot[masks == IGNORE_INDEX].any()
    assert (onehot[masks != IGNORE_INDEX].sum(-1) == 1).all()


def _templated(root, images, masks, files, **keys):
    """Write `files` {relative path: seed} (images: derived blocky gray images; masks: derived values) and a
    dataset.json with the two templates; returns root."""
    from synthetic import make_image, write_dataset_json

    for relative, (kind, seed) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = make_image(seed)
        write_array(path, image if kind == "image" else derive_mask(image))
    write_dataset_json(root, images=images, masks=masks, **keys)
    return root


def test_templates_pair_by_name_in_one_folder_or_many_and_leave_other_files_alone(tmp_path):
    # images and masks in one folder: a file that fits the masks' template is no image
    root = _templated(tmp_path / "one", "data/{name}.png", "data/{name}_mask.png",
                      {"data/b.png": ("image", 1), "data/b_mask.png": ("mask", 1),
                       "data/a.png": ("image", 2), "data/a_mask.png": ("mask", 2)})
    (root / "data" / "notes.txt").write_text("left alone")
    found = files.find_pairs(root, files.read_declared(root))
    assert list(found.pairs) == ["a", "b"] and found.outside == 1
    assert_paired(DataLoader(root, batch_size=1))
    # `*` on one side only, a folder on the other (any supported type there), extensions in any case
    root = _templated(tmp_path / "star", "imgs/*/{name}.png", "masks",
                      {"imgs/x/10.png": ("image", 3), "imgs/y/2.PNG": ("image", 4), "imgs/y/2.npy": ("mask", 9),
                       "masks/10.npy": ("mask", 3), "masks/2.png": ("mask", 4)})
    assert pair_files(root) == {"2": (root / "imgs/y/2.PNG", root / "masks/2.png"),
                                "10": (root / "imgs/x/10.png", root / "masks/10.npy")}
    assert_paired(DataLoader(root, batch_size=1, cache=False))
    # no extension in the template: any supported type fits, and the extension is not part of the name
    root = _templated(tmp_path / "any", "images/{name}", "labels/{name}_seg",
                      {"images/p.png": ("image", 5), "images/q.tif": ("image", 6),
                       "labels/p_seg.npy": ("mask", 5), "labels/q_seg.png": ("mask", 6),
                       "labels/q_seg_old.png": ("mask", 7)})
    assert list(pair_files(root)) == ["p", "q"]
    assert_paired(DataLoader(root, batch_size=1))


def test_images_without_masks_are_left_out_when_unpaired_images_is_skip(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b", "c"])
    (root / "masks" / "b.npy").unlink()
    with pytest.raises(DataError, match="images/b.png: no matching mask for example b"):
        DataLoader(root, batch_size=1)
    from synthetic import write_dataset_json

    write_dataset_json(root, unpaired_images="skip")
    found = files.find_pairs(root, files.read_declared(root))
    assert list(found.pairs) == ["a", "c"] and found.unpaired_images == [root / "images" / "b.png"]
    assert DataLoader(root, batch_size=1).names == ["a", "c"]
    (root / "images" / "a.png").unlink()  # a mask without an image is an error all the same
    with pytest.raises(DataError, match="masks/a.npy: no matching image for example a"):
        DataLoader(root, batch_size=1)


def test_nnunet_file_ending_restricts_the_files_considered(tmp_path):
    root = write_layout(tmp_path, "nnunet", n=4)
    np.save(root / "imagesTr" / "other_0000.npy", np.zeros((32, 32), np.uint8))  # not .png: not considered
    np.save(root / "labelsTr" / "other.npy", np.zeros((32, 32), np.uint8))
    assert DataLoader(root, batch_size=1).names == ["case_000", "case_001", "case_002", "case_003"]


@pytest.mark.parametrize("high", [700, 70_000])  # a table over the value range, or a search beyond 2**16
def test_any_integer_label_values(tmp_path, high):
    from synthetic import write_dataset_json

    root = write_dataset(tmp_path, ["a", "b"])
    derived = {name: np.load(root / "masks" / f"{name}.npy") for name in "ab"}
    for name, mask in derived.items():
        np.save(root / "masks" / f"{name}.npy", np.choose(mask, [-3, high, 5]))
    write_dataset_json(root, labels={"high": high, "low": -3, "mid": 5})
    data = DataLoader(root, batch_size=1)
    assert data.labels == ("low", "mid", "high")
    for name, mask in derived.items():
        assert np.array_equal(data.get_mask(name), np.choose(mask, [0, 2, 1]))


def test_sixteen_bit_and_float_images(tmp_path):
    root = write_layout(tmp_path, "gray", n=3)
    deep = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60
    write_array(root / "images" / "1.png", deep)
    (root / "images" / "2.png").unlink()
    np.save(root / "images" / "2.npy", np.full((32, 32, 1), 0.25, np.float32))
    data = DataLoader(root, batch_size=1)
    assert np.allclose(data.get_image("1")[..., 0], deep / 65535)
    assert np.allclose(data.get_image("2"), 0.25) and data.get_image("2").shape == (32, 32, 1)


# ---------------------------------------------------------------- mixed sizes and padding


@pytest.fixture
def mixed(tmp_path):
    return write_layout(tmp_path / "mixed", "mixed_sizes", n=12)


@pytest.mark.parametrize("pad_multiple", [32, 8, 1])
def test_whole_image_batches_are_padded_bottom_right(mixed, pad_multiple):
    data = DataLoader(mixed, batch_size=3, pad_multiple=pad_multiple)
    assert {data.sizes[name] for name in data.names} == set(MIXED_SIZES)
    names = data.names[:4]  # sizes 24x32, 32x48, 40x40, 48x64
    images, onehot = data.batch_arrays(names)
    expected = tuple(-(-side // pad_multiple) * pad_multiple for side in (48, 64))
    assert images.shape == (4, *expected, 1) and onehot.shape == (4, *expected, 3)
    for k, name in enumerate(names):
        height, width = data.sizes[name]
        assert np.array_equal(images[k, :height, :width], data.get_image(name))
        assert np.array_equal(onehot[k, :height, :width].argmax(-1), data.get_mask(name))
        assert np.array_equal(onehot[k, :height, :width].sum(-1), np.ones((height, width)))
        padding = np.ones(expected, bool)
        padding[:height, :width] = False
        assert not images[k][padding].any() and not onehot[k][padding].any()  # no image, no target


def test_batches_of_one_size_need_no_padding_and_unknown_sides_are_none(mixed, dataset):
    data = DataLoader(mixed, batch_size=2, pad_multiple=8)
    assert data.batch_arrays(["0"])[0].shape == (1, 24, 32, 1)
    assert data.batch_shape("val") == (None, None) or len({data.sizes[n] for n in data.splits["val"]}) == 1
    assert DataLoader(dataset, batch_size=2).batch_shape("val") == (32, 32)


def test_train_crops_make_train_batches_uniform(mixed):
    crop = Augment(crop=32)
    for cache in (True, False):
        data = DataLoader(mixed, batch_size=3, augment=crop, split=(1.0, 0.0, 0.0), cache=cache)
        assert data.batch_shape("train") == (32, 32)
        shapes = {x.shape for epoch in range(2) for step, names in enumerate(data.epoch_batches("train", epoch))
                  for x in data.batch_arrays(names, "train", epoch, step)[:1]}
        assert shapes == {(3, 32, 32, 1)}  # the 24-row image is padded into the crop, never a smaller batch
    big = DataLoader(mixed, batch_size=3, augment=Augment(crop=200))
    assert big.batch_shape("train") == (64, 64)  # a crop larger than every image: the largest image, rounded


def test_cached_and_streaming_batches_identical_with_mixed_sizes(mixed):
    cached = DataLoader(mixed, batch_size=3, cache=True, augment=True)
    streaming = DataLoader(mixed, batch_size=3, cache=False, augment=True)
    for split in ("train", "val"):
        a, b = cached.get_batch(split), streaming.get_batch(split)
        for _ in range(4):
            for x, y in zip(next(a), next(b)):
                assert np.array_equal(x, y)


# ---------------------------------------------------------------- the review log


def test_review_log_sets_problem_examples_aside_from_train_only(dataset, tmp_path):
    from maskpair.review.log import ReviewLog

    plain = DataLoader(dataset, batch_size=1)
    train, val = plain.splits["train"], plain.splits["val"]
    log = ReviewLog(tmp_path / "review.verdicts.jsonl")
    log.record(train[0], "problem")
    log.record(train[1], "problem")
    log.record(train[1], "aligned")  # the latest verdict wins
    log.record(train[2], "aligned")
    log.record(val[0], "problem")  # val and test stay as they are
    data = DataLoader(dataset, batch_size=1, review_log=log.path)
    assert data.splits[SET_ASIDE] == [train[0]]
    assert data.splits["train"] == train[1:] and data.splits["val"] == val
    assert data.splits["test"] == plain.splits["test"]
    assert_paired(data)  # set aside: still read and checked ...
    batched = {name for epoch in range(3) for batch in data.epoch_batches("train", epoch) for name in batch}
    assert train[0] not in batched  # ... never batched
    missing = DataLoader(dataset, batch_size=1, review_log=tmp_path / "no-such.jsonl")
    assert missing.splits == plain.splits


def test_review_log_adds_to_explicit_set_aside(dataset, tmp_path):
    from maskpair.review.log import ReviewLog

    log = ReviewLog(tmp_path / "r.jsonl")
    log.record("1", "problem")
    log.record("elsewhere", "problem")
    split = {"train": NAMES[:6], "val": NAMES[6:8], "test": NAMES[8:9], SET_ASIDE: NAMES[9:]}
    with pytest.warns(UserWarning, match="not in this dataset .elsewhere."):
        data = DataLoader(dataset, batch_size=1, split=split, review_log=log.path)
    assert data.splits[SET_ASIDE] == ["1", "9"] and "1" not in data.splits["train"]


# ---------------------------------------------------------------- describe and check


def test_check_prints_the_description_it_used_as_json(tmp_path):
    root = write_layout(tmp_path / "gray", "gray")
    cli = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "check", str(root)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "12 pairs, 32x32, 1 channel" in cli.stderr
    saved = json.loads(cli.stdout)  # stdout is only the description: it can be saved as it is
    assert saved == json.loads(describe(root).to_json())
    assert saved["labels"] == {"0": 0, "1": 1, "2": 2}
    saved["labels"] = {"dark": 0, "mid": 1, "bright": 2}  # the user edits it and saves it
    (root / "dataset.json").write_text(json.dumps(saved))
    again = describe(root)
    assert again.classes == ("dark", "mid", "bright") and again.source == str(root / "dataset.json")
    assert json.loads(again.to_json()) == saved


def test_check_summarises_mixed_sizes_and_ignore(tmp_path, mixed):
    for root, needles in ((mixed, ["12 pairs, 6 sizes from 24x32 to 56x24"]),
                          (write_layout(tmp_path / "rgb", "rgb_ignore"), ["36x48, 3 channels", "ignore", "bicyclist"])):
        cli = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "check", str(root)],
                             capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
        for needle in needles:
            assert needle in cli.stderr, (needle, cli.stderr)


def test_no_spine_names_as_defaults_in_the_code():
    for module in (PROJECT_DIR / "maskpair" / "data").glob("*.py"):
        if module.name == "fetch.py":  # the example data's own module
            continue
        source = module.read_text()
        # the example data keeps its name (fetch, data/spine-mri); its classes live in its dataset.json only
        assert not re.search(r"\b(background|discs?|vertebrae?)\b|^LABELS\b", source, re.M), module
