"""DataLoader: pairing, splits, epochs, remainder policies, augmentation and the batch contents."""
import dataclasses
import json
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loader
from synthetic import derive_mask, write_dataset

NAMES = [str(i) for i in range(10)]
fast_examples = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_paired(data: loader.DataLoader):
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
    data = loader.DataLoader(root, batch_size=1, split=(1.0, 0.0, 0.0))
    assert sorted(data.names) == sorted(names)
    assert_paired(data)


def test_names_in_natural_order(tmp_path):
    write_dataset(tmp_path, ["10", "2", "1", "b", "a10", "a9"])
    assert loader.DataLoader(tmp_path, batch_size=1).names == ["1", "2", "10", "a9", "a10", "b"]


def test_mixed_file_types_pair_by_stem(tmp_path):
    write_dataset(tmp_path, ["a", "b"], image_ext=".png", mask_ext=".npy", seed=1)
    write_dataset(tmp_path, ["c", "d"], image_ext=".tif", mask_ext=".png", seed=2)
    write_dataset(tmp_path, ["e", "f"], image_ext=".npy", mask_ext=".npy", seed=3)
    assert_paired(loader.DataLoader(tmp_path, batch_size=1))


def test_rgb_image_becomes_grayscale(tmp_path):
    from PIL import Image

    write_dataset(tmp_path, ["a", "b"])
    gray = np.asarray(Image.open(tmp_path / "images" / "a.png"))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "images" / "a.png")
    data = loader.DataLoader(tmp_path, batch_size=1)
    assert data.get_image("a").shape == (32, 32, 1)
    assert_paired(data)


def test_pairing_survives_listdir_order(dataset, monkeypatch):
    """A reversed directory listing must not change which image goes with which mask."""
    original = loader.Path.iterdir
    monkeypatch.setattr(loader.Path, "iterdir", lambda self: reversed(list(original(self))))
    assert_paired(loader.DataLoader(dataset, batch_size=1))


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("fractions, sizes", [((0.6, 0.2, 0.2), (6, 2, 2)), ((1.0, 0.0, 0.0), (10, 0, 0)),
                                              ((0.5, 0.5, 0.0), (5, 5, 0)), ((0.34, 0.33, 0.33), (4, 3, 3))])
def test_splits_are_disjoint_and_complete(dataset, fractions, sizes):
    splits = loader.DataLoader(dataset, batch_size=1, split=fractions).splits
    assert tuple(len(splits[s]) for s in loader.SPLITS) == sizes
    everything = [n for s in loader.SPLITS for n in splits[s]]
    assert sorted(everything) == sorted(NAMES) and len(set(everything)) == len(everything)


def test_splits_identical_in_a_new_process(dataset):
    here = {seed: loader.DataLoader(dataset, batch_size=1, seed=seed).splits for seed in (0, 7)}
    code = (f"import json, sys; sys.path.insert(0, {str(loader.PROJECT_DIR)!r}); import loader; "
            f"print(json.dumps({{s: loader.DataLoader({str(dataset)!r}, batch_size=1, seed=s).splits for s in (0, 7)}}))")
    there = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert {int(k): v for k, v in there.items()} == here
    assert here[0] != here[7]


def test_split_does_not_depend_on_input_order():
    names = [str(i) for i in range(30)]
    assert loader.split_names(names, seed=3) == loader.split_names(names[::-1], seed=3)


def test_explicit_and_kfold_splits(dataset):
    folds = [loader.kfold_splits(NAMES, 5, fold) for fold in range(5)]
    tests = [n for f in folds for n in f["test"]]
    assert sorted(tests) == sorted(NAMES)  # every example is tested exactly once across folds
    data = loader.DataLoader(dataset, batch_size=1, split=folds[2])
    assert data.splits == folds[2]
    with pytest.raises(ValueError, match="more than one split"):
        loader.DataLoader(dataset, split={"train": NAMES, "val": ["1"], "test": []})


