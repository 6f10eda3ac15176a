"""Each kind of bad input is refused with a message naming the file(s) (or dataset.json) and the problem, by API and
CLI, before anything is read into memory or printed; streaming mode finds every header problem at construction."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_DIR
from PIL import Image
from synthetic import (
    make_image,
    write_array,
    write_dataset,
    write_dataset_json,
    write_layout,
)

from maskpair.data.fetch import EXAMPLE_DESCRIPTION
from maskpair.data.loader import DataLoader
from maskpair.errors import DataError

LABELS = {"dark": 0, "mid": 1, "bright": 2}


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "d", [str(i) for i in range(6)])


def refused(data_dir, *needles, streaming=True, proposes=None):
    """Assert that the DataLoader (cached, and streaming unless the problem is in the values) and `loader.py check`
    refuse `data_dir` with every needle in the message; check prints no description, or (`proposes`: keys it
    must hold) the one it proposes instead."""
    modes = (True, False) if streaming else (True,)
    for cache in modes:
        with pytest.raises(DataError) as err:
            DataLoader(data_dir, batch_size=1, cache=cache)
        for needle in needles:
            assert needle in str(err.value), (needle, cache, str(err.value))
    cli = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "check", str(data_dir)],
                         capture_output=True, text=True)
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr + cli.stdout
    if proposes is None:
        assert cli.stdout == ""  # no description of data that is not right
    else:  # a description that reads the folder, as check saw it
        proposal = json.loads(cli.stdout)
        assert {key: proposal.get(key) for key in proposes} == proposes, proposal
        assert "as proposed below reads this folder" in cli.stderr
    for needle in needles:
        assert needle in cli.stderr, (needle, cli.stderr)
    return str(err.value)


def found_when_read(data_dir, name, *needles):
    """Assert a streaming DataLoader builds (headers are fine) and refuses `name` when reading it, naming the file."""
    data = DataLoader(data_dir, batch_size=1, cache=False)
    with pytest.raises(DataError) as err:
        data.batch_arrays([name])
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


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
    # a template reads the folder and leaves notes.txt alone: check proposes it
    refused(dataset, "images/notes.txt: unsupported file type",
            proposes={"images": "images/{name}.png", "masks": "masks/{name}.npy"})


def test_truncated_png(dataset):
    data = (dataset / "images" / "2.png").read_bytes()
    (dataset / "images" / "2.png").write_bytes(data[: len(data) // 2])
    refused(dataset, "images/2.png", "truncated", streaming=False)  # the header is intact
    found_when_read(dataset, "2", "images/2.png", "truncated")


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
    refused(dataset, "masks/2.npy: mask is not integer-valued")  # found by inferring the labels, in both modes
    write_dataset_json(dataset, labels=LABELS)
    refused(dataset, "masks/2.npy: mask is not integer-valued", streaming=False)
    found_when_read(dataset, "2", "masks/2.npy: mask is not integer-valued")


def test_integral_float_mask_is_accepted(dataset):
    mask = np.load(dataset / "masks" / "2.npy")
    np.save(dataset / "masks" / "2.npy", mask.astype(np.float32))
    assert np.array_equal(DataLoader(dataset, batch_size=1).get_mask("2"), mask)


def test_nan_mask(dataset):
    mask = np.zeros((32, 32))
    mask[3, 4] = np.nan
    np.save(dataset / "masks" / "4.npy", mask)
    refused(dataset, "masks/4.npy: mask holds NaN")


def test_mask_value_not_in_labels_is_named(dataset):
    write_dataset_json(dataset, labels=LABELS)
    mask = np.load(dataset / "masks" / "5.npy")
    mask[0, 0], mask[0, 1] = 7, -1
    np.save(dataset / "masks" / "5.npy", mask)
    refused(dataset, "masks/5.npy: values -1, 7 are not in dataset.json labels (0 dark, 1 mid, 2 bright)",
            streaming=False)
    found_when_read(dataset, "5", "masks/5.npy: values -1, 7 are not in dataset.json labels")


def test_em_value_not_in_labels(tmp_path):
    root = write_layout(tmp_path / "em", "em", n=4)
    mask = np.asarray(Image.open(root / "label" / "2.png")).copy()
    mask[3, 3] = 128
    Image.fromarray(mask).save(root / "label" / "2.png")
    refused(root, "label/2.png: value 128 is not in dataset.json labels (0 membrane, 255 cell)", streaming=False)


def test_without_dataset_json_every_mask_value_is_a_class(dataset):
    mask = np.load(dataset / "masks" / "5.npy")
    mask[0, 0] = 7
    np.save(dataset / "masks" / "5.npy", mask)
    assert DataLoader(dataset, batch_size=1).labels == ("0", "1", "2", "7")


def test_object_array_refused_without_unpickling(dataset, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(dataset / "masks" / "0.npy", np.array([Evil()], dtype=object), allow_pickle=True)
    refused(dataset, "masks/0.npy: object array")
    assert not marker.exists()


def test_all_problems_reported_together(dataset):
    write_dataset_json(dataset, labels=LABELS)
    np.save(dataset / "masks" / "1.npy", np.zeros((16, 32), np.int64))
    np.save(dataset / "masks" / "2.npy", np.full((32, 32), 9))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(dataset / "images" / "3.png")
    message = refused(dataset, "masks/1.npy", "masks/2.npy", "images/3.png: 3 channels (RGB), but most images have 1",
                      streaming=False)
    assert len(message.splitlines()) == 3
    with pytest.raises(DataError) as err:  # streaming: every header problem, before training starts
        DataLoader(dataset, batch_size=1, cache=False)
    assert err.value.problems == [line for line in message.splitlines() if "masks/2.npy" not in line]


def test_check_prints_a_summary_for_good_data(example_data):
    cli = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "check", str(example_data)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "20 pairs, 256x256, 1 channel" in cli.stderr
    for label in ("background", "disc", "vertebra"):
        assert label in cli.stderr
    committed = json.loads(EXAMPLE_DESCRIPTION.read_text())
    assert json.loads(cli.stdout) == {**committed, "images": "images", "masks": "masks"}


# ---------------------------------------------------------------- dataset.json and the description


def test_malformed_dataset_json(dataset):
    (dataset / "dataset.json").write_text('{"labels": {"dark": 0,}}')
    refused(dataset, "d/dataset.json: not valid JSON (line 1")


@pytest.mark.parametrize("keys, needle", [
    ({"labels": {"dark": 0, "mid": 1, "bright": 1}}, "dataset.json: labels: 'mid' and 'bright' both have value 1"),
    ({"labels": {"dark": 0, "rest": [1, 2], "bright": 2}},
     "dataset.json: labels: 'rest' and 'bright' both have value 2 (overlapping regions: multi-label training is not"),
    ({"labels": {"dark": 0, "rest": [1, 2]}, "regions_class_order": [1, 2]},
     "dataset.json: 'regions_class_order' (nnU-Net's overlapping regions) is not supported"),
    ({"labels": LABELS, "channel_names": {"0": "a", "1": "b"}}, "dataset.json: channel_names has 2 channels"),
    ({"labels": LABELS, "partial_label": True}, "dataset.json: unknown key 'partial_label'"),
    ({"modality": {"0": "MRI"}}, "dataset.json: 'modality' is nnU-Net v1's key"),
])
def test_bad_dataset_json_keys(dataset, keys, needle):
    write_dataset_json(dataset, **keys)
    refused(dataset, needle)


def test_missing_declared_folder(dataset):
    write_dataset_json(dataset, images="images", masks="label", labels=LABELS)
    refused(dataset, "d: no label/ folder", proposes={"images": "images/{name}.png", "masks": "masks/{name}.npy",
                                                      "labels": LABELS})
    (dataset / "masks").rename(dataset / "other")  # no folder named like masks: nothing to propose
    refused(dataset, "d: no label/ folder")


def test_colour_mask_with_value_labels(dataset):
    write_dataset_json(dataset, labels=LABELS)
    (dataset / "masks" / "3.npy").unlink()
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 1  # (1, 0, 0): no gray
    Image.fromarray(colour).save(dataset / "masks" / "3.png")
    refused(dataset, "masks/3.png: colour mask (RGB with different channels), but dataset.json labels are values; "
                     "give the labels as colours", streaming=False)


def test_multi_channel_npy_mask(dataset):
    np.save(dataset / "masks" / "3.npy", np.zeros((32, 32, 2), np.int64))
    refused(dataset, "masks/3.npy: 2 channels (npy) mask, expected one channel of label values")


def test_colour_image_in_a_gray_dataset(dataset):
    write_dataset_json(dataset, channel_names={"0": "MRI"}, labels=LABELS)
    Image.fromarray(make_image(4, (32, 32), channels=3)).save(dataset / "images" / "4.png")
    message = refused(dataset, "images/4.png: 3 channels (RGB), but dataset.json channel_names has 1")
    assert len(message.splitlines()) == 1  # never silently turned into gray


def test_gray_image_in_an_rgb_dataset(tmp_path):
    root = write_layout(tmp_path / "rgb", "rgb_ignore", n=4)
    write_array(root / "train" / "2.png", make_image(2, (36, 48)))
    message = refused(root, "train/2.png: 1 channel (L), but dataset.json channel_names has 3")
    assert len(message.splitlines()) == 1  # never silently turned into RGB


def test_without_dataset_json_the_images_that_differ_from_most_are_named(tmp_path):
    root = write_layout(tmp_path / "gray", "gray", n=5)
    Image.fromarray(make_image(4, (32, 32), channels=3)).save(root / "images" / "4.png")
    message = refused(root, "images/4.png: 3 channels (RGB), but most images have 1")
    assert len(message.splitlines()) == 1
    for k in range(4):  # now most are colour: the gray one is named
        Image.fromarray(make_image(k, (32, 32), channels=3)).save(root / "images" / f"{k}.png")
    write_array(root / "images" / "2.png", make_image(2, (32, 32)))
    refused(root, "images/2.png: 1 channel (L), but most images have 3")


def test_rgba_image(tmp_path):
    root = write_layout(tmp_path / "rgb", "rgb_ignore", n=3)
    Image.fromarray(np.zeros((36, 48, 4), np.uint8)).save(root / "train" / "1.png")
    refused(root, "train/1.png: 4 channels (RGBA); images must have 1 (gray) or 3 (RGB) channels")


def test_unsupported_dtypes_are_found_from_the_header(dataset):
    (dataset / "images" / "1.png").unlink()
    np.save(dataset / "images" / "1.npy", np.zeros((32, 32), np.complex64))
    np.save(dataset / "masks" / "2.npy", np.zeros((32, 32), "<U1"))
    refused(dataset, "images/1.npy: unsupported image dtype complex64", "masks/2.npy: unsupported mask dtype <U1")


def test_nnunet_names_and_channel_files(tmp_path):
    root = write_layout(tmp_path / "nn", "nnunet", n=3)
    (root / "imagesTr" / "case_001_0000.png").rename(root / "imagesTr" / "case_001.png")
    (root / "imagesTr" / "case_002_0000.png").rename(root / "imagesTr" / "case_002_0001.png")
    refused(root, "imagesTr/case_001.png: nnU-Net image names end in _0000",
            "imagesTr/case_002_0001.png: channel file _0001: separate channel files are not supported")


def test_both_layouts_present_is_ambiguous(tmp_path):
    root = write_layout(tmp_path / "nn", "nnunet", n=3)
    write_dataset(root, ["a", "b"])
    (root / "dataset.json").unlink()
    refused(root, "both images/ and imagesTr/")


def test_too_many_distinct_mask_values_without_dataset_json(dataset):
    np.save(dataset / "masks" / "0.npy", np.arange(32 * 32).reshape(32, 32))
    refused(dataset, "the masks hold 1024 distinct values (0, 1, 2, 3", "at most 254 classes")
