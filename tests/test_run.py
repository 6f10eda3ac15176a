"""maskpair sweep: the grid, the summary table, and a real papermill sweep with one deliberately failing run."""
import csv
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import CLI, PROJECT_DIR

from maskpair import cli
from maskpair.cli import notebooks as notebooks_cli

# A stand-in for notebook 04 that is quick to execute: writes metrics.json from its parameters, fails on demand.
SWEEP_NOTEBOOK_CELLS = [
    ('x = 1\nfail = False\noutput_dir = "out"', ["parameters"]),
    ("import json, pathlib\n"
     "pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
     "if fail:\n"
     "    raise ValueError(f'deliberate failure with x={x}')\n"
     "metrics = {'dice': {'disc': x / 10, 'vertebra': 0.9}, 'scored_examples': {'disc': ['a']}}\n"
     "(pathlib.Path(output_dir) / 'metrics.json').write_text(json.dumps(metrics))\n"
     "import os; os.write(2, b'kernel start-up noise\\n')  # as TensorFlow's C++ logging does", []),
]


def write_notebook(path: Path, cells) -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, metadata={"tags": tags})
                                               for source, tags in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def sweep_notebook(tmp_path):
    return write_notebook(tmp_path / "toy.ipynb", SWEEP_NOTEBOOK_CELLS)


def test_parameter_grid_is_every_combination_with_literal_values():
    grid = notebooks_cli.parameter_grid([["fold", "0", "1"], ["backbone", "resnet18", "efficientnetb0"], ["lr", "1e-3"]])
    assert grid == [{"fold": 0, "backbone": "resnet18", "lr": 0.001}, {"fold": 0, "backbone": "efficientnetb0", "lr": 0.001},
                    {"fold": 1, "backbone": "resnet18", "lr": 0.001}, {"fold": 1, "backbone": "efficientnetb0", "lr": 0.001}]
    assert notebooks_cli.run_name(grid[1]) == "fold-0_backbone-efficientnetb0_lr-0.001"
    # list values must not put glob characters in the folder: TensorFlow's checkpoint reader globs its path
    listed = notebooks_cli.parameter_grid([["decoder_filters", "[64, 32,16]"], ["out", "a/b c*"]])[0]
    assert notebooks_cli.run_name(listed) == "decoder_filters-64.32.16_out-a-b-c-"
    with pytest.raises(ValueError, match="twice"):
        notebooks_cli.parameter_grid([["fold", "0"], ["fold", "1"]])


def test_flatten_metrics_keeps_scalars_only():
    flat = notebooks_cli.flatten_metrics({"dice": {"disc": 0.5, "vertebra": None}, "scored": {"disc": ["a"]}, "n": 3})
    assert flat == {"dice.disc": 0.5, "dice.vertebra": None, "n": 3}


def test_summary_rows_add_mean_and_sd_over_successful_runs():
    runs = [{"name": f"fold-{k}", "parameters": {"fold": k}, "status": "ok", "metrics": {"dice.disc": v}}
            for k, v in enumerate([0.8, 0.9, 1.0])]
    runs.append({"name": "fold-3", "parameters": {"fold": 3}, "status": "failed", "metrics": {}})
    rows = notebooks_cli.summary_rows(runs)
    assert [row["run"] for row in rows] == ["fold-0", "fold-1", "fold-2", "fold-3", "mean", "sd"]
    assert rows[-2]["dice.disc"] == pytest.approx(0.9) and rows[-2]["status"] == "3 ok"
    assert rows[-1]["dice.disc"] == pytest.approx(0.1)