def test_explicit_splits_may_set_examples_aside_and_those_are_never_batched(dataset):
    split = {"train": NAMES[:4], "val": NAMES[4:6], "test": NAMES[6:8], loader.SET_ASIDE: NAMES[8:]}
    data = loader.DataLoader(dataset, batch_size=2, split=split)
    assert data.splits == split and data.split_of("9") == loader.SET_ASIDE
    assert_paired(data)  # set-aside pairs are still read and checked
    batched = {name for s in loader.SPLITS for epoch in range(3) for batch in data.epoch_batches(s, epoch)
               for name in batch}
    assert batched == set(NAMES[:8])
    with pytest.raises(ValueError, match="split must be one of"):
        next(data.get_batch(loader.SET_ASIDE))
    with pytest.raises(ValueError, match="in no split: 9"):  # leaving an example out is never silent
        loader.DataLoader(dataset, split={**split, loader.SET_ASIDE: ["8"]})
    with pytest.raises(ValueError, match="optionally 'excluded'"):
        loader.DataLoader(dataset, split={**split, "unused": []})


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_split_fractions_refused(dataset, bad):
    with pytest.raises(ValueError, match="split"):
        loader.DataLoader(dataset, split=bad)


# ---------------------------------------------------------------- epochs and remainder policies


@pytest.mark.parametrize("remainder", loader.REMAINDER_POLICIES)
@pytest.mark.parametrize("batch_size", [1, 3, 4, 6])
def test_every_example_once_per_epoch(dataset, remainder, batch_size):
    data = loader.DataLoader(dataset, batch_size=batch_size, split=(0.6, 0.2, 0.2), remainder=remainder)
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
    data = loader.DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    orders = [sum(data.epoch_batches("train", e), []) for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1
    again = loader.DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    assert [sum(again.epoch_batches("train", e), []) for e in range(4)] == orders
    other_seed = loader.DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0), seed=1)
    assert sum(other_seed.epoch_batches("train", 0), []) != orders[0]


def test_get_batch_follows_the_epoch_plan_and_never_leaves_the_split(dataset):
    data = loader.DataLoader(dataset, batch_size=4, remainder="fill")
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
    data = loader.DataLoader(dataset, batch_size=3)
    images, masks = next(data.get_batch("train"))
    assert images.shape == (3, 32, 32, 1)
    assert images.dtype == masks.dtype == np.float32
    assert masks.shape == (*images.shape[:3], 3)
    assert images.min() >= 0 and images.max() <= 1
    assert np.array_equal(masks.sum(-1), np.ones(images.shape[:3]))


def test_batches_may_be_kept(dataset):
    """Each batch is a new array: holding on to one must not see it overwritten by the next."""
    data = loader.DataLoader(dataset, batch_size=2, split=(1.0, 0.0, 0.0))
    gen = data.get_batch("train")
    first = next(gen)
    copy = [a.copy() for a in first]
    for _ in range(7):
        next(gen)
    assert all(np.array_equal(a, b) for a, b in zip(first, copy))


def test_batch_size_larger_than_split_is_an_error(dataset):
    data = loader.DataLoader(dataset, batch_size=3)
    with pytest.raises(loader.DataError, match="batch_size 3 is larger than the val split"):
        data.get_batch("val")
    with pytest.raises(loader.DataError, match="test split is empty"):
        loader.DataLoader(dataset, batch_size=1, split=(0.5, 0.5, 0.0)).steps_per_epoch("test")


def test_cached_and_streaming_batches_identical(dataset):
    cached = loader.DataLoader(dataset, batch_size=2, cache=True, augment=True)
    streaming = loader.DataLoader(dataset, batch_size=2, cache=False, augment=True)
    for split in ("train", "val"):
        a, b = cached.get_batch(split), streaming.get_batch(split)
        for _ in range(5):
            for x, y in zip(next(a), next(b)):
                assert np.array_equal(x, y)


def test_cache_is_compact(dataset):
    data = loader.DataLoader(dataset, batch_size=1)
    assert data._images.dtype == np.uint8 and data._masks.dtype == np.uint8


# ---------------------------------------------------------------- augmentation

GEOMETRY_ONLY = loader.Augment(brightness=0.0, contrast=0.0, gamma=(1.0, 1.0))
ELASTIC_GEOMETRY = dataclasses.replace(GEOMETRY_ONLY, elastic_px=4.0, elastic_spacing=16)


