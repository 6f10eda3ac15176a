"""The dataset description: dataset.json read and validated (errors name dataset.json and the key), the layouts
recognised, the properties other modules rely on, and the JSON it writes back."""
import dataclasses
import json

import numpy as np
import pytest
from synthetic import write_dataset_json

from maskpair.data.description import IGNORE_INDEX, DatasetDescription, read_declared
from maskpair.data.fetch import EXAMPLE_DESCRIPTION
from maskpair.errors import DataError

SPINE_JSON = EXAMPLE_DESCRIPTION


def street(**overrides) -> DatasetDescription:
    keys = {"name": "streets", "channel_names": {"0": "R", "1": "G", "2": "B"},
            "labels": {"road": 3, "ignore": 255, "sky": 0, "car": 8}, **overrides}
    return DatasetDescription(**keys)


def test_classes_are_the_labels_without_ignore_in_value_order():
    d = street()
    assert d.classes == ("sky", "road", "car") and d.class_values == (0, 3, 8)
    assert d.ignore_value == 255 and d.n_classes == 3 and d.n_channels == 3
    assert list(d.labels) == ["sky", "road", "car", "ignore"]  # sorted by value
    assert d.labels_text() == "0 sky, 3 road, 8 car, 255 ignore"
    assert IGNORE_INDEX == 255
    plain = DatasetDescription("em", {"0": "EM"}, {"membrane": 0, "cell": 255})
    assert plain.ignore_value is None and plain.classes == ("membrane", "cell") and not plain.partial_labels
    assert (plain.layout, plain.source, plain.images, plain.masks) == ("folders", "inferred", "images", "masks")


def test_the_spine_example_description():
    d = DatasetDescription(**json.loads(SPINE_JSON.read_text()))
    assert d.classes == ("background", "disc", "vertebra") and d.partial_labels and d.n_channels == 1
    assert d.audit == {"alternating": ["disc", "vertebra"], "extent": True}  # passed through untouched


def test_read_declared_gives_what_the_file_says_and_where_the_files_are(tmp_path):
    assert read_declared(tmp_path) == {"source": "inferred", "name": tmp_path.name, "partial_labels": False,
                                       "file_ending": None, "audit": {}, "layout": "folders", "images": "images",
                                       "masks": "masks", "roi": None, "unpaired_images": "error",
                                       "lossy_masks": False, "max_size": None}
    path = write_dataset_json(tmp_path, name="EM", images="image", masks="label", channel_names={"0": "EM"},
                              labels={"cell": 255, "membrane": 0}, partial_labels=True, numTraining=30,
                              audit={"extent": True})
    declared = read_declared(tmp_path)
    assert declared["source"] == str(path) and declared["labels"] == {"membrane": 0, "cell": 255}
    assert (declared["layout"], declared["images"], declared["masks"]) == ("folders", "image", "label")
    assert declared["partial_labels"] and declared["audit"] == {"extent": True}
    assert DatasetDescription(**declared).declared


def test_nnunet_layout_is_recognised_from_its_folders(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    assert read_declared(tmp_path)["layout"] == "nnunet"
    write_dataset_json(tmp_path, images="imagesTr", masks="labelsTr")  # named folders: paired by file stem
    assert read_declared(tmp_path)["layout"] == "folders"
    (tmp_path / "dataset.json").unlink()
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="both images/ and imagesTr/"):
        read_declared(tmp_path)


@pytest.mark.parametrize("layout", ["folders", "nnunet"])
def test_to_json_reads_back_as_the_same_description(tmp_path, layout):
    if layout == "nnunet":
        (tmp_path / "imagesTr").mkdir()
    d = street(layout=layout, partial_labels=True, audit={"extent": True}, file_ending=".png",
               **({"images": "imagesTr", "masks": "labelsTr"} if layout == "nnunet" else {}))
    (tmp_path / "dataset.json").write_text(d.to_json())
    again = DatasetDescription(**read_declared(tmp_path))
    assert again == street(layout=layout, partial_labels=True, audit={"extent": True}, file_ending=".png",
                           source=str(tmp_path / "dataset.json"), name=d.name,
                           **({"images": "imagesTr", "masks": "labelsTr"} if layout == "nnunet" else {}))
    assert ("images" in json.loads(d.to_json())) == (layout == "folders")


