"""The one owner of the TensorFlow/Keras setup: segmentation_models 1.0.1 needs Keras 2 (tf-keras).

Import this module (or call `import_tensorflow()`) before TensorFlow is first imported anywhere.
"""
import os
import sys

# Must be set before TensorFlow is imported: TF 2.21 otherwise binds tf.keras to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep notebooks free of C++ startup chatter


def import_tensorflow():
    """Return the `tensorflow` module with legacy Keras; refuse a process that imported TF too early."""
    already = "tensorflow" in sys.modules
    import tensorflow as tf

    # the Layer class says which Keras tf.keras is (module names change once segmentation_models is imported)
    if already and not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        raise RuntimeError(
            "TensorFlow was imported before legacy_keras set TF_USE_LEGACY_KERAS=1; "
            "import legacy_keras (or loader/train) before tensorflow"
        )
    # Probe devices now so TensorFlow's start-up chatter (CUDA probing on CPU-only machines) is printed at
    # import, in a notebook's setup cell, rather than inside a later cell whose output nbval compares.
    # Listing physical devices does not fix the logical device configuration.
    tf.config.list_physical_devices()
    return tf
