"""The UNet: `segmentation_models`' Unet on the dataset's channels and classes, for images of any size, and the
`tf.distribute` strategy it is built under."""
from __future__ import annotations

import os

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


def build_model(n_channels: int, n_classes: int, backbone: str = "resnet18", decoder_filters=(128, 64, 32, 32, 16),
                learning_rate: float = 1e-3, partial_labels: bool = False, focal_weight: float = 1.0, strategy=None):
    """A compiled softmax UNet (no pretrained weights) with the Dice + focal loss of `losses.make_loss`.

    Images of any size go in: they are zero-padded to a multiple of 32 inside the model and the output is
    cropped back, so the loss and predictions only ever see real pixels.
    """
    sm = import_segmentation_models()
    foreground = list(range(1, n_classes)) or [0]
    with (strategy or tf.distribute.get_strategy()).scope():
        unet = sm.Unet(backbone, encoder_weights=None, input_shape=(None, None, n_channels), classes=n_classes,
                       activation="softmax", decoder_filters=tuple(decoder_filters))
        images = tf.keras.Input((None, None, n_channels), name="image")
        probabilities = CropToInput(name="crop_to_input")([unet(PadToMultiple(name="pad_to_32")(images)), images])
        model = tf.keras.Model(images, probabilities, name=f"unet_{backbone}")
        metrics = [sm.metrics.IOUScore(threshold=0.5, class_indexes=foreground)]
        model.compile(tf.keras.optimizers.Adam(learning_rate), losses.make_loss(partial_labels, focal_weight), metrics)
    return model


def load_model(path):
    """A Keras model file saved by training (the model folder's model.keras), for prediction (not compiled)."""
    return tf.keras.models.load_model(str(path), compile=False)
