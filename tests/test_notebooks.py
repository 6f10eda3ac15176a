"""Notebooks as a user runs them: papermill with parameters only (no environment variables), checked outputs
as committed, and no TensorFlow start-up noise in what a user reads."""
import json
import re
import shutil

import nbformat
import pytest

from maskpair import cli
from maskpair.cli import notebooks as notebooks_cli
from maskpair.data.loader import DataLoader
from maskpair.training.config import TrainConfig

NOISE = re.compile(r"cuInit|cuda|oneDNN|absl::|I0000|W0000|E0000|Could not find|TF-TRT|rebuild TensorFlow", re.I)
MARK = "# NBVAL_CHECK_OUTPUT"


def notebook(name):
    return nbformat.read(notebooks_cli.NOTEBOOK_DIR / name, as_version=4)


def parameters_of(nb) -> dict:
    """The literals the `parameters` cell assigns."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, {}, values)  # literals only, by the house rule (and test_parameters_cells_hold_literals)
    return values


def output_text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


def without_data_path(text: str) -> str:
    return re.sub(r"DataLoader\('[^']*'", "DataLoader(DATA", text)


def noise_in(nb) -> list[str]:
    """Output lines of any cell that look like TensorFlow/CUDA start-up chatter."""
    return [line for cell in nb.cells if cell.cell_type == "code" for line in output_text(cell).splitlines()
            if NOISE.search(line)]


def test_no_notebook_reads_the_environment_or_edits_sys_path():
    for path in notebooks_cli.notebook_paths():
        sources = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        assert "os.environ" not in sources and "getenv" not in sources and "sys.path" not in sources, path.name


def test_parameters_cells_hold_literals_and_at_most_twelve_settings():
    for path in notebooks_cli.notebook_paths():
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        names = re.findall(r"^(\w+) = ", cell.source, flags=re.M)
        assert 3 <= len(names) <= 12, (path.name, names)
        assert {"data_dir", "output_dir", "seed"} <= set(names), path.name


def test_training_notebook_defaults_are_trainconfig_defaults():
    params = parameters_of(notebook("04_train_unet.ipynb"))
    defaults = TrainConfig().to_dict()
    shared = {name: value for name, value in params.items() if name in defaults}
    assert len(shared) >= 9 and "epochs" in shared
    assert {name: defaults[name] for name in shared} == {name: list(v) if isinstance(v, tuple) else v
                                                         for name, v in shared.items()}


@pytest.mark.slow
def test_training_notebook_smoke_run_is_quiet_and_writes_metrics(example_data, tmp_path):
    out = tmp_path / "04"
    executed = tmp_path / "04_train_unet.ipynb"
    unlabelled = tmp_path / "new images"  # images without masks, for the notebook's last section
    unlabelled.mkdir()
    for name in ("3.png", "11.png"):
        shutil.copy(example_data / "images" / name, unlabelled / name)
    notebooks_cli.execute_notebook(notebooks_cli.NOTEBOOK_DIR / "04_train_unet.ipynb", executed,
                                   {"data_dir": str(example_data), "output_dir": str(out), "epochs": 2,
                                    "predict_dir": str(unlabelled)})
    nb = nbformat.read(executed, as_version=4)
    segmented = next(c for c in nb.cells if c.source.startswith("if predict_dir:"))
    assert any("image/png" in o.get("data", {}) for o in segmented.outputs), "no picture of the new images"
    assert (out / "model" / "saved_model").is_dir() and (out / "model" / "model.json").is_file()
    assert not noise_in(nb), noise_in(nb)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["dice"]) == {"background", "disc", "vertebra"}
    assert metrics["config"]["epochs"] == 2 and metrics["config"] == {**TrainConfig(epochs=2).to_dict(), "batch_size": 4}
    assert metrics["training"]["epochs_run"] == 2
    # the checked cells say what the committed notebook says (the split does not depend on epochs)
    # (the data folder is named as given: the committed run used ../data/spine-mri)
    committed = [without_data_path(output_text(c)) for c in notebook("04_train_unet.ipynb").cells
                 if c.source.startswith(MARK)]
    assert committed and committed == [without_data_path(output_text(c)) for c in nb.cells
                                       if c.source.startswith(MARK)]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["em", "rgb_ignore", "nnunet", "mixed_sizes", "drive", "camvid"])
def test_every_notebook_runs_on_other_datasets_with_only_data_dir_and_epochs(layout, tmp_path, capsys):
    """Each layout a user may bring (0/255 gray in image/ + label/; RGB with 11 classes and ignore in train/ +
    trainannot/; nnU-Net raw; mixed sizes; as published: DRIVE-like name templates, GIF masks and a region of
    interest, CamVid-like colour-coded masks), all four notebooks as a user runs them, `maskpair notebooks -p
    epochs 1` (epochs reaches notebook 04 only; results land where the command says)."""
    import numpy as np
    from published import CONVENTIONS, write_published
    from synthetic import write_layout

    data_dir = (write_published(tmp_path / layout, layout, n=12).root if layout in CONVENTIONS
                else write_layout(tmp_path / layout, layout, n=12))
    classes = DataLoader(data_dir, batch_size=1).labels
    assert cli.main(["notebooks", "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "-p", "epochs", "1"]) == 0
    assert "running 04_train_unet.ipynb -> " in capsys.readouterr().out
    for path in notebooks_cli.notebook_paths():
        nb = nbformat.read(tmp_path / "out" / path.name, as_version=4)
        assert not noise_in(nb), (path.name, noise_in(nb))
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "error" or "Traceback" in output_text(c)], path.name
    results = tmp_path / "out" / "04_train_unet"
    metrics = json.loads((results / "metrics.json").read_text())
    assert list(metrics["dice"]) == list(classes) and metrics["training"]["epochs_run"] == 1
    data = DataLoader(data_dir, batch_size=1)
    predictions = sorted((results / "predictions").glob("*.npy"))
    assert predictions and all(np.load(p).shape == data.get_mask(p.stem).shape for p in predictions)
