"""The UNet: `segmentation_models`' Unet on the dataset's channels and classes, for images of any size, and the
`tf.distribute` strategy it is built under."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maskpair.errors import ConfigError
from maskpair.training import losses
from maskpair.training.legacy_keras import import_segmentation_models, import_tensorflow

tf = import_tensorflow()

UNET_MULTIPLE = 32  # a UNet with 5 poolings needs sides divisible by 2**5


@tf.keras.utils.register_keras_serializable(package="segkit")
class PadToMultiple(tf.keras.layers.Layer):
    """Zero-pad height and width at the bottom/right up to the next multiple (a no-op when already divisible)."""

    def __init__(self, multiple: int = UNET_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, images):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        return tf.pad(images, [[0, 0], [0, -height % self.multiple], [0, -width % self.multiple], [0, 0]])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@tf.keras.utils.register_keras_serializable(package="segkit")
class CropToInput(tf.keras.layers.Layer):
    """Crop a padded output back to the height and width of the original input."""

    def call(self, inputs):
        output, original = inputs
        return output[:, : tf.shape(original)[1], : tf.shape(original)[2]]


def make_strategy(name: str = "default", cpu_devices: int = 2):
    """`tf.distribute` strategy by name: "default" (one device: the GPU when there is one, else the CPU), or
    "mirrored" over the local GPUs, else over `cpu_devices` logical CPUs (set before TensorFlow starts its devices).

    With TF_CONFIG in the environment this process is one worker of a cluster (docs/distributed.md): whatever the
    name, MultiWorkerMirroredStrategy, which mirrors over each worker's GPUs (else its CPU). Call this first: the
    strategy sets up collective ops, which TensorFlow allows only before it runs any other op."""
    if name not in ("default", "mirrored"):
        raise ValueError(f'strategy must be "default" or "mirrored", got {name!r}')
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    except RuntimeError:  # devices already initialised: use whatever logical CPUs exist
        pass
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@tf.keras.utils.register_keras_serializable(package="segkit")
class EncoderInput(tf.keras.layers.Layer):
    """Images in [0, 1] as a pretrained encoder expects them: each pixel's channels times 255 through a fixed affine
    map (`encoder_normalisation`) to the encoder's three input channels."""

    def __init__(self, matrix, bias, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.matrix, self.bias = [list(map(float, row)) for row in matrix], list(map(float, bias))

    def call(self, images):
        matrix = tf.constant(self.matrix, images.dtype)  # (3, channels in)
        return tf.tensordot(images * 255.0, matrix, axes=[[3], [1]]) + tf.constant(self.bias, images.dtype)

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix, "bias": self.bias}


def encoder_normalisation(backbone: str, n_channels: int) -> dict:
    """What a pretrained `backbone` expects of its input, as an affine map of 0..255 pixel values: its own
    preprocessing (`segmentation_models.get_preprocessing`: identity for the ResNets, x / 127.5 - 1 for MobileNets,
    BGR minus the ImageNet means for VGG, ...) measured on unit inputs, every one of which is affine; a gray
    image is repeated into the three channels. {"matrix": 3 x channels, "bias": 3, "scale": 255}."""
    preprocess = import_segmentation_models().get_preprocessing(backbone)

    def apply(pixel):
        return np.asarray(preprocess(np.array(pixel, np.float32).reshape(1, 1, 1, 3).copy()), np.float64)[0, 0, 0]

    bias = apply([0, 0, 0])
    matrix = np.stack([apply(np.eye(3)[c]) - bias for c in range(3)], axis=1)
    probe = np.random.default_rng(0).uniform(0, 255, 3)
    if not np.allclose(apply(probe), matrix @ probe + bias, atol=1e-3):
        raise ConfigError(f"the preprocessing of {backbone} is not an affine map of the pixel values; "
                          f"pretrained weights for it are not supported")
    if n_channels == 1:
        matrix = matrix.sum(axis=1, keepdims=True)
    return {"backbone": backbone, "scale": 255, "matrix": matrix.round(8).tolist(), "bias": bias.round(8).tolist()}


