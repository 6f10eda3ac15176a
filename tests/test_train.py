"""Short real training runs: the fit loop, the model on any size and channels, distribution, reproducibility."""
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import CLI
from synthetic import write_dataset, write_layout

from maskpair.data.files import pair_files
from maskpair.data.loader import DataLoader
from maskpair.data.splits import SET_ASIDE
from maskpair.training import fit, predict, train
from maskpair.training import model as unet
from maskpair.training.config import TrainConfig

tf = unet.tf
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tiny"), [str(i) for i in range(20)], shape=(32, 32))


def test_fit_keeps_the_best_checkpoint_and_times_every_step(tiny_data, tmp_path):
    fit.seed_everything(0)
    data = DataLoader(tiny_data, batch_size=2, seed=0, augment=True)
    model = unet.build_model(data.n_channels, data.n_classes)
    report = fit.fit_with_checkpoint(model, data, tmp_path, epochs=2, patience=5, lr_patience=5)
    assert (tmp_path / "checkpoints" / "best.weights.index").is_file()
    assert report["epochs_run"] == 2 and report["best_epoch"] in (1, 2)
    assert len(report["step_seconds"]) == len(report["step_starts"]) == 2 * data.steps_per_epoch("train")
    ready = report["batch_ready_times"]  # every step's batch came from the loader, in order
    assert len(ready) >= len(report["step_starts"]) and ready == sorted(ready)
    assert 0.0 <= fit.input_wait_share(report) < 1.0
    model.save(str(tmp_path / "model.keras"))
    reloaded = unet.load_model(tmp_path / "model.keras")
    image = data.get_image(data.splits["test"][0])[None]
    np.testing.assert_allclose(reloaded.predict(image, verbose=0), model.predict(image, verbose=0), atol=1e-5)


def test_input_wait_share_counts_only_batches_not_ready_when_their_step_began():
    report = {"step_starts": [0.0, 10.0, 20.0, 30.0, 40.0], "step_seconds": [10.0] * 5,
              "batch_ready_times": [5.0, 1.0, 19.0, 32.0, 40.5]}  # step 3 waits 2 s, step 4 0.5 s
    assert fit.input_wait_share(report, warmup=2) == pytest.approx(2.5 / 30)
    assert fit.input_wait_share({**report, "batch_ready_times": []}) == 0.0


def test_a_loader_slower_than_the_step_shows_as_waiting(tiny_data, tmp_path):
    import time

    data = DataLoader(tiny_data, batch_size=2, seed=0, augment=True)  # augmented: batches from batch_arrays
    make_batch = data.batch_arrays

    def slow_batch(*args, **kwargs):  # 3 s a batch, made in a thread per core: far more than a 32 x 32 step
        time.sleep(3.0)
        return make_batch(*args, **kwargs)

    def waiting_share():
        model = unet.build_model(data.n_channels, data.n_classes)
        return fit.input_wait_share(fit.fit_with_checkpoint(model, data, tmp_path, epochs=2, patience=5, lr_patience=5))

    prompt = waiting_share()
    data.batch_arrays = slow_batch
    slow = waiting_share()
    assert slow > 0.2 and prompt < 0.1, (slow, prompt)


def test_model_takes_any_size_channels_and_classes():
    model = unet.build_model(n_channels=3, n_classes=5)
    images = np.random.default_rng(0).random((2, 50, 70, 3), dtype=np.float32)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 50, 70, 5)
    # predict.iter_probabilities calls predict_on_batch on chunks of one batch: the same maps, to the bit
    np.testing.assert_array_equal(np.asarray(model.predict_on_batch(images)), probabilities)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    labels = np.zeros((2, 40, 56), np.uint8)
    labels[:, 30:] = 255  # padding rows: no target
    assert np.all(np.isfinite(model.train_on_batch(np.zeros((2, 40, 56, 3), np.uint8), labels)))


