"""Using a trained model: the model folder, `maskpair predict` on new images of mixed sizes (in the dataset's own
encoding), sliding windows, the SavedModel in a process with TensorFlow alone, and `maskpair evaluate`.

One small model is trained once (a few epochs on generated scenes of round structures whose masks derive from the
drawing, stored as 16-bit values 0/1000/2000), from a folder that holds a user's own config.py, model.py and
utils.py, as a user would run the commands."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import CLI
from PIL import Image
from synthetic import write_blobs, write_dataset_json

from maskpair.errors import ConfigError
from maskpair.training.predict import labels_from_probabilities

VALUES = {"background": 0, "dim": 1000, "bright": 2000}  # beyond 8 bits: masks are 16-bit PNGs
TRAINING = ["--epochs", "12", "--passes-per-epoch", "4", "--crop", "None", "--learning-rate", "0.003",
            "--patience", "12", "--decoder-filters", "(32, 16, 16, 8, 8)"]

pytestmark = pytest.mark.slow


def blob_scenes(root, n, size, seed):
    """Generated scenes (tests/synthetic.write_blobs) with masks stored as VALUES in 16-bit PNGs."""
    write_blobs(root, n=n, size=size, seed=seed)
    lookup = np.array(list(VALUES.values()), np.uint16)
    for path in (root / "masks").iterdir():
        Image.fromarray(lookup[np.asarray(Image.open(path))]).save(path)
    write_dataset_json(root, name="blobs, 16-bit values", channel_names={"0": "gray"}, labels=VALUES)
    return root


def user_folder(tmp_path):
    """A user's working folder holding files named like modules of the project: none of them may be imported."""
    folder = tmp_path / "me"
    folder.mkdir()
    for name in ("config", "model", "utils", "errors", "train"):
        (folder / f"{name}.py").write_text(f"raise SystemExit('the user file {name}.py was imported')\n")
    return folder


def run(args, cwd, check=True):
    done = subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data folder, training output folder, the user's folder) after `maskpair train`."""
    tmp_path = tmp_path_factory.mktemp("predict")
    data = blob_scenes(tmp_path / "blobs", n=16, size=48, seed=0)
    me = user_folder(tmp_path)
    run(["train", data, "--out", tmp_path / "run", *TRAINING], cwd=me)
    return data, tmp_path / "run", me


def test_training_writes_a_self_contained_model_folder(trained):
    data, out, _ = trained
    folder = out / "model"
    info = json.loads((folder / "model.json").read_text())
    assert {path.name for path in folder.iterdir()} == {"model.keras", "saved_model", "model.json"}
    assert info["classes"] == list(VALUES) and info["description"]["labels"] == VALUES
    assert info["input"]["dtype"] == "uint8" and info["description"]["channel_names"] == {"0": "gray"}
    assert sorted(info["splits"]["test"]) == sorted(path.stem for path in (out / "predictions").iterdir())
    assert info["training"]["epochs"] == 12 and info["flip_average"] is True and info["pad_multiple"] == 32
    assert "applied" in info["postprocessing"]["largest_structure"]


