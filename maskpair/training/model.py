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


@tf.keras.utils.register_keras_serializable(package="segkit")
class UNet(tf.keras.Model):
    """A functional Keras model whose call first brings images into [0, 1] by their dtype (`images_to_unit_range`).

    Before its graph, not as its first layer: a functional model casts its input to the dtype of its `Input`
    (float32), after which a uint8 image in 0..255 could not be told from a float one in [0, 1]."""

    def call(self, inputs, training=None, mask=None):
        return super().call(images_to_unit_range(inputs), training=training, mask=mask)


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

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "autocast": False})  # the input is only measured, never cast

    def call(self, inputs):
        output, original = inputs
        return output[:, : tf.shape(original)[1], : tf.shape(original)[2]]


@tf.keras.utils.register_keras_serializable(package="segkit")
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


def segmentation_unet(backbone: str, n_channels: int, n_classes: int, decoder_filters, xla: bool = False):
    """segmentation_models' Unet, untrained, giving logits; with `xla` its decoder upsamples by RepeatUpSampling2D
    (same weights, same forward values; only a jit-compiled step needs it, the default keeps the original op)."""
    sm = import_segmentation_models()
    settings = {"encoder_weights": None, "input_shape": (None, None, n_channels), "classes": n_classes,
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
                jit_compile: bool = False, policy: str = "float32"):
    """A compiled softmax `UNet` (no pretrained weights) with the Dice + focal loss of `losses.make_loss`.

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
            unet = segmentation_unet(backbone, n_channels, n_classes, decoder_filters, xla=jit_compile)
            images = tf.keras.Input((None, None, n_channels), name="image")  # float32 in [0, 1]: see UNet
            logits = CropToInput(name="crop_to_input")([unet(PadToMultiple(name="pad_to_32")(images)), images])
            probabilities = tf.keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
            model = UNet(images, probabilities, name=f"unet_{backbone}")
            model.compile(tf.keras.optimizers.Adam(learning_rate), losses.make_loss(partial_labels, focal_weight),
                          [losses.make_iou_metric(n_classes)], jit_compile=jit_compile)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    return model


def save_model(model, output_dir) -> Path:
    """Save the architecture and weights (no optimizer) as output_dir/model.h5."""
    path = Path(output_dir) / "model.h5"
    model.save(str(path), include_optimizer=False)
    return path


def load_model(path):
    """A model saved by `save_model`, for prediction (not compiled): it takes images as `UNet` says.

    The file names the model's class by its bare name, "UNet" (Keras writes a model's `__class__.__name__`, not
    the registered "segkit>UNet" it writes for layers), hence the custom object."""
    return tf.keras.models.load_model(str(path), custom_objects={"UNet": UNet}, compile=False)