def test_model_takes_images_as_stored_and_scales_them_itself():
    """uint8 and uint16 pixels are divided by their dtype's largest value inside the model, float images are taken
    as they are: the same 8-bit image gives the same probabilities in every form, as does a model reloaded."""
    model = unet.build_model(n_channels=1, n_classes=3)
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 1), dtype=np.uint8)
    as_floats = pixels * np.float32(1 / 255)  # reading.image_to_float
    from_bytes = np.asarray(model.predict_on_batch(pixels))
    np.testing.assert_array_equal(from_bytes, np.asarray(model.predict_on_batch(as_floats)))
    wide = pixels.astype(np.uint16) * 257  # the same values as 16-bit pixels: v * 257 / 65535 = v / 255
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(wide)), from_bytes, atol=1e-5)
    assert not np.allclose(np.asarray(model.predict_on_batch(pixels.astype(np.float32))), from_bytes, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(unet.images_to_unit_range(pixels)), as_floats)


MIRRORED_SCRIPT = textwrap.dedent("""
    from maskpair import DataLoader
    from maskpair.training import fit, model
    strategy = model.make_strategy("mirrored", cpu_devices=2)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    data = DataLoader({data!r}, batch_size=4, seed=0)
    unet = model.build_model(data.n_channels, data.n_classes, strategy=strategy)
    report = fit.fit_with_checkpoint(unet, data, {out!r}, epochs=2, patience=5, lr_patience=5)
    losses = report["history"]["loss"]
    assert all(loss == loss and loss > 0 for loss in losses) and losses[1] != losses[0], losses
    print("replicas", strategy.num_replicas_in_sync, "losses", losses)
""")