@fast_examples
@given(seed=st.integers(0, 2**32 - 1), augment=st.sampled_from([GEOMETRY_ONLY, ELASTIC_GEOMETRY]))
def test_augmentation_keeps_pairs_aligned(seed, augment):
    from synthetic import make_image

    image = make_image(seed % 1000, (64, 64))
    mask = derive_mask(image)
    rng = np.random.default_rng(seed)
    aug_image, aug_mask = augment.apply(image / np.float32(255), mask, rng)
    assert aug_mask.dtype == mask.dtype and set(np.unique(aug_mask)) <= {0, 1, 2}
    agree = derive_mask(np.round(aug_image * 255).astype(np.uint8)) == aug_mask
    # linear interpolation blurs block edges in the image only; away from edges labels must match
    assert agree.mean() > 0.85, agree.mean()


@fast_examples
@given(seed=st.integers(0, 2**32 - 1))
def test_intensity_changes_touch_the_image_only(seed):
    from synthetic import make_image

    image = make_image(seed % 1000) / np.float32(255)
    mask = derive_mask(make_image(seed % 1000))
    still = loader.Augment(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0)
    aug_image, aug_mask = still.apply(image, mask, np.random.default_rng(seed))
    assert np.array_equal(aug_mask, mask)
    assert aug_image.min() >= 0 and aug_image.max() <= 1


@fast_examples
@given(seed=st.integers(0, 2**32 - 1), crop=st.integers(8, 64))
def test_augmentation_crops_image_and_mask_at_the_same_window(seed, crop):
    from synthetic import make_image

    image = make_image(seed % 1000, (48, 64))
    mask = derive_mask(image)
    cropping = loader.Augment(flip_lr=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, brightness=0.0,
                              contrast=0.0, gamma=(1.0, 1.0), crop=crop)
    aug_image, aug_mask = cropping.apply(image / np.float32(255), mask, np.random.default_rng(seed))
    expected = (min(crop, 48), min(crop, 64))
    assert aug_image.shape == aug_mask.shape == cropping.output_shape(image.shape) == expected
    # no rotation or zoom: the crop is an exact window of the input, the same one for image and mask
    windows = np.lib.stride_tricks.sliding_window_view(mask, expected)
    rows, cols = np.nonzero((windows == aug_mask).all(axis=(-2, -1)))
    assert any(np.allclose(aug_image, image[r:r + expected[0], c:c + expected[1]] / np.float32(255))
               for r, c in zip(rows, cols))


def test_elastic_deformation_is_the_affine_map_plus_a_smooth_displacement():
    from synthetic import make_image

    image = make_image(3, (96, 96)) / np.float32(255)
    mask = derive_mask(make_image(3, (96, 96)))
    cropped = dataclasses.replace(GEOMETRY_ONLY, crop=64)
    affine = cropped.apply(image, mask, np.random.default_rng(0))
    # a vanishing displacement reproduces the affine map exactly: same flip, rotation, zoom, shift and crop window
    vanishing = dataclasses.replace(cropped, elastic_px=1e-9).apply(image, mask, np.random.default_rng(0))
    assert np.allclose(vanishing[0], affine[0], atol=1e-5) and np.array_equal(vanishing[1], affine[1])
    elastic = dataclasses.replace(ELASTIC_GEOMETRY, crop=64).apply(image, mask, np.random.default_rng(0))
    assert (elastic[1] != affine[1]).mean() > 0.05

    fields = [loader.Augment(elastic_px=4.0).displacement(np.random.default_rng(seed), (160, 128)) for seed in range(50)]
    assert fields[0].shape == (2, 160, 128)
    assert 2.0 < np.std(fields) < 6.0  # about elastic_px: the spline passes through the control displacements
    # smooth: neighbouring pixels move by less than a pixel relative to each other, so shapes bend but never fold
    assert max(np.abs(np.diff(field, axis=axis)).max() for field in fields for axis in (1, 2)) < 1.0


def is_exact_window(window: np.ndarray, image: np.ndarray) -> bool:
    """True if `window` is a pixel-exact window of `image` or of its left-right mirror image."""
    return any((np.lib.stride_tricks.sliding_window_view(source, window.shape) == window).all(axis=(-2, -1)).any()
               for source in (image, image[:, ::-1]))


