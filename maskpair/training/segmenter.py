"""A trained model, ready to segment images it has never seen: `Segmenter`, and the self-contained model folder it
is saved as and loaded from.

    segmenter = Segmenter.load("outputs/train")          # the training's output folder, or its model/ folder
    labels = segmenter.predict(image)                    # uint8 (H, W) class indices at the image's own size
    mask = segmenter.encode(labels)                      # the dataset's own values (or colours)

The model folder (`DIR/model/` of `maskpair train --out DIR`) holds
    model.keras     the Keras model (loads with `maskpair.training.model.load_model`)
    saved_model/    a TensorFlow SavedModel: `serving_default(images)` takes a batch of images of any size as they
                    are read (dtype `model.json` "input"/"dtype") and returns "probabilities" (B, H, W, K) float32
                    and "labels" (B, H, W) uint8, mirror-averaged like the Segmenter; loads with TensorFlow alone
    model.json      everything needed to use them without the data: the dataset description (classes, values or
                    colours, ignore, channels), the input and preprocessing, the pad multiple, the post-processing
                    chosen on val, the splits, the project's version and the training configuration

Every prediction of the project goes through `Segmenter.predict_many` (training's test scores, `maskpair evaluate`,
`maskpair predict`), so they agree to the bit: same batching, same mirror averaging, same post-processing.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from maskpair import __version__
from maskpair.data.description import DatasetDescription
from maskpair.data.reading import area_resize, image_to_float, read_image, reduced_size
from maskpair.errors import DataError
from maskpair.jsonio import write_json
from maskpair.training import model as unet
from maskpair.training.predict import keep_largest_structure, labels_from_probabilities
from maskpair.training.tiling import sliding_window

tf = unet.tf

MODEL_FOLDER = "model"
INFO_FILE = "model.json"
KERAS_FILE = "model.keras"  # the Keras v3 zip format of tf-keras (HDF5 is legacy and warns on every save)
SAVED_MODEL = "saved_model"
FORMAT = 1
BATCH_SIZE = 4  # images of one size predicted together, at most ...
BATCH_PIXELS = 4 * 1024 * 1024  # ... and at most this many pixels in one forward pass (the default UNet holds about
                                # half a kilobyte per pixel while it predicts: ~2 GB; bench/README.md)
DEFAULT_TILE = 2048  # a side longer than this is predicted in overlapping windows of this size


class Segmenter:
    """A Keras UNet with what is needed to use it: the dataset description, the input it takes, mirror averaging
    and the post-processing chosen on val (`info`, the contents of model.json)."""

    def __init__(self, model, info: dict):
        self.model, self.info = model, info
        self.description = DatasetDescription(**info["description"])
        self.classes = tuple(info["classes"])
        self.n_classes, self.n_channels = len(self.classes), self.description.n_channels
        self.flip_average = bool(info["flip_average"])
        self.largest_structure = info["postprocessing"]["largest_structure"]

    # -- making and loading one

    @classmethod
    def from_training(cls, model, data, config, largest: dict | None = None) -> "Segmenter":
        """The Segmenter of a model just trained on `data` (a DataLoader) with `config` (a TrainConfig); largest:
        `train.choose_largest_structure`'s decision (None: not decided yet, not applied)."""
        info = {
            "format": FORMAT, "maskpair_version": __version__, "created": datetime.now().astimezone().isoformat(
                timespec="seconds"),
            "description": dataclasses.asdict(data.description), "classes": list(data.labels),
            "input": {"dtype": "uint8" if data.store.eight_bit else "float32", "channels": data.n_channels,
                      "range": "0..255, scaled by 1/255 inside" if data.store.eight_bit else "0..1"},
            "preprocessing": {"max_size": getattr(data.description, "max_size", None),
                              "normalisation": None if config.encoder_weights is None else {
                                  "encoder_weights": config.encoder_weights,
                                  **unet.encoder_normalisation(config.backbone, data.n_channels)}},
            "pad_multiple": unet.UNET_MULTIPLE, "flip_average": config.flip_average,
            "postprocessing": {"largest_structure": {"applied": False, "reason": "not decided"} if largest is None
                               else largest},
            "splits": {split: list(names) for split, names in data.splits.items()},
            "data_dir": str(Path(data.data_dir).resolve()), "training": config.to_dict(),
            "files": {"keras": KERAS_FILE, "saved_model": SAVED_MODEL},
        }
        return cls(model, info)

    @classmethod
    def load(cls, path) -> "Segmenter":
        """The Segmenter saved in `path`: a model folder, or a training output folder holding one."""
        folder = model_folder(path)
        info = read_info(folder)
        return cls(unet.load_model(folder / info["files"]["keras"]), info)

    def save(self, output_dir) -> Path:
        """Write the model folder into output_dir/model/ (replacing one there): Keras file, SavedModel, model.json."""
        folder = Path(output_dir) / MODEL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        # the same layers in a model without compile state: no optimizer variables in the file
        uncompiled = tf.keras.Model(self.model.inputs, self.model.outputs, name=self.model.name)
        uncompiled.save(str(folder / KERAS_FILE))
        export_saved_model(self.model, self.info, folder / SAVED_MODEL)
        write_json(folder / INFO_FILE, self.info, indent=2)  # last: a folder with model.json is complete
        return folder

    # -- predicting

    def read(self, path) -> np.ndarray:
        """An image file as this model takes it (channels checked; DataError naming the file otherwise)."""
        return read_image(Path(path), self.n_channels)

    def _forward(self, images: np.ndarray) -> np.ndarray:
        """Softmax (B, H, W, K) float32 of a batch of same-size images as read (uint8 or float32 in [0, 1]),
        mirror-averaged when the model was trained so."""
        batch = image_to_float(images)
        # predict_on_batch, not predict: the batch is one already, and Keras' predict slices arrays in a parallel
        # tf.data map that op determinism rewrites, printing an "E0000 ... NodeDef" line
        probabilities = np.asarray(self.model.predict_on_batch(batch))
        if self.flip_average:
            mirrored = np.asarray(self.model.predict_on_batch(batch[:, :, ::-1]))
            probabilities = (probabilities + mirrored[:, :, ::-1]) / 2
        return probabilities.astype(np.float32)

    def probabilities_many(self, images, tile: int | None = None):
        """Yield float32 (H, W, K) softmax maps of `images` (an iterable of arrays (H, W[, C]) as read), in order,
        each at its own size. With the description's `max_size`, an image whose longer side exceeds it is
        predicted reduced (area filter, as training read it) and its map enlarged back (bilinear). Consecutive
        images of one size go through the model together (BATCH_SIZE); an image with a side longer than `tile`
        (default DEFAULT_TILE) is predicted in overlapping windows."""
        tile, max_size = tile or DEFAULT_TILE, self.info["preprocessing"]["max_size"]
        group: list[np.ndarray] = []
        own_sizes: list[tuple[int, int]] = []  # of every image handed on and not yet yielded, in order

        def at_own_size(maps):
            for probabilities in maps:
                own = own_sizes.pop(0)
                if probabilities.shape[:2] != own:
                    probabilities = tf.image.resize(probabilities, own, method="bilinear").numpy()
                yield probabilities

        for image in images:
            image = image if image.ndim == 3 else image[..., None]
            own_sizes.append(image.shape[:2])
            reduced = reduced_size(image.shape[:2], max_size)
            if reduced != image.shape[:2]:
                image = area_resize(image, reduced)
            if group and (image.shape != group[0].shape or len(group) == batch_size(image.shape)):
                yield from at_own_size(self._forward(np.stack(group)))
                group = []
            if max(image.shape[:2]) > tile:
                window = (min(tile, image.shape[0]), min(tile, image.shape[1]))
                yield from at_own_size([sliding_window(image, tile, self._forward, self.n_classes,
                                                       batch_size=batch_size(window))])
            else:
                group.append(image)
        if group:
            yield from at_own_size(self._forward(np.stack(group)))

    def predict_many(self, images, tile: int | None = None):
        """Yield uint8 (H, W) class-index maps of `images` (see `probabilities_many`), post-processed as chosen."""
        for probabilities in self.probabilities_many(images, tile):
            yield self.postprocess(labels_from_probabilities(probabilities))

    def probabilities(self, image, tile: int | None = None) -> np.ndarray:
        """float32 (H, W, K) softmax of one image (an array as read, or a file path) at its own size."""
        image = self.read(image) if isinstance(image, (str, Path)) else np.asarray(image)
        return next(self.probabilities_many([image], tile))

    def predict(self, image, tile: int | None = None) -> np.ndarray:
        """uint8 (H, W) class indices of one image (an array as read, or a file path), post-processed as chosen
        on val: every pixel gets a class, none is ignore."""
        return self.postprocess(labels_from_probabilities(self.probabilities(image, tile)))

    def postprocess(self, labels: np.ndarray) -> np.ndarray:
        """The label map with the post-processing chosen on val (keep the largest structure) applied, if it was."""
        if not self.largest_structure.get("applied"):
            return labels
        return keep_largest_structure(labels, self.largest_structure.get("bridge_px", 10))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> the dataset's own mask values (a class of several values as its first; colours (H, W, 3)
        for colour-coded datasets), as the dataset's masks store them."""
        return self.description.encode(labels)


