"""The UNet: `segmentation_models`' Unet on the dataset's channels and classes, for images of any size, and the
`tf.distribute` strategy it is built under.

What the model takes: images (B, H, W, C) of any height and width, as the loader stores them: uint8 (0..255) or
uint16 (0..65535) pixels, which it divides by their dtype's largest value on the device (a multiplication by
float32(1/255) for uint8, exactly as `reading.image_to_float`), or float32 already in [0, 1] (augmented batches,
16-bit and float data as `reading` gives them), taken as they are: `tf.image.convert_image_dtype`'s convention.
It gives float32 softmax probabilities (B, H, W, K), also under mixed precision, and trains on uint8 label maps
(B, H, W), 255 = no target (`losses`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maskpair.errors import ConfigError
from maskpair.training import losses
from maskpair.training.legacy_keras import import_segmentation_models, import_tensorflow

tf = import_tensorflow()

UNET_MULTIPLE = 32  # a UNet with 5 poolings needs sides divisible by 2**5
# TrainConfig.mixed_precision -> Keras dtype policy (float32 variables either way; mixed_float16: compile adds loss
# scaling, bfloat16 has float32's range and needs none)
PRECISION_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16", "off": "float32"}


def images_to_unit_range(images):
    """Images as stored -> float32 in [0, 1]: unsigned integers times float32(1 / their dtype's largest value),
    floating-point images as they are (cast to float32)."""
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer:
        return tf.cast(images, tf.float32) * tf.constant(1 / images.dtype.max, tf.float32)
    return tf.cast(images, tf.float32)


@tf.keras.utils.register_keras_serializable(package="maskpair")
class UNet(tf.keras.Model):
    """A functional Keras model whose call first brings images into [0, 1] by their dtype (`images_to_unit_range`).

    Before its graph, not as its first layer: a functional model casts its input to the dtype of its `Input`
    (float32), after which a uint8 image in 0..255 could not be told from a float one in [0, 1]."""

    def call(self, inputs, training=None, mask=None):
        return super().call(images_to_unit_range(inputs), training=training, mask=mask)


@tf.keras.utils.register_keras_serializable(package="maskpair")
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


@tf.keras.utils.register_keras_serializable(package="maskpair")
class CropToInput(tf.keras.layers.Layer):
    """Crop a padded output back to the height and width of the original input."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "autocast": False})  # the input is only measured, never cast

    def call(self, inputs):
        output, original = inputs
        return output[:, : tf.shape(original)[1], : tf.shape(original)[2]]


@tf.keras.utils.register_keras_serializable(package="maskpair")
class RepeatUpSampling2D(tf.keras.layers.Layer):
    """Nearest-neighbour upsampling by a whole factor as a reshape and a broadcast: the same values as
    `UpSampling2D`, but XLA compiles its gradient (a sum over the copies); XLA has no ResizeNearestNeighborGrad,
    on CPUs nor GPUs (tensorflow/tensorflow#60203), so segmentation_models' decoder cannot be jit-compiled as it is."""

    def __init__(self, size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images):
        batch, height, width, channels = tf.unstack(tf.shape(images))
        grid = tf.reshape(images, [batch, height, 1, width, 1, channels])
        grid = tf.broadcast_to(grid, [batch, height, self.size, width, self.size, channels])
        return tf.reshape(grid, [batch, height * self.size, width * self.size, channels])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


class _XlaLayers:
    """tf.keras.layers, with UpSampling2D replaced by RepeatUpSampling2D, for segmentation_models' builders."""

    def UpSampling2D(self, size=2, **kwargs):  # the name segmentation_models calls
        return RepeatUpSampling2D(size, **kwargs)

    def __getattr__(self, name):
        return getattr(tf.keras.layers, name)


def segmentation_unet(backbone: str, n_channels: int, n_classes: int, decoder_filters, xla: bool = False,
                      encoder_weights=None):
    """segmentation_models' Unet giving logits, its encoder untrained or with segmentation_models' "imagenet"
    weights; with `xla` its decoder upsamples by RepeatUpSampling2D (same weights, same forward values; only a
    jit-compiled step needs it, the default keeps the original op)."""
    sm = import_segmentation_models()
    settings = {"encoder_weights": encoder_weights, "input_shape": (None, None, n_channels), "classes": n_classes,
                "activation": "linear", "decoder_filters": tuple(decoder_filters)}
    if not xla:
        return sm.Unet(backbone, **settings)
    # the builder that sm.Unet wraps (the wrapper always passes Keras' own layers module)
    return sm.models.unet.Unet(backbone, **settings, backend=tf.keras.backend, layers=_XlaLayers(),
                               models=tf.keras.models, utils=tf.keras.utils)


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


@tf.keras.utils.register_keras_serializable(package="maskpair")
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


def build_encoder(backbone: str, encoder_weights, n_channels: int, n_classes: int, decoder_filters,
                  xla: bool = False):
    """`segmentation_unet` with its encoder's weights: None (from scratch, on the data's channels), "imagenet"
    (downloaded by segmentation_models, which needs the network) or the path of a weights file (.h5, layers by
    name); pretrained encoders take three channels (`EncoderInput`)."""
    if encoder_weights is None:
        return segmentation_unet(backbone, n_channels, n_classes, decoder_filters, xla)
    if encoder_weights == "imagenet":
        try:
            return segmentation_unet(backbone, 3, n_classes, decoder_filters, xla, encoder_weights="imagenet")
        except Exception as err:  # keras' get_file raises Exception("URL fetch failure ...") and others offline
            raise ConfigError(f"encoder_weights='imagenet': the {backbone} ImageNet weights could not be downloaded "
                              f"({str(err).splitlines()[0][:160]}); on a machine without network, download them "
                              f"elsewhere and give the file's path as encoder_weights") from None
    path = Path(encoder_weights)
    if not path.is_file():
        raise ConfigError(f"encoder_weights: {path}: no such weights file (or use None or 'imagenet')")
    unet = segmentation_unet(backbone, 3, n_classes, decoder_filters, xla)
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


def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU (it then places the model there)."""
    return bool(tf.config.list_physical_devices("GPU"))


def precision_policy(mixed_precision: str) -> str:
    """The Keras dtype policy of a `TrainConfig.mixed_precision` setting: "auto" is mixed_float16 with a GPU (its
    tensor cores multiply float16 several times faster than float32) and float32 on a CPU, whose float16
    convolutions are slower than float32 ones (bench/README.md); "float16", "bfloat16" and "off" force it."""
    if mixed_precision == "auto":
        return PRECISION_POLICIES["float16" if gpu_present() else "off"]
    if mixed_precision not in PRECISION_POLICIES:
        raise ValueError(f"mixed_precision must be \"auto\" or one of {', '.join(map(repr, PRECISION_POLICIES))}, "
                         f"got {mixed_precision!r}")
    return PRECISION_POLICIES[mixed_precision]


def build_model(n_channels: int, n_classes: int, backbone: str = "resnet18", decoder_filters=(128, 64, 32, 32, 16),
                learning_rate: float = 1e-3, partial_labels: bool = False, focal_weight: float = 1.0, strategy=None,
                jit_compile: bool = False, policy: str = "float32", encoder_weights=None):
    """A compiled softmax `UNet` with the Dice + focal loss of `losses.make_loss`; its encoder from scratch, or with
    pretrained weights (`build_encoder`) behind an `EncoderInput` layer giving it the input it was trained on.

    Images of any size and stored dtype go in (see the module's docstring): they are zero-padded to a multiple of
    32 inside the model and the output is cropped back, so the loss and predictions only ever see real pixels.
    Targets are uint8 label maps. jit_compile: the train, test and predict steps compiled by XLA; policy:
    "float32", "mixed_float16" (compile then adds loss scaling) or "mixed_bfloat16" (`precision_policy`).
    """
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)  # layers take the policy when they are made
    try:
        with (strategy or tf.distribute.get_strategy()).scope():
            # logits out of segmentation_models' Unet, the softmax in float32 here: under mixed precision a float16
            # softmax would round small probabilities, whose logarithm the focal loss takes
            unet = build_encoder(backbone, encoder_weights, n_channels, n_classes, decoder_filters, jit_compile)
            images = tf.keras.Input((None, None, n_channels), name="image")  # float32 in [0, 1]: see UNet
            encoder_input = images
            if encoder_weights is not None:  # the input the pretrained encoder was trained on
                normalisation = encoder_normalisation(backbone, n_channels)
                encoder_input = EncoderInput(normalisation["matrix"], normalisation["bias"],
                                             name="encoder_input")(images)
            logits = CropToInput(name="crop_to_input")([unet(PadToMultiple(name="pad_to_32")(encoder_input)),
                                                        images])
            probabilities = tf.keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
            model = UNet(images, probabilities, name=f"unet_{backbone}")
            model.compile(tf.keras.optimizers.Adam(learning_rate), losses.make_loss(partial_labels, focal_weight),
                          [losses.make_iou_metric(n_classes)], jit_compile=jit_compile)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    return model


def load_model(path):
    """A Keras model file saved by training (the model folder's model.keras), for prediction (not compiled): it
    takes images as `UNet` says. The custom object: Keras may name the model's class by its bare name, "UNet"."""
    return tf.keras.models.load_model(str(path), custom_objects={"UNet": UNet}, compile=False)
