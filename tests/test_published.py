"""Datasets in the layouts public datasets are published in (tests/published.py), read from a dataset.json alone:
`check`, the loader in its three cache modes and the audit on each; every new kind of bad input refused naming
the file; what check proposes when a folder does not read as described; large images; `encode`."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import CLI, PROJECT_DIR
from PIL import Image
from published import CONVENTIONS, write_published
from test_bad_input import refused

from maskpair import cli
from maskpair.data.description import DatasetDescription, read_declared
from maskpair.data.files import natural_key
from maskpair.data.loader import DataLoader
from maskpair.data.reading import area_resize, nearest_resize, read_labels
from maskpair.errors import DataError

CACHES = (True, False, "disk")


def pairs_of(convention) -> int:
    return 2 if convention == "large" else 5


def check(data_dir, capsys):
    """(exit status, stdout, stderr) of `maskpair check DATA`."""
    status = cli.main(["check", str(data_dir)])
    out = capsys.readouterr()
    return status, out.out, out.err


def image_u8(data, name):
    return np.round(data.get_image(name) * 255).astype(np.uint8)


def assert_images_are_their_own(data, published):
    """Each image read is its own generated image (lossy files within JPEG's error), not another example's."""
    for name in data.names:
        read = image_u8(data, name).astype(np.int16).reshape(published.images[name].shape)
        own = np.abs(read - published.images[name]).mean()
        others = [np.abs(read - image).mean() for other, image in published.images.items()
                  if other != name and image.shape == read.shape]
        assert own < 20 and all(own < other for other in others), (name, own, others)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_each_published_layout_checks_and_reads_identically_in_every_cache_mode(tmp_path, convention, capsys):
    published = write_published(tmp_path / convention, convention, n=pairs_of(convention))
    status, out, err = check(published.root, capsys)
    assert status == 0, err
    loaders = {cache: DataLoader(published.root, batch_size=1, cache=cache, full_size=True) for cache in CACHES}
    first = loaders[True]
    # stdout: the description used, which reads back as the same description
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "dataset.json").write_text(out)
    again = DatasetDescription(**{**read_declared(tmp_path / "again"), "source": first.description.source})
    assert again == first.description
    if published.description:
        assert first.description.labels == DatasetDescription(**published.description).labels
    assert first.names == sorted(published.expected, key=natural_key)
    for cache, data in loaders.items():
        assert data.names == first.names and data.labels == first.labels
        for name in data.names:
            assert np.array_equal(data.get_mask(name), published.expected[name]), (cache, name)
            assert np.array_equal(data.get_image(name), first.get_image(name)), (cache, name)
    assert_images_are_their_own(first, published)
    left_out = {"isic": "2 files that fit no template, left alone",  # LICENSE.txt, ATTRIBUTION.txt
                "cityscapes": "15 files that fit no template, left alone",  # _color, _instanceIds, _polygons
                "voc": "3 images without a mask, left out (unpaired_images: skip)"}.get(convention)
    assert left_out in err if left_out else " left " not in err, err


def test_each_published_layout_audits(tmp_path):
    from maskpair.audit import audit_dataset

    for convention in CONVENTIONS:
        published = write_published(tmp_path / convention, convention, n=pairs_of(convention))
        report = audit_dataset(published.root, progress=False)
        assert [entry["name"] for entry in report["examples"]] == sorted(published.expected, key=natural_key)


def test_large_images_are_read_reduced_by_max_size_and_at_their_own_size_on_request(tmp_path):
    published = write_published(tmp_path / "large", "large", n=2)  # 1536x2048 and 2048x1536, max_size 512
    own = {"photo0": (1536, 2048), "photo1": (2048, 1536)}
    reduced = {"photo0": (384, 512), "photo1": (512, 384)}
    for cache in CACHES:
        data = DataLoader(published.root, batch_size=1, cache=cache)
        assert data.sizes == reduced and data.original_sizes == own, cache
        for name in data.names:
            expected = nearest_resize(published.expected[name], reduced[name])
            assert np.array_equal(data.get_mask(name), expected), (cache, name)
            box = area_resize(published.images[name], reduced[name]).astype(np.int16)  # the area filter
            assert np.abs(image_u8(data, name).astype(np.int16) - box).mean() < 4, (cache, name)
            image, labels = data.read_full_size(name)
            assert image.shape[:2] == own[name] and np.array_equal(labels, published.expected[name])
        assert data.batch_arrays(["photo0"], compact=True)[0].shape == (1, 384, 512, 3)
    again = DataLoader(published.root, batch_size=1, cache="disk")  # reopened: the sizes are in the cache
    assert again.sizes == reduced and again.original_sizes == own


def test_check_names_the_template_and_prints_a_dataset_json_that_reads(tmp_path, capsys):
    for convention, template in (("isic", '"masks": "ISIC2018_Task1_Training_GroundTruth/{name}_segmentation.png"'),
                                 ("camvid", '"masks": "LabeledApproved_full/{name}_L.png"'),
                                 ("voc", '"unpaired_images": "skip"'),
                                 ("kvasir", '"lossy_masks": true')):
        published = write_published(tmp_path / convention, convention, n=3)
        (published.root / "dataset.json").unlink()
        status, out, err = check(published.root, capsys)
        assert status == 1 and template in err and "as proposed below reads this folder" in err, (convention, err)
        (published.root / "dataset.json").write_text(out)
        status, _, err = check(published.root, capsys)
        assert status == 0, (convention, err)
        data = DataLoader(published.root, batch_size=1)
        for name in data.names:  # labels named by their value or colour: the masks written back are the files
            mask_file = data.pairs[name][1]
            written = data.description.encode(data.get_mask(name))
            stored = Image.open(mask_file)  # as the labels were inferred: palette indices, colours, gray
            stored = np.asarray(stored.convert("RGB") if written.ndim == 3 else stored)
            if convention == "kvasir":  # JPEG: the nearest label
                assert np.array_equal(data.get_mask(name), published.expected[name])
            else:
                assert np.array_equal(written, stored), (convention, name)


def test_palette_masks_whose_colours_are_the_labels_are_refused_with_colour_labels_proposed(tmp_path, capsys):
    published = write_published(tmp_path / "drive", "drive", n=3)
    for path in (published.root / "1st_manual").iterdir():  # a two-colour palette: indices 0/1 show black/white
        Image.fromarray(np.asarray(Image.open(path))).save(path)
    assert Image.open(path).mode == "P"
    status, out, err = check(published.root, capsys)
    assert status == 1
    assert ("1st_manual/21_manual1.gif: value 1 is not in dataset.json labels (0 background, 255 vessel); it is a "
            "palette image, read as its indices (0, 1), and its colours (#000000, #ffffff) are the labels' values: "
            'give the labels as colours, "labels": {"background": "#000000", "vessel": "#ffffff"}') in err
    assert json.loads(out)["labels"] == {"background": "#000000", "vessel": "#ffffff"}
    (published.root / "dataset.json").write_text(out)
    data = DataLoader(published.root, batch_size=1)
    assert all(np.array_equal(data.get_mask(name), published.expected[name]) for name in data.names)


def test_colour_masks_described_by_values_are_refused_with_their_colours_proposed(tmp_path, capsys):
    published = write_published(tmp_path / "camvid", "camvid", n=3)
    keys = json.loads((published.root / "dataset.json").read_text())
    (published.root / "dataset.json").write_text(json.dumps({**keys, "labels": {"void": 0, "scene": 1}}))
    status, out, err = check(published.root, capsys)
    assert status == 1
    assert ("LabeledApproved_full/0001TP_006690_L.png: colour mask (RGB with different channels), but dataset.json "
            'labels are values; give the labels as colours "#rrggbb"') in err
    assert "the masks are colour-coded: labels given as the 6 colours found in them (name them)" in err
    proposed = json.loads(out)
    assert set(proposed["labels"].values()) == set(keys["labels"].values())  # every colour the masks hold
    assert proposed["masks"] == keys["masks"] and proposed["name"] == keys["name"]


def test_lossy_masks_take_the_nearest_label_in_every_channel(tmp_path):
    """Gray labels on RGB masks whose channels differ (JPEG's colour noise), and colour labels: each pixel the
    nearest label by its largest channel difference; more than 1% of pixels farther than 32 levels is refused."""
    truth = np.arange(100 * 100).reshape(100, 100) % 7 < 3  # 0/1
    noise = np.random.default_rng(0).integers(-20, 21, (100, 100, 3))
    rgb = np.clip(np.where(truth[..., None], 250, 5) + noise, 0, 255).astype(np.uint8)
    path = tmp_path / "mask.png"
    Image.fromarray(rgb).save(path)
    gray = DatasetDescription("g", {"0": "R", "1": "G", "2": "B"}, {"background": 0, "polyp": 255}, lossy_masks=True)
    assert np.array_equal(read_labels(path, gray), truth)
    colours = DatasetDescription("c", {"0": "R", "1": "G", "2": "B"},
                                 {"polyp": "#ffffff", "background": "#000000"}, lossy_masks=True)
    assert np.array_equal(read_labels(path, colours), ~truth)  # colour labels keep their order: polyp is 0
    rgb[:11, :10] = (128, 128, 128)  # 110 pixels = 1.1% far from 0 and 255
    Image.fromarray(rgb).save(path)
    with pytest.raises(DataError, match=r"mask.png: 1.1% of pixels are more than 32 levels from every label"):
        read_labels(path, gray)
    rgb[10, :10] = truth[10, :10, None] * 250  # 100 pixels = 1.0%: tolerated
    Image.fromarray(rgb).save(path)
    assert read_labels(path, gray).shape == (100, 100)


def _drop_image(root):
    (root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0014568.jpg").unlink()


def _add_image(root):
    shutil.copy(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0014568.jpg",
                root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9999999.jpg")


def _keys(**changes):
    def change(root):
        keys = json.loads((root / "dataset.json").read_text())
        keys.update(changes)
        keys = {key: value for key, value in keys.items() if value is not None}
        (root / "dataset.json").write_text(json.dumps(keys))
    return change


def _shrink_roi(root):
    Image.open(root / "mask" / "22_training_mask.gif").resize((24, 20)).save(root / "mask" / "22_training_mask.gif")


def _paint(path, value, rows=slice(0, 1), cols=slice(0, 2), mode=None):
    def change(root):
        pixels = np.asarray(Image.open(root / path).convert(mode) if mode else Image.open(root / path)).copy()
        pixels[rows, cols] = value
        Image.fromarray(pixels).save(root / path, **({"quality": 75} if path.endswith(".jpg") else {}))
    return change


def _name_twice(root):
    shutil.copy(root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                root / "leftImg8bit/train/bochum/aachen_000000_000019_leftImg8bit.png")


PLANTED = {  # convention, change, (needles...), streaming (found without decoding masks)[, what check proposes]
    "orphan mask": ("isic", _drop_image, ("ISIC2018_Task1_Training_GroundTruth/ISIC_0014568_segmentation.png: no "
                                          "matching image for example ISIC_0014568",), True),
    "orphan image": ("isic", _add_image, ("ISIC2018_Task1-2_Training_Input/ISIC_9999999.jpg: no matching mask for "
                                          "example ISIC_9999999",), True),
    "template of no folder": ("isic", _keys(images="Input/{name}.jpg"),
                              ("isic: no file fits images 'Input/{name}.jpg' (no folder Input/)",), True),
    "unpaired images not allowed": ("voc", _keys(unpaired_images=None),
                                    ("JPEGImages/2007_000037.jpg: no matching mask for example 2007_000037",), True),
    "missing ROI": ("drive", lambda root: (root / "mask" / "22_training_mask.gif").unlink(),
                    ("mask/22_training_mask.gif: no such ROI file (roi 'mask/{name}_training_mask.gif')",), True),
    "ROI of another size": ("drive", _shrink_roi, ("mask/22_training_mask.gif: ROI shape 20x24, image "
                                                   "images/22_training.tif is 40x48",), True),
    "unknown colour": ("camvid", _paint("LabeledApproved_full/0001TP_006720_L.png", (0x12, 0x34, 0x56)),
                       ("LabeledApproved_full/0001TP_006720_L.png: colour #123456 is not in dataset.json labels "
                        "(#808080 Sky, #800000 Building",), False),
    "JPEG mask without lossy_masks": ("kvasir", _keys(lossy_masks=None),
                                      ('masks/cju0qkwl35piu0993l0dewei2.jpg: JPEG mask (lossy compression changes '
                                       'label values); set "lossy_masks": true in dataset.json',), True,
                                      {"lossy_masks": True}),
    "lossy mask far from every label": ("kvasir", _paint("masks/cju1qkwl35piu0993l0dewei2.jpg", 128,
                                                         slice(0, 20), slice(0, 20), "RGB"),
                                        ("masks/cju1qkwl35piu0993l0dewei2.jpg: ", "% of pixels are more than 32 levels "
                                         "from every label of dataset.json labels", "tolerates at most 1%"), False),
    "value in two classes": ("cityscapes", _keys(labels={"flat": [7, 8], "construction": [11, 12, 13], "sky": 23,
                                                         "vehicle": [13, 26, 27, 28], "ignore": [0, 1, 4]}),
                             ("dataset.json: labels: 'construction' and 'vehicle' both have value 13 (overlapping "
                              "regions: multi-label training is not supported",), True),
    "label ID not listed": ("cityscapes", _paint("gtFine/train/bochum/bochum_000000_000020_gtFine_labelIds.png", 33),
                            ("bochum_000000_000020_gtFine_labelIds.png: value 33 is not in dataset.json labels "
                             "(0/1/4 ignore, 7/8 flat, 11/12/13 construction, 23 sky, 26/27/28 vehicle)",), False),
    "one name in two folders": ("cityscapes", _name_twice,
                                ("bochum/aachen_000000_000019_leftImg8bit.png and aachen/aachen_000000_000019_leftImg8bit"
                                 ".png: two files for example aachen_000000_000019",), True),
}


@pytest.mark.parametrize("problem", list(PLANTED))
def test_planted_problems_are_refused_naming_the_file(tmp_path, problem):
    convention, plant, needles, streaming, *proposes = PLANTED[problem]
    published = write_published(tmp_path / convention, convention, n=3)
    plant(published.root)
    refused(published.root, *needles, streaming=streaming, proposes=proposes[0] if proposes else None)
    with pytest.raises(DataError) as err:
        DataLoader(published.root, batch_size=1, cache="disk")
    assert all(needle in str(err.value) for needle in needles)
    assert not list((tmp_path / f"{convention}.cache").glob("*/index.json"))  # nothing half-written


@pytest.mark.parametrize("convention", ["drive", "cityscapes", "camvid", "voc", "kvasir"])
def test_encode_writes_label_maps_as_the_dataset_stores_masks(tmp_path, convention):
    """What `predict` writes: a label map encoded as the dataset's values (a class of several values as its first,
    colours for colour labels) reads back as the same label map (ignore pixels aside)."""
    published = write_published(tmp_path / convention, convention, n=2)
    data = DataLoader(published.root, batch_size=1)
    description = data.description
    for name in data.names:
        labels = data.get_mask(name)
        written = description.encode(labels)
        assert written.shape == labels.shape + ((3,) if description.colour_labels else ())
        assert written.dtype == np.uint8
        path = tmp_path / f"{name}.png"
        Image.fromarray(written).save(path)
        read = read_labels(path, description)
        known = labels != 255
        assert np.array_equal(read[known], labels[known]), name
    assert description.encode(np.array([[0, 255]], np.uint8)).tolist() == {
        "drive": [[0, 0]], "cityscapes": [[7, 0]], "camvid": [[[128, 128, 128], [0, 0, 0]]], "voc": [[0, 255]],
        "kvasir": [[0, 0]]}[convention]
    with pytest.raises(ValueError, match="class index 9 is not one of"):
        description.encode(np.array([[9]], np.uint8))


def test_dataset_files_name_every_file_an_example_is_read_from(tmp_path):
    from maskpair.data.files import dataset_files

    drive = write_published(tmp_path / "drive", "drive", n=2).root
    assert dataset_files(drive) == {name: (drive / "images" / f"{name}_training.tif",
                                           drive / "1st_manual" / f"{name}_manual1.gif",
                                           drive / "mask" / f"{name}_training_mask.gif") for name in ("21", "22")}
    isic = write_published(tmp_path / "isic", "isic", n=1).root
    assert dataset_files(isic) == {"ISIC_0014568": (isic / "ISIC2018_Task1-2_Training_Input" / "ISIC_0014568.jpg",
                                                    isic / "ISIC2018_Task1_Training_GroundTruth" /
                                                    "ISIC_0014568_segmentation.png")}


def test_check_and_audit_of_a_template_and_roi_dataset_from_a_folder_with_its_own_modules(tmp_path):
    """A user's folder holds config.py, model.py, utils.py (and errors.py): the commands import ours all the same."""
    published = write_published(tmp_path / "DRIVE" / "training", "drive", n=4)
    work = tmp_path / "work"
    work.mkdir()
    for module in ("config", "model", "utils", "errors", "loader"):
        (work / f"{module}.py").write_text("raise ImportError('the user module was imported')\n")
    checked = subprocess.run([*CLI, "check", str(published.root)], cwd=work, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["roi"] == "mask/{name}_training_mask.gif"
    assert "4 pairs, 40x48, 3 channels" in checked.stderr and "ignore" in checked.stderr
    audited = subprocess.run([*CLI, "audit", str(published.root), "--json", str(work / "out" / "audit.json")],
                             cwd=work, capture_output=True, text=True)
    assert audited.returncode == 0, audited.stderr
    report = json.loads((work / "out" / "audit.json").read_text())
    assert [entry["name"] for entry in report["examples"]] == ["21", "22", "23", "24"]
    assert (work / "out" / "audit.png").stat().st_size > 0


def test_a_published_layout_in_a_disk_cache_is_rebuilt_when_a_file_in_a_star_folder_or_an_roi_changes(tmp_path):
    from maskpair.data import disk_cache

    cityscapes = write_published(tmp_path / "cityscapes", "cityscapes", n=4)
    drive = write_published(tmp_path / "drive", "drive", n=3)
    for published, changed in ((cityscapes, "gtFine/train/bochum/bochum_000000_000020_gtFine_labelIds.png"),
                               (drive, "mask/22_training_mask.gif")):
        first = DataLoader(published.root, batch_size=1, cache="disk")
        key = first.store.cache.key
        assert DataLoader(published.root, batch_size=1, cache="disk").store.cache.key == key  # reopened
        path = published.root / changed
        values = np.asarray(Image.open(path)).copy()
        values[0, 0] = 0 if values[0, 0] else values.max()
        Image.fromarray(values).save(path) if path.suffix == ".png" else Image.fromarray(values).save(path, "GIF")
        again = DataLoader(published.root, batch_size=1, cache="disk")
        assert again.store.cache.key != key, changed
        assert again.names == first.names
    assert disk_cache.FORMAT_VERSION >= 3


def test_every_dataset_json_of_docs_datasets_reads_a_dataset_of_its_layout(tmp_path, capsys):
    """docs/datasets.md's dataset.json blocks are valid, and each one for a layout tests/published.py writes reads
    such a dataset as it stands (every value, colour and file name the generator uses is in it)."""
    text = (PROJECT_DIR / "docs" / "datasets.md").read_text()
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]
    by_name = {"DRIVE": "drive", "ISIC 2018 lesion segmentation": "isic", "Kvasir-SEG": "kvasir",
               "Cityscapes fine, train": "cityscapes", "CamVid": "camvid", "Pascal VOC 2012 segmentation": "voc"}
    assert {block["name"] for block in blocks} >= set(by_name)
    for block in blocks:
        folder = tmp_path / "json" / block["name"]
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps(block))
        DatasetDescription(**{**read_declared(folder), "channel_names": block["channel_names"]})
        if block["name"] in by_name:
            published = write_published(tmp_path / by_name[block["name"]], by_name[block["name"]], n=3)
            (published.root / "dataset.json").write_text(json.dumps(block))
            status, _, err = check(published.root, capsys)
            assert status == 0, (block["name"], err)