def batch_size(shape) -> int:
    """How many images of (H, W[, C]) `shape` go through the model at once: BATCH_SIZE, fewer for large ones."""
    return max(1, min(BATCH_SIZE, BATCH_PIXELS // (shape[0] * shape[1])))


def model_folder(path) -> Path:
    """The model folder at `path`: path itself when it holds model.json, else path/model (a training output)."""
    path = Path(path)
    for folder in (path, path / MODEL_FOLDER):
        if (folder / INFO_FILE).is_file():
            return folder
    raise DataError(f"{path}: no {INFO_FILE} here or in {path / MODEL_FOLDER} (a model folder is written by "
                    f"`maskpair train --out DIR` into DIR/{MODEL_FOLDER}/)")


def read_info(folder: Path) -> dict:
    """model.json of a model folder, checked for its format."""
    path = Path(folder) / INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable model description ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path}: model folder format {info.get('format') if isinstance(info, dict) else '?'}, "
                        f"this version of maskpair reads format {FORMAT}")
    return info


def export_saved_model(model, info: dict, path: Path) -> Path:
    """A TensorFlow SavedModel whose `serving_default(images)` takes (B, H, W, C) images of any size as they are
    read (`info["input"]["dtype"]`) and returns mirror-averaged "probabilities" and argmax "labels" (uint8), before
    any post-processing (model.json says whether keeping the largest structure was chosen)."""
    dtype = tf.as_dtype(info["input"]["dtype"])
    flip_average = bool(info["flip_average"])

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, info["input"]["channels"]), dtype,
                                                    name="images")])
        def serve(self, images):
            # the same float32 image as `image_to_float`: a multiplication by float32(1/255), not a division
            batch = tf.cast(images, tf.float32) * tf.constant(1 / 255, tf.float32) if dtype == tf.uint8 \
                else tf.cast(images, tf.float32)
            probabilities = self.model(batch, training=False)
            if flip_average:
                mirrored = self.model(tf.reverse(batch, axis=[2]), training=False)
                probabilities = (probabilities + tf.reverse(mirrored, axis=[2])) / 2
            return {"probabilities": probabilities, "labels": tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)}

    serving = Serving()
    tf.saved_model.save(serving, str(path), signatures={"serving_default": serving.serve})
    return path