def test_labels_as_value_lists_and_colours():
    regions = DatasetDescription("ids", {"0": "x"}, {"vehicle": [28, 26, 27], "flat": [7, 8], "sky": 23,
                                                     "ignore": [0, 1]})
    assert regions.classes == ("flat", "sky", "vehicle")  # by smallest value; the lists as given
    assert regions.class_values == (7, 23, 28) and regions.ignore_value == 0
    assert regions.labels_text() == "0/1 ignore, 7/8 flat, 23 sky, 28/26/27 vehicle"
    assert not regions.colour_labels
    colours = DatasetDescription("c", {"0": "R", "1": "G", "2": "B"},
                                 {"road": "#804080", "sky": "#808080", "ignore": "#000000", "car": ["#400080", "#4000C0"]})
    assert colours.classes == ("road", "sky", "car") and colours.colour_labels  # as listed
    assert colours.labels["car"] == ["#400080", "#4000c0"] and colours.ignore_value == "#000000"
    assert colours.labels_text() == "#804080 road, #808080 sky, #000000 ignore, #400080/#4000c0 car"


@pytest.mark.parametrize("labels, values, dtype", [
    ({"a": -3, "b": 1000}, [-3, 1000], np.int16),
    ({"a": 0, "b": 1000}, [0, 1000], np.uint16),
    ({"a": [5, 6], "b": 9, "ignore": 255}, [5, 9], np.uint8),
])
def test_encode_writes_each_class_as_its_first_value_in_a_dtype_that_holds_them(labels, values, dtype):
    d = DatasetDescription("x", {"0": "g"}, labels)
    written = d.encode(np.array([[0, 1], [1, IGNORE_INDEX]], np.uint8))
    ignore = d.ignore_value if d.ignore_value is not None else values[0]
    assert written.dtype == dtype and written.tolist() == [[values[0], values[1]], [values[1], ignore]]


def test_to_json_reads_back_the_new_keys(tmp_path):
    d = DatasetDescription("published", {"0": "R", "1": "G", "2": "B"},
                           {"lesion": "#ffffff", "background": "#000000"}, images="in/{name}.jpg",
                           masks="gt/*/{name}_segmentation.png", roi="fov/{name}_mask.gif", unpaired_images="skip",
                           lossy_masks=True, max_size=1024)
    (tmp_path / "dataset.json").write_text(d.to_json())
    again = DatasetDescription(**read_declared(tmp_path))
    assert again == dataclasses.replace(d, source=str(tmp_path / "dataset.json"), name=d.name)
    assert list(json.loads(d.to_json())["labels"]) == ["lesion", "background"]


