"""The environment: requirements.txt pinned and the single source, environment.yml in step, legacy Keras wired."""
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml
from conftest import PROJECT_DIR

REQUIRED = {"tensorflow-cpu": "2.21.0", "tf-keras": "2.21.0", "segmentation-models": "1.0.1"}
DIRECT = ["jupyterlab", "ipywidgets", "anywidget", "cleanlab", "scikit-image", "matplotlib", "nbval", "papermill", "pooch", "pytest",
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
    assert pip_block == ["-r requirements.txt", "-e ."]  # versions live in one place only; the project editable


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
    # from another folder: the project is installed, no sys.path needed; nothing imported first by hand
    code = ("from maskpair.training import model; tf = model.tf; "
            "m = model.build_model(n_channels=3, n_classes=4); "
            "print(tf.keras.layers.Layer.__module__.split('.')[0], m.output_shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "tf_keras (None, None, None, 4)"  # no banner, nothing else
    # TensorFlow's start-up lines on a machine without a GPU (cuInit, cuda drivers) are held back
    assert "cuda" not in out.stderr.lower() and "oneDNN" not in out.stderr, out.stderr


def test_legacy_keras_refuses_a_process_that_bound_keras_3_first():
    code = ("import tensorflow as tf; tf.keras.layers; from maskpair.training import legacy_keras\n"
            "try:\n    legacy_keras.import_tensorflow()\nexcept RuntimeError as err:\n    print('refused:', err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin"})  # TF_USE_LEGACY_KERAS unset, as for a new user
    assert "refused: TensorFlow was imported with Keras 3 before legacy_keras" in out.stdout, out.stderr[-2000:]


def test_one_package_and_loader_are_installed_and_nothing_edits_sys_path():
    """Only `maskpair` and the thin `loader.py` are installed: a user's own config.py, model.py, ... shadows nothing."""
    setuptools = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["py-modules"] == ["loader"] and setuptools["packages"]["find"]["include"] == ["maskpair*"]
    assert {path.stem for path in PROJECT_DIR.glob("*.py")} == {"loader"}
    for path in [*PROJECT_DIR.glob("*.py"), *(PROJECT_DIR / "maskpair").rglob("*.py"), *(PROJECT_DIR / "tests").glob("*.py"),
                 *(PROJECT_DIR / "notebooks").glob("*.ipynb")]:
        assert "sys.path" + ".insert" not in path.read_text(), path  # (spelled in two parts so this file passes)