def test_a_sweep_stopped_part_way_keeps_the_summary_of_its_finished_runs(sweep_notebook, tmp_path, monkeypatch,
                                                                        capsys):
    def execute(notebook, output, parameters):  # the first run writes its metrics, the second is interrupted
        if parameters["x"] == 2:
            raise KeyboardInterrupt
        Path(parameters["output_dir"]).mkdir(parents=True)
        (Path(parameters["output_dir"]) / "metrics.json").write_text('{"dice": {"disc": 0.1}}')

    monkeypatch.setattr(notebooks_cli, "execute_notebook", execute)
    code = cli.main(["sweep", "--notebook", str(sweep_notebook), "--param", "x", "1", "2", "3", "--name", "stopped",
                     "--out", str(tmp_path)])
    assert code == 130
    with (tmp_path / "stopped" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == ["x-1", "mean", "sd"] and float(rows[0]["dice.disc"]) == 0.1
    assert "| x-1 |" in (tmp_path / "stopped" / "summary.md").read_text()
    assert sorted(path.name for path in (tmp_path / "stopped").iterdir()) == ["summary.csv", "summary.md", "x-1"]
    assert "[2/3] running toy.ipynb {'x': 2}" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_and_its_kernel_and_keeps_the_summary_of_the_finished_runs(tmp_path):
    notebook = write_notebook(tmp_path / "sleepy.ipynb", [
        ('x = 1\noutput_dir = "out"', ["parameters"]),
        ("import json, pathlib, time\n"
         "pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
         "time.sleep(120 if x == 2 else 0)\n"
         "(pathlib.Path(output_dir) / 'metrics.json').write_text(json.dumps({'dice': {'disc': x / 10}}))", []),
    ])
    command = [*CLI, "sweep", "--notebook", str(notebook), "--param", "x", "1", "2", "3",
               "--name", "stopped", "--out", str(tmp_path)]
    # as from a terminal: SIGINT at its default (a test run in the background of a script inherits it ignored)
    sweep = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, kernels = time.monotonic() + 120, []
        while not ((tmp_path / "stopped" / "summary.csv").exists() and kernels):  # run 1 done, run 2's kernel up
            assert time.monotonic() < deadline and sweep.poll() is None, "the sweep did not reach its second run"
            time.sleep(0.2)
            kernels = psutil.Process(sweep.pid).children(recursive=True)
        time.sleep(3)  # inside the sleeping cell
        os.killpg(sweep.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = sweep.communicate(timeout=30)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 130 and "stopped (Ctrl-C) during x-2; finished runs: 1" in err
    assert "[3/3]" not in out
    assert not psutil.wait_procs(kernels, timeout=5)[1]  # the kernel is gone too
    with (tmp_path / "stopped" / "summary.csv").open() as f:
        assert [row["run"] for row in csv.DictReader(f)] == ["x-1", "mean", "sd"]


@pytest.mark.slow
def test_sweep_runs_the_grid_and_a_failing_run_exits_non_zero_with_its_notebook_kept(sweep_notebook, tmp_path):
    code = cli.main(["sweep", "--notebook", str(sweep_notebook), "--param", "x", "3", "7",
                     "--param", "fail", "False", "True", "--name", "toy", "--out", str(tmp_path / "sweeps")])
    sweep_dir = tmp_path / "sweeps" / "toy"
    assert code == 1
    with (sweep_dir / "summary.csv").open() as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert rows["x-3_fail-False"]["status"] == "ok" and float(rows["x-3_fail-False"]["dice.disc"]) == 0.3
    assert rows["x-7_fail-True"]["status"] == "failed"
    assert float(rows["mean"]["dice.disc"]) == pytest.approx(0.5)
    assert "| x-7_fail-False |" in (sweep_dir / "summary.md").read_text()
    failed = nbformat.read(sweep_dir / "x-7_fail-True" / "toy.ipynb", as_version=4)
    errors = [out for cell in failed.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "ValueError" and "deliberate failure with x=7" in errors[0]["evalue"]


@pytest.mark.slow
def test_sweep_of_runs_that_all_succeed_exits_zero(sweep_notebook, tmp_path, capfd):
    code = cli.main(["sweep", "--notebook", str(sweep_notebook), "--param", "x", "1", "2", "--name", "ok",
                     "--out", str(tmp_path)])
    assert code == 0
    # the kernel's own stderr goes to a log beside each executed notebook, not to the console
    assert "kernel start-up noise" not in capfd.readouterr().err
    assert "kernel start-up noise" in notebooks_cli.kernel_log_path(tmp_path / "ok" / "x-2" / "toy.ipynb").read_text()
    metrics = json.loads((tmp_path / "ok" / "x-2" / "metrics.json").read_text())
    assert metrics["dice"]["disc"] == 0.2
    with (tmp_path / "ok" / "summary.csv").open() as f:
        sd = [row for row in csv.DictReader(f) if row["run"] == "sd"][0]
    assert math.isclose(float(sd["dice.disc"]), 0.0707, abs_tol=1e-3)


def test_sweep_refuses_a_parameter_the_notebook_does_not_define_before_running_anything(sweep_notebook, tmp_path,
                                                                                      capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["sweep", "--notebook", str(sweep_notebook), "--param", "x", "1", "--param", "epoch", "1",
                  "--out", str(tmp_path / "sweeps")])
    assert stop.value.code == 2
    assert "toy.ipynb has no parameter epoch (its parameters: x, fail, output_dir)" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()  # nothing ran, nothing written
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--notebook", str(tmp_path / "missing.ipynb"), "--param", "x", "1"])
    assert "missing.ipynb: no such notebook" in capsys.readouterr().err
    assert {"epochs", "backbone", "fold", "train_without_flags"} <= set(
        notebooks_cli.notebook_parameters(notebooks_cli.NOTEBOOK_DIR / "04_train_unet.ipynb"))


def test_run_notebooks_refuses_a_parameter_no_notebook_has_before_running_anything(tmp_path, capsys):
    """(Passing parameters, e.g. -p epochs 1, is exercised on every layout in tests/test_notebooks.py.)"""
    with pytest.raises(SystemExit) as stop:
        cli.main(["notebooks", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"), "-p", "epoch", "1"])
    assert stop.value.code == 2 and "no notebook has the parameter epoch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_sweep_of_notebook_04_leaves_the_flagged_train_examples_out_of_training(tmp_path):
    """A list-valued parameter through the sweep into notebook 04, which sets the flagged example aside."""
    import numpy as np
    from synthetic import write_dataset

    data = write_dataset(tmp_path / "data", [str(i) for i in range(10)], shape=(64, 64))
    np.save(data / "masks" / "3.npy", np.zeros((64, 64), np.int64))  # empty: flagged; in fold 0's train split
    code = cli.main(["sweep", "--param", "fold", "0", "--param", "epochs", "1", "--param", "train_without_flags", '["empty_mask"]',
                     "--data-dir", str(data), "--out", str(tmp_path), "--name", "flags"])
    assert code == 0
    (run_dir,) = [path for path in (tmp_path / "flags").iterdir() if path.is_dir()]
    assert json.loads((run_dir / "metrics.json").read_text())["config"]["train_without_flags"] == ["empty_mask"]
    printed = [output.get("text", "") for cell in nbformat.read(run_dir / "04_train_unet.ipynb", 4).cells
               for output in cell.get("outputs", [])]
    assert any("train 5, val 2, test 2, excluded 1" in text and "excluded     1 examples" in text for text in printed)