def test_resample_probability_decides_how_many_pairs_are_resampled():
    from synthetic import make_image

    image = make_image(7, (48, 48)) / np.float32(255)
    mask = derive_mask(make_image(7, (48, 48)))
    no_intensity = dict(brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), crop=32)

    def exact_share(probability, elastic_px=0.0):
        augment = loader.Augment(**no_intensity, resample_probability=probability, elastic_px=elastic_px)
        outputs = [augment.apply(image, mask, np.random.default_rng(seed)) for seed in range(40)]
        exact = [is_exact_window(out_image, image) and is_exact_window(out_mask, mask) for out_image, out_mask in outputs]
        return np.mean(exact)

    assert exact_share(0.0) == exact_share(0.0, elastic_px=4.0) == 1.0  # only flipped and cropped: pixels copied
    assert exact_share(1.0) == 0.0  # the default: every pair rotated/zoomed/shifted
    assert 0.3 <= exact_share(0.5) <= 0.7


def test_cropping_loader_crops_train_batches_only(dataset):
    data = loader.DataLoader(dataset, batch_size=2, augment=loader.Augment(crop=16))
    images, onehot = next(data.get_batch("train"))
    assert images.shape[1:3] == onehot.shape[1:3] == data.batch_shape("train") == (16, 16)
    assert next(data.get_batch("val"))[0].shape[1:3] == data.batch_shape("val") == tuple(data.shape)
    assert np.array_equal(onehot.sum(-1), np.ones(onehot.shape[:3]))


def test_augmentation_is_seeded_and_train_only(dataset):
    plain = loader.DataLoader(dataset, batch_size=2)
    aug = loader.DataLoader(dataset, batch_size=2, augment=True)
    aug_again = loader.DataLoader(dataset, batch_size=2, augment=True)
    x1, y1 = next(aug.get_batch("train"))
    x2, y2 = next(aug_again.get_batch("train"))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, next(plain.get_batch("train"))[0])
    for a, b in zip(next(aug.get_batch("val")), next(plain.get_batch("val"))):
        assert np.array_equal(a, b)
    assert np.array_equal(y1.sum(-1), np.ones(y1.shape[:3]))


# ---------------------------------------------------------------- adapters and import hygiene


def test_importing_loader_does_not_import_tensorflow():
    code = f"import sys; sys.path.insert(0, {str(loader.PROJECT_DIR)!r}); import loader; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("augment", [True, loader.Augment(crop=16)], ids=["augment", "augment-crop"])
def test_keras_sequence_and_tf_dataset_match_get_batch(dataset, augment):
    data = loader.DataLoader(dataset, batch_size=4, augment=augment)
    steps = data.steps_per_epoch("train")
    expected = [next(gen) for gen in [data.get_batch("train")] for _ in range(2 * steps)]
    sequence = data.keras_sequence("train")
    from_sequence = []
    for _ in range(2):
        from_sequence += [sequence[i] for i in range(len(sequence))]
        sequence.on_epoch_end()
    from_dataset = [(x.numpy(), y.numpy()) for x, y in data.tf_dataset("train", epochs=2)]
    assert len(from_sequence) == len(from_dataset) == len(expected) == 2 * steps
    for got in (from_sequence, from_dataset):
        for (x, y), (ex, ey) in zip(got, expected):
            assert np.array_equal(x, ex) and np.array_equal(y, ey)


def test_real_data_loads(example_data):
    data = loader.DataLoader(example_data)
    assert len(data.names) == 20 and data.shape == (256, 256)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "val": 4, "test": 4}
    assert np.array_equal(data.get_mask("7"), np.load(example_data / "masks" / "7.npy"))


def test_fitting_batch_size_lowers_only_when_a_split_is_too_small():
    with pytest.warns(UserWarning, match="batch size 4 lowered to 2: the val split has only 2 examples"):
        assert loader.fitting_batch_size({"train": list("abcdef"), "val": list("gh"), "test": []}, 4) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lowered, nothing to warn about
        assert loader.fitting_batch_size({"train": list("abcdef"), "val": list("ghij"), "test": list("kl")}, 1) == 1
        assert loader.fitting_batch_size({"train": list("abcdefgh"), "val": list("ijkl"), "test": list("mnop")}, 4) == 4
        set_aside = {"train": list("abcdefgh"), "val": list("ijkl"), "test": list("mnop"), loader.SET_ASIDE: ["q"]}
        assert loader.fitting_batch_size(set_aside, 4) == 4  # examples set aside are never batched