def test_mirrored_strategy_trains_on_two_logical_cpus(tiny_data, tmp_path):
    # a fresh process: logical devices can only be configured before TensorFlow initialises its devices
    script = MIRRORED_SCRIPT.format(data=str(tiny_data), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2 losses" in result.stdout


def test_examples_set_aside_by_audit_flags_leave_train_only():
    splits = {"train": ["1", "2", "3", "4"], "val": ["5", "6"], "test": ["7", "8"]}
    kept = train.set_aside(splits, ["1", "4", "5", "9"])
    assert kept == {"train": ["2", "3"], "val": ["5", "6"], "test": ["7", "8"], SET_ASIDE: ["1", "4"]}
    assert splits["train"] == ["1", "2", "3", "4"]  # the caller's splits are not changed
    with pytest.raises(ValueError, match="flag codes must be a list"):
        train.flagged_by_audit("unused", "empty_mask")


def test_run_trains_evaluates_and_writes_everything_by_class_name(tiny_data, tmp_path):
    config = TrainConfig(epochs=2, crop=None, passes_per_epoch=1)
    metrics = train.run(tiny_data, tmp_path, config)
    written = json.loads((tmp_path / "metrics.json").read_text())
    classes = list(DataLoader(tiny_data).labels)
    assert list(written["dice"]) == classes and written["config"]["epochs"] == 2
    assert written["dataset"]["classes"] == classes and written["mean_dice"] == pytest.approx(metrics["mean_dice"])
    test_names = DataLoader(tiny_data, split=train.make_splits(list(pair_files(tiny_data)), config)).splits["test"]
    saved = {path.stem for path in (tmp_path / "predictions").glob("*.npy")}
    assert saved == set(test_names) and (tmp_path / "model" / "model.keras").is_file()
    assert written["largest_structure"]["applied"] in (True, False)


def test_two_runs_in_new_processes_give_identical_scores(tiny_data, tmp_path):
    scores = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        result = subprocess.run([*CLI, "train", str(tiny_data), "--out", str(out),
                                 "--epochs", "2", "--crop", "None", "--passes-per-epoch", "1"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        # nothing on the console a user could read as an error (TensorFlow's C++ log lines, CUDA probing)
        assert not re.search(r"[EW]0000|cuInit|CUDA|NodeDef", result.stdout + result.stderr), result.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        scores.append((metrics["dice"], metrics["training"]["best_val_loss"]))
    assert scores[0] == scores[1]


def test_largest_structure_auto_is_decided_on_the_val_split(tiny_data):
    data = DataLoader(tiny_data, batch_size=2)

    class Says:  # a stand-in model whose val predictions have one structure and a distant speck
        def predict_on_batch(self, images):
            probabilities = np.zeros((*images.shape[:3], data.n_classes), np.float32)
            probabilities[..., 0] = 1
            probabilities[:, :10, :10] = np.eye(data.n_classes)[1]
            return probabilities

    decided = train.choose_largest_structure(Says(), data, TrainConfig(largest_structure="auto"))
    assert set(decided) >= {"applied", "reason", "val_mean_dice_with", "val_mean_dice_without"}
    assert train.choose_largest_structure(Says(), data, TrainConfig(largest_structure="off")) == {
        "applied": False, "bridge_px": train.BRIDGE_PX, "reason": "largest_structure=off"}
    labels = predict.predict_labels(Says(), data, data.splits["val"][:1])
    assert list(labels.values())[0].shape == data.get_mask(data.splits["val"][0]).shape


# The first training steps and a short run, as the equality check of training on compact batches (below).
REFERENCE_SCRIPT = textwrap.dedent("""
    import json, sys
    from maskpair.training import fit, train
    from maskpair.training.config import TrainConfig
    from maskpair.training.segmenter import Segmenter

    def first_steps(data_dir, config, steps=3):
        fit.seed_everything(config.seed)
        data = train.prepare_data(data_dir, config)
        model = train.build_model(data, config)
        batches = iter(data.tf_dataset("train"))
        train_steps = [[float(v) for v in model.train_on_batch(*next(batches))] for _ in range(steps)]
        return train_steps, [float(v) for v in model.evaluate(data.tf_dataset("val", epochs=1), verbose=0)]

    def short_run(data_dir, config):
        data = train.prepare_data(data_dir, config)
        model, report = train.train_model(data, config, None)
        largest = train.choose_largest_structure(model, data, config)
        segmenter = Segmenter.from_training(model, data, config, largest)
        metrics, _ = train.test_metrics(segmenter, data, config, report)
        return report["history"], metrics["dice_before_postprocessing"]

    runs = json.loads(sys.argv[1])
    print(json.dumps({name: [first_steps(d, TrainConfig(**c)), short_run(d, TrainConfig(**c)) if full else None]
                      for name, (d, c, full) in runs.items()}))
""")

# Recorded with REFERENCE_SCRIPT at commit c5c6659, when tf_dataset still made the float32 image and the one-hot
# target in the tf.data graph and the loss took one-hot targets: one process, this 2-core machine (oneDNN, AVX-512),
# the three runs of `reference_runs` in that order. Per run: [[loss, iou] of train steps 1-3 (train_on_batch on
# tf_dataset("train")), [val loss, val iou] after them], then a short run (train_model, then the test split's
# Dice before post-processing): its history and Dice. Values as json.dumps printed them.
REFERENCE = {
    "mixed": [[[[0.8944860696792603, 0.060658037662506104], [0.7494237422943115, 0.16106924414634705],
                [0.7230415344238281, 0.22199375927448273]], [1.1094412803649902, 0.08543278276920319]],
              [{"loss": [0.7682355046272278, 0.6358433961868286], "iou_score": [0.16750650107860565, 0.28528791666030884],
                "val_loss": [1.3582677841186523, 2.2541496753692627],
                "val_iou_score": [0.07751718908548355, 0.05259127914905548]},
               {"dark": 0.5149286023366508, "mid": 0.0, "bright": 0.5690048939641109}]],
    "rgb": [[[[1.4519352912902832, 0.20318427681922913], [1.4401451349258423, 0.20086462795734406],
              [1.4664974212646484, 0.0024717035703361034]], [2.6980268955230713, 0.11588497459888458]], None],
    "spine": [[[[1.0142143964767456, 0.03007899969816208], [0.9556602239608765, 0.04654708504676819],
                [0.895287275314331, 0.06078016012907028]], [1.1747779846191406, 1.6779588829507475e-09]],
              [{"loss": [0.955053985118866, 0.8950974345207214], "iou_score": [0.04580208286643028, 0.06755337864160538],
                "val_loss": [1.1747779846191406, 1.1773005723953247],
                "val_iou_score": [1.6779588829507475e-09, 1.6869838859179254e-09]},
               {"background": 0.9698714220594477, "disc": 0.0, "vertebra": 0.00019391118867558658}]],
}


def reference_runs(tmp_path, example_data) -> dict:
    """{run: (data folder, TrainConfig settings, whether a short run follows the first steps)}: whole images of
    mixed sizes (padding in every batch), RGB with ignore and 11 classes in crops, and the example pairs (160 px
    crops of 256 px, partial labels)."""
    short = {"epochs": 2, "passes_per_epoch": 1}
    return {"mixed": (str(write_layout(tmp_path / "mixed", "mixed_sizes")), {**short, "crop": None}, True),
            "rgb": (str(write_layout(tmp_path / "rgb", "rgb_ignore")), short, False),
            "spine": (str(example_data), short, True)}


def test_training_gives_the_losses_and_scores_recorded_before(tmp_path, example_data):
    runs = reference_runs(tmp_path, example_data)
    done = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    for name, ((steps, val), run) in REFERENCE.items():
        (got_steps, got_val), got_run = got[name]
        assert [loss for loss, _ in got_steps] == pytest.approx([loss for loss, _ in steps], rel=1e-4), name
        assert got_val[0] == pytest.approx(val[0], rel=1e-4), name
        if run is None:
            continue
        history, dice = run
        for key in ("loss", "val_loss"):
            assert got_run[0][key] == pytest.approx(history[key], rel=1e-4), (name, key)
        assert got_run[1] == pytest.approx(dice, abs=2e-3), name
    # no ignore or padding pixel in the example pairs' val batches: IoU as before there too
    assert got["spine"][0][1][1] == pytest.approx(REFERENCE["spine"][0][1][1], rel=1e-3)
    assert got["spine"][1][0]["val_iou_score"] == pytest.approx(REFERENCE["spine"][1][0]["val_iou_score"], rel=1e-3)


def test_the_xla_model_upsamples_with_the_same_values_and_weights_and_its_gradient_compiles():
    images = tf.constant(np.random.default_rng(4).normal(size=(2, 3, 5, 2)).astype(np.float32))
    np.testing.assert_array_equal(unet.RepeatUpSampling2D(2)(images), tf.keras.layers.UpSampling2D(2)(images))

    @tf.function(jit_compile=True)
    def gradient(x):  # XLA has no ResizeNearestNeighborGrad, UpSampling2D's gradient
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(unet.RepeatUpSampling2D(2)(x) ** 2)
        return tape.gradient(total, x)

    np.testing.assert_allclose(gradient(images), 8 * images.numpy(), rtol=1e-6)  # 4 copies of d(x^2)/dx = 2x
    built = []
    for xla in (False, True):
        tf.keras.utils.set_random_seed(0)
        built.append(unet.segmentation_unet("resnet18", 1, 3, (16, 8, 8, 8, 8), xla=xla))
    kinds = [{type(layer).__name__ for layer in model.layers} for model in built]
    assert "UpSampling2D" in kinds[0] and "UpSampling2D" not in kinds[1] and "RepeatUpSampling2D" in kinds[1]
    assert all(np.array_equal(a, b) for a, b in zip(built[0].get_weights(), built[1].get_weights()))