def build_encoder(sm, backbone: str, encoder_weights, n_channels: int, n_classes: int, decoder_filters):
    """segmentation_models' Unet, with its encoder's weights: None (from scratch), "imagenet" (downloaded by
    segmentation_models, which needs the network) or the path of a weights file (.h5, layers by name)."""
    if encoder_weights is None:
        return sm.Unet(backbone, encoder_weights=None, input_shape=(None, None, n_channels), classes=n_classes,
                       activation="softmax", decoder_filters=tuple(decoder_filters))
    options = dict(input_shape=(None, None, 3), classes=n_classes, activation="softmax",
                   decoder_filters=tuple(decoder_filters))
    if encoder_weights == "imagenet":
        try:
            return sm.Unet(backbone, encoder_weights="imagenet", **options)
        except Exception as err:  # keras' get_file raises Exception("URL fetch failure ...") and others offline
            raise ConfigError(f"encoder_weights='imagenet': the {backbone} ImageNet weights could not be downloaded "
                              f"({str(err).splitlines()[0][:160]}); on a machine without network, download them "
                              f"elsewhere and give the file's path as encoder_weights") from None
    path = Path(encoder_weights)
    if not path.is_file():
        raise ConfigError(f"encoder_weights: {path}: no such weights file (or use None or 'imagenet')")
    unet = sm.Unet(backbone, encoder_weights=None, **options)
    import h5py

    try:
        with h5py.File(path, "r") as weights:
            stored = {name.decode() if isinstance(name, bytes) else name for name in weights.attrs["layer_names"]}
    except (OSError, KeyError) as err:
        raise ConfigError(f"encoder_weights: {path}: not a Keras weights file ({err})") from None
    if not stored & {layer.name for layer in unet.layers}:
        raise ConfigError(f"encoder_weights: {path}: holds no layer of the {backbone} encoder")
    unet.load_weights(str(path), by_name=True)
    return unet


def build_model(n_channels: int, n_classes: int, backbone: str = "resnet18", decoder_filters=(128, 64, 32, 32, 16),
                learning_rate: float = 1e-3, partial_labels: bool = False, focal_weight: float = 1.0, strategy=None,
                encoder_weights=None):
    """A compiled softmax UNet with the Dice + focal loss of `losses.make_loss`; its encoder from scratch, or with
    pretrained weights (`build_encoder`), then behind an `EncoderInput` layer giving it the input it was trained on.

    Images of any size go in: they are zero-padded to a multiple of 32 inside the model and the output is
    cropped back, so the loss and predictions only ever see real pixels.
    """
    sm = import_segmentation_models()
    foreground = list(range(1, n_classes)) or [0]
    with (strategy or tf.distribute.get_strategy()).scope():
        unet = build_encoder(sm, backbone, encoder_weights, n_channels, n_classes, decoder_filters)
        images = tf.keras.Input((None, None, n_channels), name="image")
        encoder_input = images
        if encoder_weights is not None:
            normalisation = encoder_normalisation(backbone, n_channels)
            encoder_input = EncoderInput(normalisation["matrix"], normalisation["bias"], name="encoder_input")(images)
        probabilities = CropToInput(name="crop_to_input")([unet(PadToMultiple(name="pad_to_32")(encoder_input)),
                                                            images])
        model = tf.keras.Model(images, probabilities, name=f"unet_{backbone}")
        metrics = [sm.metrics.IOUScore(threshold=0.5, class_indexes=foreground)]
        model.compile(tf.keras.optimizers.Adam(learning_rate), losses.make_loss(partial_labels, focal_weight), metrics)
    return model


def load_model(path):
    """A Keras model file saved by training (the model folder's model.keras), for prediction (not compiled)."""
    return tf.keras.models.load_model(str(path), compile=False)