def test_predict_writes_every_new_image_in_the_datasets_values_and_names_the_bad_ones(trained, tmp_path):
    _, out, me = trained
    new = tmp_path / "new"
    blob_scenes(new / "a", n=3, size=48, seed=7)
    blob_scenes(new / "b", n=2, size=96, seed=8)  # another size, in another folder
    (new / "b" / "images" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(new / "b" / "images" / "colour.png")  # 3 channels
    shutil_masks = [path for path in new.rglob("masks/*.png")]
    truths = {path.parent.parent.name + "/" + path.stem: np.asarray(Image.open(path)) for path in shutil_masks}
    for path in shutil_masks:  # only images to predict: masks go elsewhere, not into INPUT
        path.rename(tmp_path / f"{path.parent.parent.name}-{path.name}")
    done = run(["predict", out, new, "--out", tmp_path / "pred", "--probabilities", "--overlays"], cwd=me, check=False)
    assert done.returncode == 1  # an image failed
    assert "b/images/broken.png" in done.stderr or "images/broken.png" in done.stderr
    assert "images/colour.png" in done.stderr and "expected HxWx1" in done.stderr
    assert "predicted 5 of 7 images" in done.stdout
    agreement = []
    for key, truth in truths.items():
        folder, name = key.split("/")
        mask = np.asarray(Image.open(tmp_path / "pred" / folder / "images" / f"{name}.png"))
        assert mask.dtype == np.uint16 and mask.shape == truth.shape  # its own size, 16-bit like the dataset's
        assert set(np.unique(mask)) <= set(VALUES.values())
        agreement.append(np.mean(mask == truth))
        probabilities = np.load(tmp_path / "pred" / "probabilities" / folder / "images" / f"{name}.npy")
        assert probabilities.dtype == np.float16 and probabilities.shape == (*truth.shape, 3)
        np.testing.assert_allclose(probabilities.astype(np.float32).sum(-1), 1.0, atol=1e-2)
        overlay = np.asarray(Image.open(tmp_path / "pred" / "overlays" / folder / "images" / f"{name}.png"))
        assert overlay.shape == (*truth.shape, 3)
    assert min(agreement) > 0.9, agreement  # the structures are found where the drawing put them
    assert not (tmp_path / "pred" / "b" / "images" / "broken.png").exists()


def test_tiled_prediction_equals_whole_image_prediction(trained, tmp_path):
    from maskpair.training.segmenter import Segmenter

    _, out, _ = trained
    scene = blob_scenes(tmp_path / "large", n=1, size=160, seed=3)
    segmenter = Segmenter.load(out)
    image = segmenter.read(scene / "images" / "scene0.png")
    whole = segmenter.probabilities(image)
    tiled = segmenter.probabilities(image, tile=64)  # 3 x 3 windows of 64 px with half overlap and more
    assert tiled.shape == whole.shape == (160, 160, 3)
    agreement = np.mean(labels_from_probabilities(tiled) == labels_from_probabilities(whole))
    assert agreement > 0.99, agreement
    assert np.abs(tiled - whole).mean() < 0.02


def test_saved_model_in_a_process_with_tensorflow_alone_gives_the_same_label_maps(trained, tmp_path):
    from maskpair.training.segmenter import Segmenter

    data, out, _ = trained
    names = sorted((data / "images").iterdir())[:4]
    images = np.stack([np.asarray(Image.open(path)) for path in names])[..., None]  # as read: uint8
    np.save(tmp_path / "images.npy", images)
    script = ("import sys, numpy as np, tensorflow as tf\n"
              f"serve = tf.saved_model.load({str(out / 'model' / 'saved_model')!r}).signatures['serving_default']\n"
              f"labels = serve(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))['labels'].numpy()\n"
              f"np.save({str(tmp_path / 'labels.npy')!r}, labels)\n"
              "assert 'maskpair' not in sys.modules and 'segmentation_models' not in sys.modules\n")
    environment = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    segmenter = Segmenter.load(out / "model")
    expected = [labels_from_probabilities(p) for p in segmenter.probabilities_many(list(images))]
    assert np.array_equal(np.load(tmp_path / "labels.npy"), np.stack(expected))


def test_evaluate_reproduces_the_training_test_scores_exactly(trained, tmp_path):
    data, out, me = trained
    run(["evaluate", out, data, "--out", tmp_path / "ev"], cwd=me)
    trained_metrics = json.loads((out / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("dice", "iou", "mean_dice", "mean_iou", "dice_before_postprocessing", "examples"):
        assert evaluated[key] == trained_metrics[key], key
    assert evaluated["split"] == "test"
    run(["evaluate", out / "model", data, "--out", tmp_path / "all", "--all"], cwd=me)
    every = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert every["split"] == "all" and len(every["examples"]) == 16


def test_the_python_api_predicts_and_encodes_at_the_images_own_size(trained):
    from maskpair.training.segmenter import Segmenter

    data, out, _ = trained
    segmenter = Segmenter.load(out)
    labels = segmenter.predict(data / "images" / "scene3.png")
    assert labels.dtype == np.uint8 and labels.shape == (48, 48) and labels.max() < 3
    assert segmenter.encode(labels).dtype == np.uint16
    assert set(np.unique(segmenter.encode(labels))) <= set(VALUES.values())
    assert segmenter.probabilities(np.zeros((20, 30), np.uint8)).shape == (20, 30, 3)  # any size, no 32 multiple


def test_a_missing_model_or_input_is_one_line_and_exit_1(trained, tmp_path):
    data, out, me = trained
    missing = run(["predict", tmp_path / "nothing", data / "images", "--out", tmp_path / "p"], cwd=me, check=False)
    assert missing.returncode == 1 and "no model.json" in missing.stderr
    no_input = run(["predict", out, tmp_path / "none", "--out", tmp_path / "p"], cwd=me, check=False)
    assert no_input.returncode == 1 and "no such image, folder or list" in no_input.stderr


# ---------------------------------------------------------------- pretrained encoders


def test_a_local_encoder_weights_file_is_loaded_behind_the_normalisation_it_expects(tmp_path):
    from maskpair.training import model as unet
    from maskpair.training.legacy_keras import import_segmentation_models

    sm = import_segmentation_models()
    keras = {"backend": sm._KERAS_BACKEND, "layers": sm._KERAS_LAYERS, "models": sm._KERAS_MODELS,
             "utils": sm._KERAS_UTILS}  # what segmentation_models hands its encoders
    encoder = sm.Backbones.get_backbone("resnet18", input_shape=(None, None, 3), weights=None, include_top=False,
                                        **keras)
    rng = np.random.default_rng(0)
    encoder.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in encoder.get_weights()])
    encoder.save_weights(str(tmp_path / "resnet18.h5"))
    model = unet.build_model(1, 3, "resnet18", (16, 8, 8, 8, 8), encoder_weights=str(tmp_path / "resnet18.h5"))
    inner = next(layer for layer in model.layers if isinstance(layer, unet.tf.keras.Model))
    for name in ("conv0", "stage4_unit2_conv2"):
        for loaded, stored in zip(inner.get_layer(name).get_weights(), encoder.get_layer(name).get_weights()):
            np.testing.assert_array_equal(loaded, stored)
    # ResNets take 0..255 pixels as they are; a gray image goes to all three channels
    resnet = unet.encoder_normalisation("resnet18", 1)
    assert resnet["matrix"] == [[1.0], [1.0], [1.0]] and resnet["bias"] == [0.0, 0.0, 0.0]
    mobilenet = unet.encoder_normalisation("mobilenetv2", 3)
    np.testing.assert_allclose(mobilenet["matrix"], np.eye(3) / 127.5, atol=1e-7)
    np.testing.assert_allclose(mobilenet["bias"], [-1, -1, -1])
    assert model.get_layer("encoder_input").matrix == resnet["matrix"]
    with pytest.raises(ConfigError, match="holds no layer of the resnet18 encoder"):
        other = sm.Backbones.get_backbone("vgg16", input_shape=(None, None, 3), weights=None, include_top=False,
                                          **keras)
        other.save_weights(str(tmp_path / "vgg.h5"))
        unet.build_model(1, 3, "resnet18", (16, 8, 8, 8, 8), encoder_weights=str(tmp_path / "vgg.h5"))


def test_imagenet_weights_offline_fail_with_one_clear_line(tmp_path):
    data = blob_scenes(tmp_path / "blobs", n=8, size=32, seed=1)
    environment = {**os.environ, "HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9",
                   "HTTPS_PROXY": "http://127.0.0.1:9"}  # offline for sure, and no cached weights in ~/.keras
    done = subprocess.run([*CLI, "train", str(data), "--out", str(tmp_path / "out"), "--encoder-weights", "imagenet"],
                          capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 1
    assert "encoder_weights='imagenet'" in done.stderr and "could not be downloaded" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "model").exists()


def test_input_may_be_one_image_or_a_list_of_images(trained, tmp_path):
    data, out, me = trained
    run(["predict", out, data / "images" / "scene2.png", "--out", tmp_path / "one"], cwd=me)
    assert [path.name for path in (tmp_path / "one").iterdir()] == ["scene2.png"]
    listing = tmp_path / "list.txt"
    relative = os.path.relpath(data / "images" / "scene4.png", tmp_path)
    listing.write_text(f"# two images, one relative to this file, one absolute\n{relative}\n"
                       f"{data / 'images' / 'scene5.png'}\n")
    run(["predict", out, listing, "--out", tmp_path / "listed"], cwd=me)
    assert sorted(path.name for path in (tmp_path / "listed").iterdir()) == ["scene4.png", "scene5.png"]


def test_colour_coded_data_read_reduced_is_predicted_in_its_colours_at_each_images_own_size(tmp_path):
    """A CamVid-like dataset (colour labels) with max_size below its images' size: training reads it reduced, the
    model's masks come back at each image's own size in the dataset's colours (never the ignore colour), and
    evaluate still reproduces training's test scores, scored at own size."""
    from published import CAMVID_LABELS, hex_rgb, write_published

    data = write_published(tmp_path / "camvid", "camvid", n=10).root
    description = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**description, "max_size": 32}))  # 36x48 images read as 24x32
    me = user_folder(tmp_path)
    run(["train", data, "--out", tmp_path / "run", "--epochs", "1", "--passes-per-epoch", "1", "--crop", "None",
         "--decoder-filters", "(16, 8, 8, 8, 8)"], cwd=me)
    info = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert info["preprocessing"]["max_size"] == 32 and info["description"]["labels"] == CAMVID_LABELS
    run(["predict", tmp_path / "run", data / "701_StillsRaw_full", "--out", tmp_path / "pred"], cwd=me)
    colours = {tuple(hex_rgb(colour)) for name, colour in CAMVID_LABELS.items() if name != "ignore"}
    masks = sorted((tmp_path / "pred").glob("*.png"))
    assert len(masks) == 10
    for path in masks:
        mask = np.asarray(Image.open(path))
        assert mask.shape == (36, 48, 3) and mask.dtype == np.uint8  # the image's own size, RGB like the dataset's
        assert {tuple(pixel) for pixel in mask.reshape(-1, 3)} <= colours
    run(["evaluate", tmp_path / "run", data, "--out", tmp_path / "ev"], cwd=me)
    trained_metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated["dice"] == trained_metrics["dice"] and evaluated["examples"] == trained_metrics["examples"]
