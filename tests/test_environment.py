"""The environment: requirements.txt pinned and the single source, environment.yml in step, legacy Keras wired."""
import re
import subprocess
import sys
from importlib import metadata

import yaml

from conftest import PROJECT_DIR

REQUIRED = {"tensorflow-cpu": "2.21.0", "tf-keras": "2.21.0", "segmentation-models": "1.0.1"}
DIRECT = ["jupyterlab", "ipywidgets", "scikit-image", "matplotlib", "nbval", "papermill", "pooch", "pytest",
          "hypothesis", "playwright"]


def pinned_requirements():
    pins = {}
    for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_pinned_and_complete():
    pins = pinned_requirements()
    for name, version in REQUIRED.items():
        assert pins.get(name) == version, name
    for name in DIRECT:
        assert name in pins, name


def test_environment_yml_installs_requirements_txt():
    env = yaml.safe_load((PROJECT_DIR / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_block = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_block == ["-r requirements.txt"]  # versions live in one place only


def test_installed_versions_match_the_pins():
    wrong = {}
    for name, version in pinned_requirements().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"pinned vs installed: {wrong}"


def test_segmentation_models_runs_on_legacy_keras_in_a_fresh_process():
    code = ("import sys; sys.path.insert(0, %r); import legacy_keras; tf = legacy_keras.import_tensorflow(); "
            "import segmentation_models as sm; "
            "m = sm.Unet('resnet18', encoder_weights=None, input_shape=(64, 64, 1), classes=3, activation='softmax'); "
            "print(tf.keras.__name__, m.output_shape)" % str(PROJECT_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]  # segmentation_models prints a banner first
    assert last.startswith("tf_keras") and "(None, 64, 64, 3)" in last


def test_legacy_keras_refuses_a_process_that_bound_keras_3_first():
    code = ("import sys; sys.path.insert(0, %r); import tensorflow as tf; tf.keras.layers; import legacy_keras\n"
            "try:\n    legacy_keras.import_tensorflow()\nexcept RuntimeError as err:\n    print('refused:', err)"
            % str(PROJECT_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin"})  # TF_USE_LEGACY_KERAS unset, as for a new user
    assert "refused: TensorFlow was imported before legacy_keras" in out.stdout, out.stderr[-2000:]
