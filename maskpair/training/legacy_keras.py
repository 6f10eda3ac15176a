"""The one owner of the TensorFlow/Keras setup: segmentation_models 1.0.1 needs Keras 2 (tf-keras), and
TensorFlow's start-up should not print anything a user could read as an error.

Every module that uses TensorFlow gets it from `import_tensorflow()` (and segmentation_models from
`import_segmentation_models()`), so no caller has to import anything first.
"""
import contextlib
import io
import os
import sys
import tempfile

# Must be set before TensorFlow first resolves `tf.keras`: TF 2.21 otherwise binds it to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's INFO and WARNING lines from C++


@contextlib.contextmanager
def quiet_native_stderr():
    """Hold back what C++ libraries write straight to file descriptor 2 while the block runs.

    On a machine without a GPU, TensorFlow's start-up prints "failed call to cuInit: ... CUDA error" and
    "Could not find cuda drivers" through absl before its log level applies; users read that as a failure.
    If the block raises, the held-back text is written out after all, so a real error is never hidden.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """Return the `tensorflow` module with legacy Keras; refuse a process that bound Keras 3 to tf.keras first."""
    already = "tensorflow" in sys.modules
    with quiet_native_stderr():
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # Python-side deprecation chatter of tf_keras
        # device probing is where the CUDA lines come from: do it now, held back, not in a later cell
        tf.config.list_physical_devices()
    if already and not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        raise RuntimeError(
            "TensorFlow was imported with Keras 3 before legacy_keras set TF_USE_LEGACY_KERAS=1; "
            "segmentation_models needs Keras 2: import the project's modules before using tf.keras, "
            "or set TF_USE_LEGACY_KERAS=1 in the environment"
        )
    return tf


def import_segmentation_models():
    """Return `segmentation_models` on tf.keras, without the banner it prints on import."""
    import_tensorflow()
    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm
    return sm