@pytest.mark.parametrize("text, needle", [
    ("{'labels': 1}", "d/dataset.json: not valid JSON (line 1, column 2"),
    ("[1, 2]", "d/dataset.json: expected a JSON object"),
    ('{"labels": {"a": 0}, "labels": {"a": 1}}', "d/dataset.json: key 'labels' appears twice"),
    ('{"labels": {"a": 0, "b": 1, "a": 2}}', "d/dataset.json: key 'a' appears twice"),
    ('{"lables": {"a": 0}}', "d/dataset.json: unknown key 'lables'"),
    ('{"modality": {"0": "CT"}}', "'modality' is nnU-Net v1's key"),
    ('{"labels": {}}', "d/dataset.json: labels must be a non-empty object"),
    ('{"labels": {"a": 0, "b": 0}}', "d/dataset.json: labels: 'a' and 'b' both have value 0"),
    ('{"labels": {"a": [0, 1], "b": [1, 2]}}', "labels: 'a' and 'b' both have value 1 (overlapping regions"),
    ('{"labels": {"a": [0, 0], "b": 2}}', "labels: 'a' lists value 0 twice"),
    ('{"labels": {"a": [], "b": 2}}', "labels: 'a' is an empty list"),
    ('{"labels": {"a": 0, "b": "#ff0000"}}', "labels mix integers and colours"),
    ('{"labels": {"a": "#ff00", "b": "#ff0000"}}', "labels: 'a' has value '#ff00', expected an integer, a colour"),
    ('{"labels": {"a": "red", "b": "#ff0000"}}', "labels: 'a' has value 'red', expected an integer, a colour"),
    ('{"labels": {"a": "#FF0000", "b": "#ff0000"}}', "labels: 'a' and 'b' both have value #ff0000"),
    ('{"labels": {"a": 0, "b": 1}, "regions_class_order": [1]}', "'regions_class_order' (nnU-Net's overlapping"),
    ('{"labels": {"a": 0, "b": 1.5}}', "labels: 'b' has value 1.5, expected an integer"),
    ('{"labels": {"a": 0, "b": true}}', "labels: 'b' has value True, expected an integer"),
    ('{"labels": {"ignore": 255}}', "labels: no class besides 'ignore'"),
    ('{"channel_names": {"0": "R", "1": "G"}}', "d/dataset.json: channel_names has 2 channels; supported: 1 (gray), 3"),
    ('{"channel_names": {"1": "R"}}', "channel_names keys must be 0, got 1"),
    ('{"channel_names": ["R"]}', "channel_names must be an object"),
    ('{"partial_labels": "yes"}', "d/dataset.json: partial_labels must be true or false"),
    ('{"file_ending": ".nii.gz"}', "d/dataset.json: file_ending must be one of"),
    ('{"masks": "../elsewhere"}', "d/dataset.json: masks must be a folder name or a template inside the data"),
    ('{"masks": "m/{name}_{name}.png"}', "d/dataset.json: masks 'm/{name}_{name}.png': {name} must appear once"),
    ('{"masks": "{name}/mask.png"}', "masks '{name}/mask.png': {name} must be in the file name (the last part)"),
    ('{"masks": "m/{id}_{name}.png"}', "masks 'm/{id}_{name}.png': the only field is {name}"),
    ('{"masks": "m/a*/{name}.png"}', "masks 'm/a*/{name}.png': * stands only for a whole folder level"),
    ('{"images": "train/*"}', "images 'train/*': a folder name, or a template with {name} for the file name"),
    ('{"roi": "mask"}', "d/dataset.json: roi must be a template inside the data folder with {name}"),
    ('{"roi": "*/{name}.gif"}', "d/dataset.json: roi '*/{name}.gif': * is not allowed here"),
    ('{"unpaired_images": "ignore"}', "d/dataset.json: unpaired_images must be one of 'error', 'skip', got 'ignore'"),
    ('{"lossy_masks": 1}', "d/dataset.json: lossy_masks must be true or false"),
    ('{"max_size": 8}', "d/dataset.json: max_size must be an integer of at least 32"),
    ('{"max_size": "1024"}', "d/dataset.json: max_size must be an integer of at least 32"),
    ('{"audit": ["extent"]}', "d/dataset.json: audit must be an object"),
])
def test_bad_dataset_json_names_the_file_and_the_key(tmp_path, text, needle):
    root = tmp_path / "d"
    root.mkdir()
    (root / "dataset.json").write_text(text)
    with pytest.raises(DataError) as err:
        read_declared(root)
    assert needle in str(err.value) and len(err.value.problems) == 1, str(err.value)


def test_class_count_limit():
    DatasetDescription("many", {"0": "x"}, {f"c{v}": v for v in range(254)} | {"ignore": 255})
    with pytest.raises(DataError, match="255 classes, at most 254"):
        DatasetDescription("too many", {"0": "x"}, {f"c{v}": v for v in range(255)})


def test_negative_and_large_label_values_are_fine():
    d = DatasetDescription("odd", {"0": "x"}, {"low": -3, "high": 1000, "ignore": 7})
    assert d.classes == ("low", "high") and d.class_values == (-3, 1000) and d.ignore_value == 7


def test_construction_validates_like_the_file(tmp_path):
    with pytest.raises(DataError, match="dataset description: labels: 'a' and 'b' both have value 1"):
        DatasetDescription("x", {"0": "g"}, {"a": 1, "b": 1})
    with pytest.raises(DataError, match="layout must be one of"):
        DatasetDescription("x", {"0": "g"}, {"a": 1}, layout="flat")
